"""`TrainConfig`: every training setting, checked before anything uses it.

A setting that is wrong in a way Python would not notice (a negative clipping
norm flips every gradient; an unknown dtype silently trains in fp32) is refused
here with one line that names the setting, its value and what to use instead.

The settings that define a run (what a resumed run must share with the one it
continues) are listed in `RUN_DEFINING`; `check_resumable` compares them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from lmlib.errors import LmlibError

SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adamw-scratch", "sgd", "muon")
DTYPES = ("auto", "float32", "bfloat16", "float16")
FINITE_CHECKS = ("auto", "every-step", "deferred")

#: Settings a resumed run must share with the checkpoint it continues. The others
#: only say where and how it runs (device, out_dir, progress, ...), or, like
#: patience, when to give up; the run length may change only through `extend`.
RUN_DEFINING = (
    "batch_size", "lr", "min_lr", "warmup_steps", "schedule", "schedule_steps", "optimizer",
    "weight_decay", "beta1", "beta2", "momentum", "grad_clip", "eval_interval", "eval_batches",
    "seed", "dtype",
)


@dataclass
class TrainConfig:
    out_dir: str = "checkpoints"
    max_steps: int | None = 1000  # step-based run length (ignored when `epochs` is set)
    epochs: int | None = None  # epoch-based run: passes over the training split
    batch_size: int = 32  # windows per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    lr: float = 3e-3  # peak learning rate
    min_lr: float | None = None  # floor of the decay; default lr / 10
    warmup_steps: int | None = None  # default: 10% of the run, at most 100
    schedule: str = "cosine"  # cosine | linear | constant
    schedule_steps: int | None = None  # the schedule's horizon; default: the run's length
    optimizer: str = "adamw"  # adamw | adamw-scratch | sgd | muon
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    momentum: float = 0.0  # SGD only
    grad_clip: float | None = 1.0  # max gradient norm; None or 0 disables clipping
    eval_interval: int = 100  # validate every N steps (and after the last)
    eval_batches: int | None = 10  # batches per validation; None = the whole split
    log_interval: int = 10  # one metrics entry per N steps
    save_interval: int | None = None  # also write last.pt every N steps (runs without validation: every log step)
    patience: int | None = None  # stop after N validations without improvement
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto (CUDA: bf16 from compute capability 8.0, else fp16; elsewhere fp32) | float32 | bfloat16 | float16
    tf32: bool | None = None  # TF32 matmuls on CUDA (default: only with dtype auto); restored when the run ends
    finite_check: str = "auto"  # auto (CPU/MPS: every-step, CUDA: deferred) | every-step | deferred
    compile: bool = False  # torch.compile the model (any device; reported in the metrics)
    save_checkpoints: bool = True
    progress: bool = True  # tqdm bar

    def validate(self) -> TrainConfig:
        """Refuse a bad setting with one line; return self."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise LmlibError(message)

        for name in ("max_steps", "epochs", "warmup_steps", "schedule_steps", "patience", "eval_batches",
                     "save_interval"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, int) and not isinstance(value, bool)),
                 f"{name} must be a whole number, got {value!r}")
        if self.epochs is not None:
            need(self.epochs > 0, f"epochs must be positive, got {self.epochs}")
        else:
            need(self.max_steps is not None and self.max_steps > 0, f"max_steps must be positive, got {self.max_steps}")
        for name in ("batch_size", "grad_accum", "eval_interval", "log_interval"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{name} must be a positive whole number, got {value!r}")
        for name in ("lr", "weight_decay", "beta1", "beta2", "momentum"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and math.isfinite(value), f"{name} must be a finite number, got {value!r}")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        need(self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}")
        need(self.grad_clip is None or (isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0
                                        and math.isfinite(self.grad_clip)),
             f"grad_clip must be a norm >= 0 (0 or None turns clipping off), got {self.grad_clip!r}")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        need(self.dtype in DTYPES, f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        need(self.eval_batches is None or self.eval_batches > 0,
             f"eval_batches must be positive (or None for the whole split), got {self.eval_batches}")
        need(self.patience is None or self.patience > 0, f"patience must be positive, got {self.patience}")
        need(self.save_interval is None or self.save_interval > 0,
             f"save_interval must be positive (or None), got {self.save_interval}")
        need(self.finite_check in FINITE_CHECKS,
             f"unknown finite_check {self.finite_check!r}: choose one of {', '.join(FINITE_CHECKS)}")
        need(self.tf32 is None or isinstance(self.tf32, bool), f"tf32 must be True, False or None, got {self.tf32!r}")
        need(self.min_lr is None or (isinstance(self.min_lr, (int, float)) and 0 <= self.min_lr <= self.lr),
             f"min_lr ({self.min_lr}) must be between 0 and lr ({self.lr})")
        need(self.warmup_steps is None or self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.schedule_steps is None or self.schedule_steps > 0,
             f"schedule_steps must be positive, got {self.schedule_steps}")
        need(isinstance(self.device, str) and self.device != "", f"device must be a name such as cpu, got {self.device!r}")
        return self

    def resolved(self, steps_per_epoch: int | None = None) -> TrainConfig:
        """Validated, with the defaults that depend on the run's length filled in."""
        c = replace(self, out_dir=str(self.out_dir)).validate()  # a Path is fine too; metrics store text
        if c.epochs is not None and steps_per_epoch is not None:
            c.max_steps = c.epochs * steps_per_epoch
        total = c.max_steps
        if c.schedule_steps is None:
            c.schedule_steps = total
        if c.warmup_steps is None:
            c.warmup_steps = min(100, c.schedule_steps // 10)
        if c.warmup_steps >= c.schedule_steps > 1:
            raise LmlibError(f"warmup_steps ({c.warmup_steps}) must be shorter than the run ({c.schedule_steps} steps)")
        if c.min_lr is None:
            c.min_lr = c.lr / 10
        return c


def train_config_fields() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


def check_resumable(saved: dict, current: TrainConfig, *, extend: bool = False) -> None:
    """Refuse to continue a checkpoint whose run was defined differently.

    `saved` is the checkpoint's (resolved) train config. Without `extend` the run
    length must match too; with it the run may only grow, and it keeps the saved
    schedule horizon, so the learning rate continues where it was and then holds at
    its floor. One line names the first setting that differs and both values.
    """
    now = asdict(current)
    for name in RUN_DEFINING:
        if name == "schedule_steps" and extend and saved.get(name) != now[name]:
            # The learning rate at every step follows from this horizon: a new one would jump.
            raise LmlibError(f"cannot extend with schedule_steps {now[name]!r}: the run's schedule has"
                             f" {saved[name]!r} steps and --extend keeps it; leave --schedule-steps out")
        if name in saved and saved[name] != now[name]:
            raise LmlibError(f"cannot resume: {name} was {saved[name]!r} in the checkpoint, now {now[name]!r};"
                             " use the run's settings (or start a new run in another --out-dir)")
    for name in ("epochs", "max_steps"):
        if saved.get(name) == now[name]:
            continue
        if not extend:
            raise LmlibError(f"cannot resume: {name} was {saved.get(name)!r} in the checkpoint, now {now[name]!r};"
                             " to train a finished run for longer, resume with --extend (extend=True)")
    if extend:
        if (saved.get("epochs") is None) != (now["epochs"] is None):
            raise LmlibError("cannot extend: the checkpoint counts its run in "
                             f"{'epochs' if saved.get('epochs') is not None else 'steps'}; extend it in the same unit")
        if now["max_steps"] < saved["max_steps"]:
            raise LmlibError(f"cannot extend to {now['max_steps']} steps: the run already has {saved['max_steps']}")
