"""The training loop: see a batch, predict, compare (loss), adjust (AdamW), repeat.

`Trainer.fit()` runs step-based (random windows) or epoch-based (each window of the
training split once per epoch, in a shuffled order) training, validates every
`eval_interval` steps, keeps `best.pt` and `last.pt`, stops early when validation
stops improving, and rewrites `training_metrics.json` at every logging step.

Everything a run needs to continue lives in `last.pt`: weights, optimizer moments,
the step (which fixes the learning rate and, in epoch mode, the data position), the
data sampler's and dropout's random states, and the metrics so far. So a resumed run
makes exactly the same updates as one that was never stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lmlib import data as D
from lmlib.checkpoint import load_checkpoint, save_checkpoint
from lmlib.errors import LmlibError
from lmlib.evaluate import estimate_loss
from lmlib.metrics import FILENAME, new_metrics, write_metrics
from lmlib.model import GPT, GPTConfig, check_compatible
from lmlib.optim import SCHEDULES, build_optimizer, lr_at, set_lr
from lmlib.runtime import keep_freed_memory

Callback = Callable[[dict], None]


class StopTraining(Exception):
    """Raise from a callback to end the run cleanly after the current step."""


@dataclass
class TrainConfig:
    out_dir: str = "checkpoints"
    max_steps: int | None = 1000  # step-based run length (ignored when `epochs` is set)
    epochs: int | None = None  # epoch-based run: passes over the training split
    batch_size: int = 32
    lr: float = 3e-3  # peak learning rate
    min_lr: float | None = None  # floor of the decay; default lr / 10
    warmup_steps: int | None = None  # default: 10% of the run, at most 100
    schedule: str = "cosine"  # cosine | linear | constant
    optimizer: str = "adamw"  # adamw | adamw-scratch | sgd
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    momentum: float = 0.0  # SGD only
    grad_clip: float | None = 1.0  # max gradient norm; None or 0 disables clipping
    eval_interval: int = 100  # validate every N steps (and after the last)
    eval_batches: int | None = 10  # batches per validation; None = the whole split
    log_interval: int = 10  # one metrics entry per N steps
    patience: int | None = None  # stop after N validations without improvement
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 autocast on CUDA) | float32 | bfloat16
    compile: bool = False  # torch.compile (CUDA)
    save_checkpoints: bool = True
    progress: bool = True  # tqdm bar

    def resolved(self, n_batches_per_epoch: int | None = None) -> TrainConfig:
        """Check the values and fill in the defaults that depend on the run length."""
        c = TrainConfig(**asdict(self))
        c.out_dir = str(c.out_dir)  # a Path is fine too; the metrics file stores text
        if c.epochs is not None:
            if c.epochs <= 0:
                raise LmlibError(f"epochs must be positive, got {c.epochs}")
        elif c.max_steps is None or c.max_steps <= 0:
            raise LmlibError(f"max_steps must be positive, got {c.max_steps}")
        for name in ("batch_size", "lr", "eval_interval", "log_interval"):
            if not getattr(c, name) > 0:
                raise LmlibError(f"{name} must be positive, got {getattr(c, name)}")
        if not math.isfinite(c.lr):
            raise LmlibError(f"lr must be a finite number, got {c.lr}")
        if c.weight_decay < 0 or not (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1):
            raise LmlibError("weight_decay must be >= 0 and betas in [0, 1)")
        if c.schedule not in SCHEDULES:
            raise LmlibError(f"unknown schedule {c.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if c.eval_batches is not None and c.eval_batches <= 0:
            raise LmlibError(f"eval_batches must be positive (or None for the whole split), got {c.eval_batches}")
        if c.patience is not None and c.patience <= 0:
            raise LmlibError(f"patience must be positive, got {c.patience}")
        if c.epochs is not None and n_batches_per_epoch is not None:
            c.max_steps = c.epochs * n_batches_per_epoch
        total = c.max_steps
        if c.warmup_steps is None:
            c.warmup_steps = min(100, total // 10)
        if c.warmup_steps < 0 or c.warmup_steps >= total > 1:
            raise LmlibError(f"warmup_steps ({c.warmup_steps}) must be shorter than the run ({total} steps)")
        if c.min_lr is None:
            c.min_lr = c.lr / 10
        if not 0 <= c.min_lr <= c.lr:
            raise LmlibError(f"min_lr ({c.min_lr}) must be between 0 and lr ({c.lr})")
        return c


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA if present, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmlibError("device cuda requested but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    status: str  # finished | early_stopped | diverged | stopped | interrupted
    steps: int
    metrics: dict
    best_val_loss: float | None
    message: str = ""
    out_dir: Path | None = None
    model: GPT | None = field(default=None, repr=False)


class Trainer:
    def __init__(
        self,
        model_config: GPTConfig,
        data: D.TokenData,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callback] = (),
        model: GPT | None = None,
    ):
        cfg = config or TrainConfig()
        self.data = data
        self.model_config = model_config
        check_compatible(model_config, data.tokenizer.vocab_size)
        T = model_config.block_size
        D.check_enough_tokens(data.train, T)
        self.has_val = len(data.val) > T
        self.batches_per_epoch = None
        if cfg.epochs is not None:
            self.batches_per_epoch = D.n_batches_per_epoch(data.train, cfg.batch_size, T)
        self.config = cfg.resolved(self.batches_per_epoch)
        self.callbacks = list(callbacks)
        self.device = pick_device(self.config.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # ~10% faster steps; see lmlib/runtime.py
        self.out_dir = Path(self.config.out_dir)
        torch.manual_seed(self.config.seed)  # the initial weights
        self.model = (model or GPT(model_config)).to(self.device)
        c = self.config
        self.optimizer = build_optimizer(
            self.model, c.optimizer, lr=c.lr, betas=(c.beta1, c.beta2),
            weight_decay=c.weight_decay, momentum=c.momentum,
        )
        self.data_rng = torch.Generator().manual_seed(c.seed)  # random windows
        self._epoch_order: tuple[int, list] = (-1, [])
        self.step = 0
        self.best_val_loss: float | None = None
        self.bad_evals = 0
        self.accum = [0.0, 0]  # training-loss sum and count since the last entry
        self.metrics = new_metrics(self.run_config())
        use_bf16 = c.dtype == "bfloat16" or (c.dtype == "auto" and self.device.type == "cuda")
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
        )
        self.forward = torch.compile(self.model) if (c.compile and self.device.type == "cuda") else self.model

    # ---- configuration and checkpoints -------------------------------------------
    def run_config(self) -> dict:
        d = self.data
        return {
            "model": self.model_config.to_dict(),
            "train": asdict(self.config),
            "data": {"name": d.name, "train_tokens": len(d.train), "val_tokens": len(d.val),
                     "vocab_size": d.tokenizer.vocab_size, "tokenizer": d.tokenizer.to_dict()["kind"]},
            "n_params": self.model.num_params(),
        }

    def state_dict(self) -> dict:
        return {
            "model_config": self.model_config.to_dict(),
            "train_config": asdict(self.config),
            "tokenizer": self.data.tokenizer.to_dict(),
            "data_name": self.data.name,
            "data_train_tokens": len(self.data.train),
            "data_val_tokens": len(self.data.val),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "bad_evals": self.bad_evals,
            "accum": list(self.accum),
            "rng_torch": torch.get_rng_state(),
            "rng_data": self.data_rng.get_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "metrics": json.dumps(self.metrics),
        }

    def save(self, name: str) -> None:
        if self.config.save_checkpoints:
            save_checkpoint(self.out_dir / name, self.state_dict())

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a checkpoint (default: `out_dir/last.pt`)."""
        path = Path(path) if path else self.out_dir / "last.pt"
        s = load_checkpoint(path, map_location=self.device)
        if s["tokenizer"] != self.data.tokenizer.to_dict():
            raise LmlibError(f"checkpoint {path} was trained with a different tokenizer/vocabulary; resume on the same data")
        if s["model_config"] != self.model_config.to_dict():
            diff = {k: v for k, v in s["model_config"].items() if self.model_config.to_dict().get(k) != v}
            raise LmlibError(f"checkpoint {path} was trained with a different model ({diff}); use the same settings to resume")
        if s["data_train_tokens"] != len(self.data.train):
            raise LmlibError(f"checkpoint {path} was trained on {s['data_train_tokens']} training tokens, this data has {len(self.data.train)}")
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.step, self.best_val_loss, self.bad_evals = s["step"], s["best_val_loss"], s["bad_evals"]
        self.accum = list(s["accum"])
        torch.set_rng_state(s["rng_torch"].cpu())
        self.data_rng.set_state(s["rng_data"].cpu())
        if s["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in s["rng_cuda"]])
        self.metrics = json.loads(s["metrics"])
        self.metrics["status"] = "running"
        self.metrics["config"]["train"] = asdict(self.config)  # e.g. a longer max_steps

    # ---- the loop ----------------------------------------------------------------
    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        T, B = self.model_config.block_size, self.config.batch_size
        if self.batches_per_epoch is None:
            x, y = D.get_batch(self.data.train, B, T, self.data_rng)
        else:  # epoch mode: the data position is a pure function of the step
            epoch, i = divmod(step, self.batches_per_epoch)
            if self._epoch_order[0] != epoch:  # one shuffle per epoch, not per step
                self._epoch_order = (epoch, D.epoch_batches(self.data.train, B, T, self.config.seed, epoch))
            starts = self._epoch_order[1][i]
            x, y = D.windows_to_batch(self.data.train, starts, T)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def evaluate(self) -> dict:
        return estimate_loss(
            self.model, self.data.val, self.config.batch_size, self.model_config.block_size,
            max_batches=self.config.eval_batches, device=self.device, autocast=self.autocast,
        )

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        c = self.config
        if resume:
            self.resume(None if resume is True else resume)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out_dir / FILENAME
        total = c.max_steps
        tokens_per_step = c.batch_size * self.model_config.block_size
        n_train = len(self.data.train)
        t0 = time.perf_counter()
        status, message = "finished", ""
        bar = None
        if c.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="training", unit="step", dynamic_ncols=True)
        self.model.train()
        notified = None  # (step, status) that callbacks last saw
        try:
            while self.step < total:
                step = self.step
                lr = lr_at(step, c.lr, total, c.warmup_steps, c.min_lr, c.schedule)
                set_lr(self.optimizer, lr)
                x, y = self.get_batch(step)
                with self.autocast:
                    _, loss = self.forward(x, y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    status = "diverged"
                    message = (f"loss became {loss_value} at step {step + 1} (learning rate {lr:.3g}):"
                               " lower the learning rate; the last good checkpoint is kept")
                    break
                loss.backward()
                max_norm = c.grad_clip if c.grad_clip else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.accum[0] += loss_value
                self.accum[1] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)
                last = self.step == total
                do_eval = self.has_val and (self.step % c.eval_interval == 0 or last)
                if self.step % c.log_interval == 0 or do_eval or last:
                    ev = self.evaluate() if do_eval else None
                    self.model.train()
                    tokens = self.step * tokens_per_step
                    m = self.metrics
                    m["steps"].append(self.step)
                    # the epoch of this entry's last update (its last token, in step mode)
                    m["epochs"].append((tokens - 1) // n_train if self.batches_per_epoch is None
                                       else step // self.batches_per_epoch)
                    m["train_loss"].append(self.accum[0] / self.accum[1])
                    m["val_loss"].append(ev["loss"] if ev else None)
                    m["val_perplexity"].append(ev["perplexity"] if ev else None)
                    m["val_accuracy"].append(ev["accuracy"] if ev else None)
                    m["learning_rate"].append(lr)
                    m["tokens"].append(tokens)
                    m["grad_norm"].append(grad_norm if math.isfinite(grad_norm) else None)
                    m["elapsed"].append(round(time.perf_counter() - t0, 3))
                    self.accum = [0.0, 0]
                    stop = False
                    if ev:
                        if self.best_val_loss is None or ev["loss"] < self.best_val_loss:
                            self.best_val_loss, self.bad_evals = ev["loss"], 0
                            m["best"] = {"step": self.step, "val_loss": ev["loss"]}
                            self.save("best.pt")
                        else:
                            self.bad_evals += 1
                            stop = c.patience is not None and self.bad_evals >= c.patience
                        if bar is not None:
                            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{ev['loss']:.3f}", lr=f"{lr:.2e}")
                    if stop or last:
                        m["status"] = "early_stopped" if stop else "finished"
                    write_metrics(metrics_path, m)
                    if ev or last:
                        self.save("last.pt")
                    notified = (self.step, m["status"])
                    for cb in self.callbacks:
                        cb(m)
                    if stop:
                        status = "early_stopped"
                        message = (f"early stop at step {self.step}: no validation improvement in"
                                   f" {c.patience} evaluations; best {self.best_val_loss:.4f}")
                        break
        except StopTraining as e:
            status, message = "stopped", str(e) or f"stopped by a callback at step {self.step}"
        except KeyboardInterrupt:
            status, message = "interrupted", f"interrupted at step {self.step}; resume from last.pt"
        finally:
            if bar is not None:
                bar.close()
        self.metrics["status"] = status
        write_metrics(metrics_path, self.metrics)
        if notified != (self.step, status):  # callbacks have not seen how the run ended
            for cb in self.callbacks:
                try:
                    cb(self.metrics)
                except StopTraining:
                    pass
        self.model.eval()
        return TrainResult(status, self.step, self.metrics, self.best_val_loss, message, self.out_dir, self.model)
