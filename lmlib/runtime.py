"""Where a run executes: device, number format, processes, and opt-in CPU tuning.

`Runtime` is the one execution policy of a run, built once (`Runtime.create`, by the
Trainer from its TrainConfig, by the CLI, or by the caller) and handed to the Trainer,
the learning-rate finder and evaluation; no other module decides device or precision:

- `pick_device` checks a device name against what the machine has.
- `precision_dtype`/`choose_precision` choose the autocast format and, for fp16, a
  gradient scaler (a pure function of the request, device type and CUDA capability).
- `Distributed` is the process's place in a `torchrun` job (`torch.distributed`):
  one process per device, gloo on CPUs, NCCL on CUDA GPUs.
- the finite-check policy: "every-step" reads each step's "was it finite?" on the host
  (free on a CPU), "deferred" keeps a count on the device and reads it at logging steps
  (no host sync per step: CUDA's default).
- TF32 is the only process-wide switch a Runtime sets, and only inside `Runtime.active()`,
  which puts it back as it was.
- `keep_freed_memory` tunes glibc for CPU training; a library never changes the
  process's allocator by itself, so only the CLI and the benchmarks call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
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


#: The first CUDA compute capability with bf16 tensor cores (Ampere, A100). Older cards
#: (T4 = 7.5, V100 = 7.0) emulate bf16, slowly: they get fp16 with a gradient scaler.
NATIVE_BF16 = (8, 0)


def precision_dtype(requested: str, device_type: str, capability: tuple[int, int] | None = None) -> str:
    """The number format a run uses: a pure function of the request, the device type
    and (CUDA) the card's compute capability, so tests can drive it with any card's.

    `auto`: on CUDA, bf16 from capability 8.0 on, fp16 (with a gradient scaler) below;
    fp32 on the CPU and MPS, whose stored results the book shows. An explicit request
    runs as asked (CPU autocast handles both 16-bit formats, MPS too), except bf16 on a
    CUDA card without native bf16, which is refused.
    """
    if requested == "auto":
        if device_type != "cuda":
            return "float32"
        return "bfloat16" if capability is not None and tuple(capability) >= NATIVE_BF16 else "float16"
    if requested == "bfloat16" and device_type == "cuda" and (capability is None or tuple(capability) < NATIVE_BF16):
        raise LmlibError(f"this GPU (compute capability {capability}) has no native bfloat16: use --dtype float16"
                         " (with gradient scaling) or float32")
    return requested


def choose_precision(requested: str, device: torch.device, capability: tuple[int, int] | None = None) -> Precision:
    """The `Precision` for a request on `device` (see `precision_dtype`); no side effects.

    fp16 trains through `torch.amp.GradScaler` on every device (CPU and MPS included),
    so the scaler's path runs in the CPU tests too."""
    if capability is None and device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
    name = precision_dtype(requested, device.type, capability)
    if name == "float32":
        return Precision(device, None)
    if name == "bfloat16":
        return Precision(device, torch.bfloat16)
    return Precision(device, torch.float16, torch.amp.GradScaler(device.type))


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

    def all_reduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce a tensor over all processes in place ("sum" or "max"); returns it."""
        if self.enabled:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is true on any process: one decision for all (e.g. to stop)."""
        if not self.enabled:
            return flag
        return bool(self.all_reduce_(torch.tensor([float(flag)], device=device), "max").item())

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj` (picklable), in rank order; [obj] without torchrun."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

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


FINITE_CHECKS = ("every-step", "deferred")


@dataclass
class Runtime:
    """The execution policy of a run: device, number format, processes, finite checks, TF32."""

    device: torch.device
    precision: Precision
    dist: Distributed = field(default_factory=Distributed)
    finite_check: str = "every-step"  # every-step | deferred
    tf32: bool = False  # TF32 matmuls (CUDA), set inside `active()` only
    compile: bool = False

    @classmethod
    def create(cls, device: str = "auto", dtype: str = "auto", *, finite_check: str = "auto",
               tf32: bool | None = None, compile: bool = False, dist: Distributed | None = None,
               capability: tuple[int, int] | None = None) -> Runtime:
        """Resolve the requests: join the torchrun job if there is one, pick this process's
        device and number format. `finite_check="auto"`: every step on the CPU and MPS
        (reading a number there costs nothing), deferred on CUDA. `tf32=None`: TF32 only
        with dtype auto on CUDA (an explicit float32 means float32)."""
        dist = dist if dist is not None else init_distributed(device)
        where = process_device(device, dist)
        precision = choose_precision(dtype, where, capability)
        if finite_check == "auto":
            finite_check = "deferred" if where.type == "cuda" else "every-step"
        if finite_check not in FINITE_CHECKS:
            raise LmlibError(f"unknown finite_check {finite_check!r}: choose auto, {', '.join(FINITE_CHECKS)}")
        use_tf32 = where.type == "cuda" and (dtype == "auto" if tf32 is None else tf32)
        return cls(where, precision, dist, finite_check, use_tf32, compile)

    @property
    def deferred(self) -> bool:
        return self.finite_check == "deferred"

    def describe(self) -> dict:
        """What the metrics record under ``config.runtime``: what was actually used."""
        return {"device": str(self.device), "dtype": self.precision.name, "tf32": self.tf32,
                "finite_check": self.finite_check, "compiled": self.compile, "world_size": self.dist.world_size}

    @contextmanager
    def active(self) -> Iterator[None]:
        """Set this runtime's process-wide switches for a library call, then restore them.

        On CUDA the float32 matmul precision is set to what `tf32` says ("high" lets
        matmuls use TF32, "highest" forbids it); elsewhere nothing is touched.
        """
        if self.device.type != "cuda":
            yield
            return
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before)


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
