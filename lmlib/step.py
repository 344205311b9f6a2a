"""One optimizer step, shared by the Trainer and the learning-rate finder.

    set the learning rate -> for each micro-batch: forward, loss, backward
    -> clip the gradient norm -> if loss and norm are finite: update the weights

With `grad_accum` micro-batches, each loss is divided by their number, so the summed
gradients are those of one batch that many times larger. Under
DistributedDataParallel the gradients are averaged over the processes during the
last micro-batch's backward pass (the others skip that exchange with `no_sync`).

A step whose loss or gradient norm is not a finite number never reaches the
weights, and the caller ends the run as diverged. How it is skipped depends on the
run's finite-check policy (`lmlib.runtime.Runtime.finite_check`):

- every step (`deferred=False`, the CPU's default): the host reads "finite?" and
  skips `optimizer.step()`; reading a number on the CPU costs nothing.
- deferred (`deferred=True`, CUDA's default): the host never waits for the device.
  torch's fused AdamW skips the update itself where its `found_inf` flag is 1 (on the
  CPU too), and the fp16 gradient scaler does the same. Other optimizers (SGD, Muon,
  the scratch AdamW) get their gradients zeroed with a device-side mask instead: that
  update is not skipped entirely (momentum decays, weight decay applies), but the
  non-finite numbers never reach the weights, and the Trainer counts the step on the
  device and ends the run as diverged at its next check, keeping the last good
  checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from lmlib.optim import set_lr
from lmlib.runtime import Precision

Batch = tuple[torch.Tensor, torch.Tensor]


def dropout_seeds(seed: int, step: int, micro_per_step: int, rank: int, grad_accum: int) -> list[int] | None:
    """Seeds of one process's micro-batches' dropout masks, when a step is split.

    One per global micro-batch, from (seed, step, index), so the masks do not depend on
    how the global batch is split over accumulation and processes: K processes with
    accumulation A draw the masks one process with accumulation K*A draws. None (the
    process's own random stream, as in a plain PyTorch loop) for a step of one micro-batch.
    """
    if micro_per_step == 1:
        return None
    first = (seed * 1_000_003 + step * micro_per_step) % 2**62
    return [first + g for g in range(rank * grad_accum, (rank + 1) * grad_accum)]


@dataclass
class StepOutcome:
    loss: torch.Tensor  # mean loss over the micro-batches, on the device
    grad_norm: torch.Tensor  # total gradient norm before clipping, on the device
    finite: torch.Tensor  # True when loss and norm were finite (the weights were updated)


def train_step(
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Batch],
    *,
    lr: float,
    grad_clip: float | None,
    precision: Precision,
    no_sync: Callable[[], object] | None = None,
    deferred: bool = False,
    seeds: Sequence[int] | None = None,
) -> StepOutcome:
    """One update of `model` from `micro_batches` (each an (x, y) pair on the device).

    `forward` is the model as called (compiled and/or wrapped in
    DistributedDataParallel); `model` is the plain module whose parameters it
    updates. `no_sync` is DDP's context manager, or None in a single process.
    `deferred=True`: no host sync (see the module's docstring). `seeds`: one per
    micro-batch, seeding the random stream before its forward pass (its dropout masks).
    """
    set_lr(optimizer, lr)
    n = len(micro_batches)
    scaler = precision.scaler
    total = None
    for i, (x, y) in enumerate(micro_batches):
        # DDP exchanges gradients once, after the last micro-batch.
        if seeds is not None:
            torch.manual_seed(seeds[i])
        with no_sync() if (no_sync is not None and i < n - 1) else nullcontext():
            with precision.autocast():
                _, loss = forward(x, y)
            scaled = loss / n if n > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total = loss.detach() if total is None else total + loss.detach()
    mean_loss = total / n if n > 1 else total
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    max_norm = grad_clip if grad_clip else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    finite = torch.isfinite(mean_loss)
    if scaler is not None:
        # With fp16 an overflowing gradient is routine: the scaler skips that update and
        # lowers its scale. Only a non-finite loss means the run diverged.
        scaler.step(optimizer)
        scaler.update()
    else:
        finite = finite & torch.isfinite(grad_norm)
        if not deferred:
            if bool(finite):
                optimizer.step()
        elif getattr(optimizer, "_step_supports_amp_scaling", False):
            # The fused kernel skips the update where found_inf is 1, without the host
            # waiting for the device to say whether the numbers were finite.
            optimizer.found_inf = (~finite).float()
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf
        else:
            bad = ~finite
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.masked_fill_(bad, 0.0)  # a 0-d mask: all of it or none, on the device
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(mean_loss, grad_norm, finite)
