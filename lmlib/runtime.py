"""Process-level settings that make CPU training faster without changing its results.

PyTorch allocates CPU tensors with the C library's `malloc`. A training step frees
and re-allocates the same activations (each one to a few MB) every step, and glibc
by default hands such blocks back to the operating system as soon as they are freed
(`munmap`, or trimming the top of the heap). The next step then touches fresh pages,
and every page costs a page fault and zeroing: about a thousand faults per step for
nanoGPT's CPU recipe, 8-10% of its step time on a 2-core machine. Raising glibc's
thresholds keeps freed memory in the process for reuse, which is what PyTorch's own
CUDA allocator does on a GPU. The cost is that the process's resident memory stays
at its peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 2**30  # give memory back only when 1 GB at the top of the heap is free


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory rather than return it to the OS.

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
