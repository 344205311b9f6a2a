"""The learning-rate range test ("LR finder", Leslie Smith, 2015/2017).

Train a fresh model for a short while and raise the learning rate a little at every
update, exponentially from `min_lr` to `max_lr`, recording the loss. While the
rate is too small the loss hardly moves; in a useful range it falls quickly; past
that the updates overshoot and the loss climbs and finally blows up. One short
run thus scans the whole range of rates.

    result = lr_range_test(data, n_layer=2, n_embd=48, block_size=32)
    train(data, lr=result.suggestion, ...)

The model, optimizer, batches, gradient clipping and the training step itself are
lmlib's own (`lmlib.step.train_step`, the same as `lmlib.train` with the same seed),
so the suggestion transfers to a real run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmlib import data as D
from lmlib.errors import LmlibError
from lmlib.model import GPT, MODEL_KEYS, GPTConfig
from lmlib.optim import build_optimizer
from lmlib.runtime import Distributed, Runtime, to_device
from lmlib.step import train_step


@dataclass
class LRFinderResult:
    lrs: list[float]  # the learning rate of each update
    losses: list[float]  # the training loss of each update's batch
    smoothed: list[float]  # the same, as a bias-corrected running average
    suggestion: float  # a learning rate to train with (see `suggest_lr`)
    stopped_at: float | None = None  # the rate at which the loss blew up (None: it never did)

    @property
    def min_loss_lr(self) -> float:
        """The learning rate where the smoothed loss was lowest."""
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]


def exponential_lrs(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """`steps` rates from min_lr to max_lr, each one the same factor above the last."""
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise LmlibError(f"need 0 < min_lr < max_lr, got min_lr={min_lr} and max_lr={max_lr}")
    if steps <= 0:
        raise LmlibError(f"steps must be positive, got {steps}")
    if steps == 1:
        return [min_lr]
    return [min_lr * (max_lr / min_lr) ** (i / (steps - 1)) for i in range(steps)]


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float:
    """The learning rate of lowest smoothed loss, divided by 10.

    The minimum itself is already at the edge of instability: the loss there was
    measured for only one update, and a whole run at that rate would keep
    overshooting. A tenth of it is still in the falling, fast-learning part of the
    curve and keeps a safe distance from the blow-up. The other common rule, the
    rate where the smoothed loss falls fastest, reads the slope of a noisy curve and
    tends to land higher; this one only needs the position of the minimum and errs
    on the low side, which costs some speed but rarely a run.
    """
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    return max(lrs[0], lrs[best] / 10)


def lr_range_test(
    data: D.TokenData,
    *,
    min_lr: float = 1e-5,
    max_lr: float = 1.0,
    steps: int = 100,
    batch_size: int = 32,
    seed: int = 1337,
    smooth: float = 0.9,
    stop_factor: float = 4.0,
    optimizer: str = "adamw",
    weight_decay: float = 0.1,
    grad_clip: float | None = 1.0,
    device: str = "auto",
    dtype: str = "auto",
    runtime: Runtime | None = None,
    **model_settings,
) -> LRFinderResult:
    """Run the range test on a fresh GPT; `model_settings` are GPTConfig fields by name.

    It runs in one process, on `runtime` (default: built from `device` and `dtype`).

    Stops early once the smoothed loss exceeds `stop_factor` times its minimum or
    the loss is not a finite number. `smooth` is the weight of the past in the
    running average (0 = no smoothing).
    """
    lr_schedule = exponential_lrs(min_lr, max_lr, steps)
    if not 0 <= smooth < 1:
        raise LmlibError(f"smooth must be in [0, 1), got {smooth}")
    if stop_factor <= 1:
        raise LmlibError(f"stop_factor must be above 1, got {stop_factor}")
    unknown = set(model_settings) - MODEL_KEYS
    if unknown:
        raise LmlibError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, **model_settings)
    runtime = runtime or Runtime.create(device, dtype, dist=Distributed())
    with runtime.active():
        return _range_test(data, cfg, runtime, lr_schedule, batch_size, seed, smooth, stop_factor, optimizer,
                           weight_decay, grad_clip)


def _range_test(data, cfg, runtime, lr_schedule, batch_size, seed, smooth, stop_factor, optimizer, weight_decay,
                grad_clip) -> LRFinderResult:
    where, precision, min_lr = runtime.device, runtime.precision, lr_schedule[0]
    torch.manual_seed(seed)  # the initial weights, as in Trainer
    model = GPT(cfg).to(where)
    model.train()
    opt = build_optimizer(model, optimizer, lr=min_lr, weight_decay=weight_decay)
    rng = torch.Generator().manual_seed(seed)  # the batches, as in Trainer

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, stopped_at = 0.0, None
    for i, lr in enumerate(lr_schedule):
        x, y = D.get_batch(data.train, batch_size, cfg.block_size, rng)
        outcome = train_step(model, model, opt, [(to_device(x, where), to_device(y, where))],
                             lr=lr, grad_clip=grad_clip, precision=precision)
        value = outcome.loss.item()  # the loss before this step's update
        if not math.isfinite(value):
            stopped_at = lr
            break
        average = smooth * average + (1 - smooth) * value
        lrs.append(lr)
        losses.append(value)
        smoothed.append(average / (1 - smooth ** (i + 1)))  # undo the pull towards the 0 start
        if smoothed[-1] > stop_factor * min(smoothed):
            stopped_at = lr
            break
    if not lrs:
        raise LmlibError(f"the loss was not finite at the first step (lr {min_lr}): lower min_lr")
    return LRFinderResult(lrs, losses, smoothed, suggest_lr(lrs, smoothed), stopped_at)
