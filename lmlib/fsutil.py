"""Durable file writes: the one way lmlib puts a file in place.

`atomic_write(path, write_fn)` writes into a temporary file in the same folder,
flushes it and fsyncs it, renames it over ``path`` with `os.replace`, then fsyncs
the folder. A reader, or a run killed half-way, sees the old file or the new one,
never a truncated mix; and once the call returns the new file survives a power
cut (the folder's fsync makes the rename itself durable). If ``write_fn`` raises,
the old file is left untouched and the temporary file is removed.

Checkpoints, metrics, token files, downloads and plots all write through here.
Plain Python only: no torch, nothing from lmlib but its errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "default_cache_dir",
           "fsync_dir", "sha256_file"]


def default_cache_dir() -> Path:
    """``$LMLIB_CACHE`` or ``~/.cache/lmlib`` (read at call time, not import time)."""
    env = os.environ.get("LMLIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmlib"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it ...
    os.umask(mask)  # ... and put it back at once
    return mask


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk.

    Where a folder cannot be opened or synced (Windows, some network file
    systems), there is nothing more to do and it returns quietly.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write_fn: Callable[[BinaryIO], Any]) -> Path:
    """Write ``path`` atomically and durably: ``write_fn(f)`` fills the binary file ``f``.

    Creates the parent folder if needed. The file gets the mode `open()` would give
    it (0o666 less the umask, e.g. 0644), not `mkstemp`'s private 0600: checkpoints
    and token caches are meant to be shared. Returns ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where modes mean little
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """`atomic_write` of the given bytes."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """`atomic_write` of the given text."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """`atomic_write` of ``json.dumps(obj)``: compact and strict by default.

    NaN and infinity are refused (ValueError: they are not JSON); the keyword
    arguments go to `json.dumps` and can change that and the separators.
    """
    dumps_kwargs = {"allow_nan": False, "separators": (",", ":"), **dumps_kwargs}
    return atomic_write_bytes(path, json.dumps(obj, **dumps_kwargs).encode())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
