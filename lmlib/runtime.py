"""Where a run executes: device, number format, processes, and opt-in CPU tuning.

- `pick_device` checks a device name against what the machine has.
- `Precision` chooses the autocast format and, for fp16, a gradient scaler.
- `Distributed` is the process's place in a `torchrun` job (`torch.distributed`):
  one process per device, gloo on CPUs, NCCL on CUDA GPUs.
- `keep_freed_memory` tunes glibc for CPU training; a library never changes the
  process's allocator by itself, so only the CLI and the benchmarks call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from lmlib.errors import LmlibError

DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA if present, then Apple's MPS, then the CPU; a named device must exist.

    Where the environment variable ``LMLIB_DEVICE`` is set (`lmlib.notebook.setup`
    sets it to ``cpu``, so the book's chapters compute what their stored outputs
    show), ``auto`` means that device instead.
    """
    if name == "auto" and os.environ.get("LMLIB_DEVICE"):
        name = os.environ["LMLIB_DEVICE"]
        if not DEVICE_NAME.fullmatch(name):
            raise LmlibError(f"LMLIB_DEVICE={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise LmlibError(f"unknown device {name!r}: choose auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LmlibError(f"device {name} requested but no CUDA GPU is available; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise LmlibError(f"device {name} requested but there are {torch.cuda.device_count()} CUDA GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise LmlibError("device mps requested but Apple's MPS backend is not available; use --device cpu")
    return torch.device(name)


@dataclass
class Precision:
    """The number format of a run: fp32, or autocast to bf16/fp16 (fp16 with a scaler)."""

    device: torch.device
    dtype: torch.dtype | None  # None: plain fp32
    scaler: Any = None  # torch.amp.GradScaler for fp16

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()


def choose_precision(requested: str, device: torch.device) -> Precision:
    """`auto`: bf16 on a CUDA GPU that supports it, fp16 + gradient scaling on one that
    doesn't, fp32 elsewhere. An explicit request the device cannot honour is refused."""
    if device.type == "cuda":
        # TF32 matmuls: ~8x the fp32 throughput on Ampere and later, at bf16-like input
        # precision with fp32 accumulation; training is insensitive to it.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            requested = "bfloat16" if bf16_ok else "float16"
        if requested == "bfloat16" and not bf16_ok:
            raise LmlibError("this GPU does not support bfloat16; use --dtype float16 (with gradient scaling) or float32")
    elif requested == "auto":
        requested = "float32"
    elif requested == "float16":
        raise LmlibError(f"dtype float16 needs a CUDA GPU (it trains through a gradient scaler); on {device.type} use float32")
    if requested == "float32":
        return Precision(device, None)
    if requested == "bfloat16":
        return Precision(device, torch.bfloat16)
    return Precision(device, torch.float16, torch.amp.GradScaler("cuda"))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU batch to the device: pinned and asynchronous on CUDA only.

    An asynchronous copy from pageable memory is not safe to overlap on every
    backend (Apple's MPS), and pinning costs time that only CUDA wins back.
    """
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass
class Distributed:
    """This process's place in a job: rank `rank` of `world_size` (1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum a few numbers over all processes (identity without torchrun)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.started_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device_name: str = "auto", timeout_s: float = 300.0) -> Distributed:
    """Join the `torchrun` job this process belongs to, if any.

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK. Each process uses one device:
    CUDA GPU number LOCAL_RANK with NCCL, or the CPU with gloo. The timeout bounds
    every collective operation, so a process whose peer died fails with a message
    instead of waiting forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.distributed.is_initialized():
        return Distributed(rank, world, local)
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(
        backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s)
    )
    return Distributed(rank, world, local, started_here=True)


def process_device(name: str, dist: Distributed) -> torch.device:
    """The device of this process: under torchrun with CUDA, GPU number LOCAL_RANK."""
    device = pick_device(name)
    if dist.enabled and device.type == "cuda":
        return torch.device("cuda", dist.local_rank)
    return device


# --- CPU allocator tuning (opt-in) -----------------------------------------------------------
# PyTorch allocates CPU tensors with the C library's malloc. A training step frees and
# re-allocates the same activations (each a few MB) every step, and glibc by default
# hands such blocks back to the OS as soon as they are freed. The next step then
# touches fresh pages, each a page fault plus zeroing: about a thousand faults per step
# for nanoGPT's CPU recipe, 8-10% of its step time on 2 cores. Raising glibc's
# thresholds keeps freed memory for reuse (as PyTorch's CUDA allocator does on a GPU);
# the process's resident memory then stays at its peak.
_M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 2**30  # give memory back only when 1 GB at the top of the heap is free


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory rather than return it to the OS (process-wide).

    Safe to call more than once. Returns False (and does nothing) where the C library
    is not glibc, e.g. on macOS or Windows.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
