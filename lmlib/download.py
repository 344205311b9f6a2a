"""Download Tiny Shakespeare (once) into lmlib's cache directory.

The cache is ``$LMLIB_CACHE`` if set, else ``~/.cache/lmlib``. A cached file
whose sha256 matches is used without touching the network; a download is
checked against the expected sha256 before it is moved into place (`lmlib.fsutil`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from lmlib.errors import LmlibError
from lmlib.fsutil import atomic_write, default_cache_dir, sha256_file

DEFAULT_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # 1,115,394 bytes
FILENAME = "tinyshakespeare.txt"


def download_tiny_shakespeare(cache_dir: str | Path | None = None, url: str = DEFAULT_URL,
                              sha256: str = TINY_SHAKESPEARE_SHA256, timeout: float = 30.0) -> Path:
    """Path of the Tiny Shakespeare text, downloading it into the cache if needed."""
    import urllib.error
    import urllib.request

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / FILENAME
    if path.is_file() and sha256_file(path) == sha256:
        return path
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LmlibError(f"cannot create the cache directory {cache} ({e.strerror}); set LMLIB_CACHE "
                         "to a writable directory") from None

    def fetch(out: BinaryIO) -> None:  # runs inside atomic_write: a failure leaves no file behind
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 16):
                    h.update(block)
                    out.write(block)
        except urllib.error.HTTPError as e:
            raise LmlibError(f"could not download Tiny Shakespeare from {url} (HTTP {e.code} {e.reason}); "
                             "download it by hand and pass the file path, or set LMLIB_CACHE") from None
        except (urllib.error.URLError, OSError) as e:  # includes timeouts and refused connections
            reason = getattr(e, "reason", None) or e
            raise LmlibError(f"could not download Tiny Shakespeare from {url} ({reason}); you seem to be "
                             "offline: download it by hand and pass the file path, or set LMLIB_CACHE") from None
        if h.hexdigest() != sha256:
            raise LmlibError(f"the file downloaded from {url} has sha256 {h.hexdigest()}, expected {sha256}; "
                             "the download is corrupt or the file changed: download it by hand and check it")

    atomic_write(path, fetch)
    return path
