"""A plain PyTorch training loop: the baseline bench/throughput.py measures lmlib against.

It is what someone writing their own loop would write (nanoGPT's train.py, reduced to
one CPU process in fp32): the same model class, `lmlib.model.GPT`; random windows of the
training tokens, cut with `torch.randint` and `torch.stack`; `torch.optim.AdamW` with
the run's learning rate, betas and weight decay, and otherwise torch's defaults (no
`fused=` argument, so torch picks its own implementation); the same learning-rate
schedule (linear warm-up, cosine decay to the floor) and gradient clipping. Nothing of
lmlib is used but the model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch

from lmlib.model import GPT, GPTConfig


def get_batch(data: torch.Tensor, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i:i + block_size] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
    return x, y


def get_lr(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def train(
    tokens: np.ndarray,
    model_config: GPTConfig,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    beta1: float = 0.9,
    beta2: float = 0.999,
    weight_decay: float = 0.1,
    grad_clip: float | None = 1.0,
    seed: int = 1337,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPT:
    """Train a fresh GPT for `steps` updates; `on_step(step, loss)` after each (step counts from 1).

    On a GPU (`device="cuda"`) it does what nanoGPT's train.py does there: batches
    copied from pinned memory without waiting, autocast to `dtype` (bf16), and
    torch's fused AdamW.
    """
    torch.manual_seed(seed)
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    model = GPT(model_config).to(device)
    model.train()
    fused = {"fused": True} if device.startswith("cuda") else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, **fused)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype is not None else contextlib.nullcontext()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, lr, min_lr, warmup_steps, steps)
        x, y = get_batch(data, batch_size, model_config.block_size)
        if device.startswith("cuda"):
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        with autocast:
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, loss)
    return model
