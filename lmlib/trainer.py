"""The training loop: see a batch, predict, compare (loss), adjust (AdamW), repeat.

`Trainer.fit()` is a short loop of named steps: draw the step's batches, take one
optimizer step (`lmlib.step.train_step`), log, evaluate and checkpoint, stop. It
runs step-based (random windows) or epoch-based (each window of the training split
once per epoch, in a shuffled order) training, keeps `best.pt` and `last.pt`, stops
early when validation stops improving, and rewrites `training_metrics.json` at every
logging step.

Everything a run needs to continue lives in `last.pt`: weights, optimizer moments,
every setting that defines the run, the step (which fixes the learning rate and, in
epoch mode, the data position), the random states, and the metrics so far. So a
resumed run makes exactly the same updates as one that was never stopped; and
however the run ends (finished, early stop, divergence, Ctrl-C, a callback's
`StopTraining`, an exception), its files say so and stay loadable.

Under `torchrun` each process trains on its share of every step's batch: between
them, K processes with `grad_accum` A draw exactly the windows one process with
accumulation K*A draws, so the result depends on the global batch, not on how it is
split. Only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from lmlib import data as D
from lmlib.checkpoint import load_checkpoint, save_checkpoint
from lmlib.config import TrainConfig, check_resumable
from lmlib.errors import LmlibError
from lmlib.evaluate import estimate_loss
from lmlib.metrics import FILENAME, new_metrics, write_metrics
from lmlib.model import GPT, GPTConfig, check_compatible
from lmlib.optim import build_optimizer, lr_at
from lmlib.runtime import Distributed, choose_precision, init_distributed, pick_device, process_device, to_device
from lmlib.step import StepOutcome, train_step

__all__ = ["Callback", "StopTraining", "TrainConfig", "TrainResult", "Trainer", "pick_device"]

Callback = Callable[[dict], None]


class StopTraining(Exception):
    """Raise from a callback to end the run cleanly after the current step."""


@dataclass
class TrainResult:
    status: str  # finished | early_stopped | diverged | stopped | interrupted | failed
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
        dist: Distributed | None = None,
    ):
        self.raw_config = (config or TrainConfig()).validate()  # before anything uses a setting
        self.data, self.model_config = data, model_config
        check_compatible(model_config, data.tokenizer.vocab_size)
        T = model_config.block_size
        D.check_enough_tokens(data.train, T)
        self.has_val = len(data.val) > T
        self.dist = dist or init_distributed(self.raw_config.device)
        c = self.raw_config
        self.micro_per_step = c.grad_accum * self.dist.world_size  # micro-batches in one global step
        self.steps_per_epoch = None
        if c.epochs is not None:
            n_batches = D.n_batches_per_epoch(data.train, c.batch_size, T)
            self.steps_per_epoch = n_batches // self.micro_per_step
            if self.steps_per_epoch < 1:
                raise LmlibError(f"one epoch holds {n_batches} batches of {c.batch_size} windows, fewer than one step's "
                                 f"{self.micro_per_step} (grad_accum x processes): use less accumulation or more data")
        self.config = c.resolved(self.steps_per_epoch)
        self.callbacks = list(callbacks)
        self.device = process_device(c.device, self.dist)
        self.precision = choose_precision(c.dtype, self.device)
        self.out_dir = Path(self.config.out_dir)
        torch.manual_seed(c.seed)  # the initial weights (identical on every rank)
        self.model = (model or GPT(model_config)).to(self.device)
        if self.dist.rank > 0:
            torch.manual_seed(c.seed + self.dist.rank)  # each rank its own dropout masks
        self.optimizer = build_optimizer(self.model, c.optimizer, lr=c.lr, betas=(c.beta1, c.beta2),
                                         weight_decay=c.weight_decay, momentum=c.momentum)
        self.forward, self.no_sync = self._wrap_model()
        self.data_rng = torch.Generator().manual_seed(c.seed)  # random windows: the same on every rank
        self._epoch_order: tuple[int, list] = (-1, [])
        self.step = 0
        self.best_val_loss: float | None = None
        self.bad_evals = 0
        self.accum = [0.0, 0]  # training-loss sum and count since the last entry
        self._mid_step = False
        self.metrics = new_metrics(self.run_config())

    def _wrap_model(self):
        module = self.model
        no_sync = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DDP(self.model, device_ids=ids)  # broadcasts rank 0's weights
            no_sync = module.no_sync
        if self.config.compile:
            module = torch.compile(module)
        return module, no_sync

    # ---- configuration and checkpoints -------------------------------------------
    def run_config(self) -> dict:
        d, c = self.data, self.config
        return {
            "model": self.model_config.to_dict(),
            "train": asdict(c),
            "data": {"name": d.name, "train_tokens": len(d.train), "val_tokens": len(d.val),
                     "vocab_size": d.tokenizer.vocab_size, "tokenizer": d.tokenizer.to_dict()["kind"],
                     **({"loss_tokens": {"train": int(d.train_mask.sum()), "val": int(d.val_mask.sum())}}
                        if d.train_mask is not None and d.val_mask is not None else {}),
                     **({"tokens_per_byte": tpb} if (tpb := D.tokens_per_byte(d)) is not None else {})},
            "n_params": self.model.num_params(),
            "runtime": {"device": str(self.device), "dtype": self.precision.name, "compiled": c.compile,
                        "world_size": self.dist.world_size, "grad_accum": c.grad_accum,
                        "global_batch": c.batch_size * self.micro_per_step},
        }

    def state_dict(self) -> dict:
        return {
            "model_config": self.model_config.to_dict(),
            "train_config": asdict(self.config),
            "world_size": self.dist.world_size,
            "tokenizer": self.data.tokenizer.to_dict(),
            "data_name": self.data.name,
            "data_train_tokens": len(self.data.train),
            "data_val_tokens": len(self.data.val),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else {},
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
        if self.config.save_checkpoints and self.dist.is_main:
            save_checkpoint(self.out_dir / name, self.state_dict())

    def resume(self, path: str | Path | None = None, extend: bool = False) -> None:
        """Continue from a checkpoint (default: `out_dir/last.pt`).

        Every setting that defines the run must match the checkpoint's (one line names
        the first that differs). `extend=True` lets a run grow longer: it keeps the
        saved schedule horizon, so the learning rate goes on where it was and then
        holds at its floor.
        """
        path = Path(path) if path else self.out_dir / "last.pt"
        s = load_checkpoint(path, map_location=self.device)
        if s["tokenizer"] != self.data.tokenizer.to_dict():
            raise LmlibError(f"checkpoint {path} was trained with a different tokenizer/vocabulary; resume on the same data")
        if s["model_config"] != self.model_config.to_dict():
            diff = {k: v for k, v in s["model_config"].items() if self.model_config.to_dict().get(k) != v}
            raise LmlibError(f"checkpoint {path} was trained with a different model ({diff}); use the same settings to resume")
        for key, now in (("data_train_tokens", len(self.data.train)), ("data_val_tokens", len(self.data.val))):
            if key in s and s[key] != now:
                raise LmlibError(f"cannot resume: the checkpoint's data had {s[key]} {key[5:].replace('_', ' ')},"
                                 f" this data has {now}; resume on the same data and split")
        saved = s["train_config"]
        saved.setdefault("schedule_steps", saved["max_steps"])  # checkpoints from before it existed
        # Defaults that depend on the run's length are the saved run's, not recomputed.
        fill = {k: saved[k] for k in ("schedule_steps", "warmup_steps", "min_lr") if getattr(self.raw_config, k) is None}
        self.config = replace(self.raw_config, **fill).resolved(self.steps_per_epoch)
        check_resumable(saved, self.config, extend=extend)
        was = saved["batch_size"] * saved.get("grad_accum", 1) * s.get("world_size", 1)
        now = self.config.batch_size * self.micro_per_step
        if was != now:
            raise LmlibError(f"cannot resume: the global batch (batch_size x grad_accum x processes) was {was}, now {now}")
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        if self.precision.scaler is not None and s.get("scaler"):
            self.precision.scaler.load_state_dict(s["scaler"])
        self.step, self.best_val_loss, self.bad_evals = s["step"], s["best_val_loss"], s["bad_evals"]
        self.accum = list(s["accum"])
        if self.dist.rank == 0:  # other ranks keep their own dropout streams
            torch.set_rng_state(s["rng_torch"].cpu())
        self.data_rng.set_state(s["rng_data"].cpu())
        if s["rng_cuda"] and torch.cuda.is_available() and len(s["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([t.cpu() for t in s["rng_cuda"]])
        self.metrics = json.loads(s["metrics"])
        self.metrics["status"] = "running"
        self.metrics["config"]["train"] = asdict(self.config)  # e.g. a longer max_steps
        self.metrics["config"]["runtime"] = self.run_config()["runtime"]

    # ---- the named steps of the loop ---------------------------------------------
    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This process's micro-batches for `step`: its own slice of the global batch."""
        T, B, A = self.model_config.block_size, self.config.batch_size, self.config.grad_accum
        mine = range(self.dist.rank * A, (self.dist.rank + 1) * A)
        batches = []
        for g in range(self.micro_per_step):
            if self.steps_per_epoch is None:
                # Every rank draws every micro-batch's windows from the shared generator
                # (cheap), so the stream does not depend on the number of processes.
                starts = torch.randint(len(self.data.train) - T, (B,), generator=self.data_rng).numpy()
            elif g in mine:  # epoch mode: the data position is a pure function of the step
                epoch, i = divmod(step, self.steps_per_epoch)
                if self._epoch_order[0] != epoch:  # one shuffle per epoch, not per step
                    self._epoch_order = (epoch, D.epoch_batches(self.data.train, B, T, self.config.seed, epoch))
                starts = self._epoch_order[1][i * self.micro_per_step + g]
            if g in mine:
                x, y = D.windows_to_batch(self.data.train, starts, T, self.data.train_mask)
                batches.append((to_device(x, self.device), to_device(y, self.device)))
        return batches

    def evaluate(self) -> dict:
        return estimate_loss(
            self.model, self.data.val, self.config.batch_size, self.model_config.block_size,
            max_batches=self.config.eval_batches, device=self.device, autocast=self.precision.autocast(),
            mask=self.data.val_mask,
        )

    def log(self, lr: float, outcome: StepOutcome, ev: dict | None, t0: float) -> None:
        """Append one metrics entry; the only place the host reads the device's numbers."""
        c, m = self.config, self.metrics
        loss_sum, count = self.dist.all_reduce_sum(list(self.accum), self.device)
        tokens = self.step * c.batch_size * self.micro_per_step * self.model_config.block_size
        grad_norm = outcome.grad_norm.item()
        m["steps"].append(self.step)
        # the epoch of this entry's last update (its last token, in step mode)
        m["epochs"].append((tokens - 1) // len(self.data.train) if self.steps_per_epoch is None
                           else (self.step - 1) // self.steps_per_epoch)
        m["train_loss"].append(loss_sum / count)
        m["val_loss"].append(ev["loss"] if ev else None)
        m["val_perplexity"].append(ev["perplexity"] if ev else None)
        m["val_accuracy"].append(ev["accuracy"] if ev else None)
        m["learning_rate"].append(lr)
        m["tokens"].append(tokens)
        m["grad_norm"].append(grad_norm if math.isfinite(grad_norm) else None)
        m["elapsed"].append(round(time.perf_counter() - t0, 3))
        self.accum = [0.0, 0]

    def check_validation(self, ev: dict) -> str | None:
        """Keep the best checkpoint; return "diverged" or "early_stopped" when the run must end."""
        if not math.isfinite(ev["loss"]):
            return "diverged"
        if self.best_val_loss is None or ev["loss"] < self.best_val_loss:
            self.best_val_loss, self.bad_evals = ev["loss"], 0
            self.metrics["best"] = {"step": self.step, "val_loss": ev["loss"]}
            self.save("best.pt")
            return None
        self.bad_evals += 1
        patience = self.config.patience
        return "early_stopped" if patience is not None and self.bad_evals >= patience else None

    def notify(self) -> None:
        for cb in self.callbacks:
            cb(self.metrics)

    # ---- the loop ----------------------------------------------------------------
    def fit(self, resume: bool | str | Path = False, extend: bool = False) -> TrainResult:
        c = self.config
        if resume:
            self.resume(None if resume is True else resume, extend=extend)
            c = self.config
        elif extend:
            raise LmlibError("extend only applies when resuming a run (resume=True, --resume)")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out_dir / FILENAME
        t0 = time.perf_counter()
        status, message = "finished", ""
        bar = self._progress_bar()
        sync_every_step = self.device.type != "cuda"  # reading a CPU number costs nothing
        self.model.train()
        notified = None  # (step, status) that callbacks last saw
        try:
            while self.step < c.max_steps:
                step = self.step
                lr = lr_at(step, c.lr, c.schedule_steps, c.warmup_steps, c.min_lr, c.schedule)
                self._mid_step = True  # a Ctrl-C from here until the step is counted must not save
                outcome = train_step(self.forward, self.model, self.optimizer, self.micro_batches(step),
                                     lr=lr, grad_clip=c.grad_clip, precision=self.precision, no_sync=self.no_sync)
                last = step + 1 == c.max_steps
                do_eval = self.has_val and ((step + 1) % c.eval_interval == 0 or last)
                do_log = (step + 1) % c.log_interval == 0 or do_eval or last
                if (sync_every_step or do_log) and not self._finite_everywhere(outcome):
                    status = "diverged"
                    message = (f"the loss or the gradient became infinite or NaN at step {step + 1} (learning rate"
                               f" {lr:.3g}): lower the learning rate; the last good checkpoint is kept")
                    break
                self.step += 1
                self.accum[0] += outcome.loss.item() if sync_every_step else outcome.loss.double()
                self.accum[1] += 1
                self._mid_step = False
                if bar is not None:
                    bar.update(1)
                if not do_log:
                    continue
                self.accum[0] = float(self.accum[0])
                ev = self.evaluate() if do_eval else None
                if ev is not None and self.dist.enabled:  # one verdict for all ranks
                    ev["loss"] = self.dist.all_reduce_sum([ev["loss"]], self.device)[0] / self.dist.world_size
                self.model.train()
                self.log(lr, outcome, ev, t0)
                verdict = self.check_validation(ev) if ev else None
                if bar is not None:
                    bar.set_postfix(loss=f"{self.metrics['train_loss'][-1]:.3f}", lr=f"{lr:.2e}",
                                    **({"val": f"{ev['loss']:.3f}"} if ev else {}))
                if verdict == "diverged":
                    status, message = verdict, (f"the validation loss became {ev['loss']} at step {self.step}: lower"
                                                " the learning rate; the last good checkpoint is kept")
                    break
                if verdict == "early_stopped" or last:
                    self.metrics["status"] = verdict or "finished"
                self._write_metrics(metrics_path)
                if ev or last:
                    self.save("last.pt")
                notified = (self.step, self.metrics["status"])
                self.notify()
                if verdict == "early_stopped":
                    status = verdict
                    message = (f"early stop at step {self.step}: no validation improvement in"
                               f" {c.patience} evaluations; best {self.best_val_loss:.4f}")
                    break
        except StopTraining as e:
            status, message = "stopped", str(e) or f"stopped by a callback at step {self.step}"
        except KeyboardInterrupt:
            status, message = "interrupted", f"interrupted at step {self.step}; resume from last.pt"
        except BaseException as e:
            self._finish(metrics_path, "failed", save=False)
            raise e
        finally:
            if bar is not None:
                bar.close()
        self._finish(metrics_path, status, save=status in ("stopped", "interrupted"))
        if notified != (self.step, status):  # callbacks have not seen how the run ended
            for cb in self.callbacks:
                try:
                    cb(self.metrics)
                except StopTraining:
                    pass
        self.model.eval()
        return TrainResult(status, self.step, self.metrics, self.best_val_loss, message, self.out_dir, self.model)

    # ---- helpers -----------------------------------------------------------------
    def _finite_everywhere(self, outcome: StepOutcome) -> bool:
        """Whether this step was finite on every process (a NaN on one rank stops all)."""
        ok = float(bool(outcome.finite))
        return self.dist.all_reduce_sum([ok], self.device)[0] == self.dist.world_size

    def _finish(self, metrics_path: Path, status: str, save: bool) -> None:
        """Record how the run ended; a stopped run also saves its final state to last.pt."""
        self.metrics["status"] = status
        if not isinstance(self.accum[0], float):
            self.accum[0] = float(self.accum[0])
        self._write_metrics(metrics_path)
        if save and self.step > 0 and not self._mid_step:
            self.save("last.pt")  # result.model and last.pt are the same weights

    def _write_metrics(self, path: Path) -> None:
        if self.dist.is_main:
            write_metrics(path, self.metrics)

    def _progress_bar(self):
        if not (self.config.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.max_steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True)
