"""The fast BPE backend: two Rust engines behind ``BPETokenizer(..., backend="fast")``.

- **Training** runs Hugging Face ``tokenizers`` (its ``BpeTrainer``) with the same
  pre-split as the from-scratch trainer, then reads its merges back as pairs of our ids.
- **Encoding** runs ``tiktoken``'s encoder, given our tokens as byte strings ranked by
  the order they were learned and the pre-split rewritten for Rust's regex engine
  (`RUST_PATTERN`). It encodes big texts in chunks on several threads.

Why two libraries: ``tokenizers`` trains fast, but its encoder runs at only 3 to 4 MB/s
on this pre-split (a look-ahead pattern in its regex engine); ``tiktoken`` encodes at
10 MB/s and more per thread, but cannot train. Both are pinned in requirements.txt.

tiktoken merges, at each step, the adjacent pair whose *bytes together* form the
earliest-learned token; the from-scratch encoder merges the earliest-learned *pair*.
With one token per byte string (which `encoder` checks) the two agree on every text the
tests throw at them; a tokenizer whose merges build the same bytes twice, or that has
its own pattern, falls back to the from-scratch encoder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lmlib.errors import LmlibError

__all__ = ["RUST_PATTERN", "cpu_threads", "encode", "encoder", "train"]

# Python's \s also holds the separators \x1c-\x1f; Python's \w is letters, numbers and "_".
_S = r"\s\x1c-\x1f"
#: lmlib.bpe.PATTERN in Rust regex syntax, class by class equal to Python's ``re`` meaning
#: (tests/test_bpe.py checks code points of every Unicode class in many contexts).
RUST_PATTERN = (r"'(?:[sdmt]|ll|ve|re)| ?[\p{L}\p{Nl}\p{No}]+| ?\p{Nd}+| ?(?:[^" + _S + r"\p{L}\p{N}]|_)+"
                r"|[" + _S + r"]+(?![^" + _S + r"])|[" + _S + r"]+|[\s\S]")


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise LmlibError(f"the fast BPE backend needs the {module!r} package: pip install {module} "
                         "(or use backend='scratch')") from None


def train(chunks: Iterable[str], n_merges: int) -> list[tuple[int, int]]:
    """Learn ``n_merges`` merges with Hugging Face ``tokenizers``; return them as pairs of our ids."""
    from lmlib.bpe import PATTERN, bytes_to_unicode

    tk = _require("tokenizers")
    alphabet = [bytes_to_unicode()[b] for b in range(256)]
    t = tk.Tokenizer(tk.models.BPE())
    t.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(PATTERN), behavior="isolated"),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = tk.trainers.BpeTrainer(vocab_size=256 + n_merges, initial_alphabet=alphabet, min_frequency=2,
                                     show_progress=False, special_tokens=[])
    t.train_from_iterator(chunks, trainer=trainer)
    ids = {s: i for i, s in enumerate(alphabet)}
    merges = []
    for m in json.loads(t.to_str())["model"]["merges"][:n_merges]:
        a, b = m if isinstance(m, list) else m.split(" ")
        if a + b in ids:  # the same bytes made by another pair: already a token
            continue
        ids[a + b] = 256 + len(merges)
        merges.append((ids[a], ids[b]))
    return merges


def encoder(token_bytes: Sequence[bytes], pattern: str) -> Any | None:
    """A tiktoken encoder for these tokens (id = position), or None when it would not give
    the from-scratch encoder's ids: another pattern, or two tokens with the same bytes."""
    from lmlib.bpe import PATTERN

    if pattern != PATTERN or len(set(token_bytes)) < len(token_bytes):
        return None
    tiktoken = _require("tiktoken")
    ranks = {b: i for i, b in enumerate(token_bytes)}
    return tiktoken.Encoding("lmlib-bpe", pat_str=RUST_PATTERN, mergeable_ranks=ranks, special_tokens={})


def cpu_threads() -> int:
    """The CPUs this process may use (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def encode(enc: Any, text: str, threads: int | None = None, chunk_chars: int = 1 << 20) -> np.ndarray:
    """Encode ordinary text (no special tokens) with a tiktoken encoder, as int32 ids.

    A long text is cut into chunks where the pre-split is sure not to straddle
    (`lmlib.bpe.cut_text`): about four per thread, so that the threads finish together,
    of 64 KiB to ``chunk_chars`` characters. They are encoded on ``threads`` threads
    (default: the CPUs this process may use). The ids do not depend on the cuts."""
    from lmlib.bpe import cut_text

    threads = threads or cpu_threads()
    chunks = cut_text(text, min(chunk_chars, max(1 << 16, -(-len(text) // (4 * threads)))))

    def one(chunk: str) -> np.ndarray:  # each chunk's list of ints becomes an array at once: less memory
        return np.array(enc.encode_ordinary(chunk), dtype=np.int32)

    if len(chunks) == 1 or threads == 1:
        return np.concatenate([one(c) for c in chunks])
    with ThreadPoolExecutor(min(threads, len(chunks))) as pool:  # tiktoken releases the GIL while it encodes
        return np.concatenate(list(pool.map(one, chunks)))
