"""One optimizer step, shared by the Trainer and the learning-rate finder.

    set the learning rate -> for each micro-batch: forward, loss, backward
    -> clip the gradient norm -> if loss and norm are finite: update the weights

With `grad_accum` micro-batches, each loss is divided by their number, so the summed
gradients are those of one batch that many times larger. Under
DistributedDataParallel the gradients are averaged over the processes during the
last micro-batch's backward pass (the others skip that exchange with `no_sync`).

A step whose loss or gradient norm is not a finite number never reaches the
weights: the update is skipped, and the caller ends the run as diverged. On a CUDA
device that check happens on the GPU (torch's fused AdamW and the fp16 gradient
scaler skip such steps themselves), so the host waits for the GPU only when it
reads the numbers, at logging steps; elsewhere reading them costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from lmlib.optim import set_lr
from lmlib.runtime import Precision

Batch = tuple[torch.Tensor, torch.Tensor]


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
) -> StepOutcome:
    """One update of `model` from `micro_batches` (each an (x, y) pair on the device).

    `forward` is the model as called (compiled and/or wrapped in
    DistributedDataParallel); `model` is the plain module whose parameters it
    updates. `no_sync` is DDP's context manager, or None in a single process.
    """
    set_lr(optimizer, lr)
    n = len(micro_batches)
    scaler = precision.scaler
    total = None
    for i, (x, y) in enumerate(micro_batches):
        # DDP exchanges gradients once, after the last micro-batch.
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
        if getattr(optimizer, "_step_supports_amp_scaling", False) and grad_norm.device.type == "cuda":
            # The fused kernel skips the update where found_inf is 1, without the host
            # waiting for the GPU to say whether the numbers were finite.
            optimizer.found_inf = (~finite).float()
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf
        elif bool(finite):
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(mean_loss, grad_norm, finite)
