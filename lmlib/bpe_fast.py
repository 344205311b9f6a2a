"""The fast BPE backend behind ``BPETokenizer(..., backend="fast")``: threads and tiktoken.

- **Training** counts the pre-split pieces of chunks on several threads (the ``regex``
  package releases the GIL while it matches), then runs the same merge loop as the
  from-scratch trainer (`lmlib.bpe.train_merges`), so both backends learn the same
  merges, merge for merge, ties included. (Hugging Face's ``BpeTrainer`` breaks ties
  its own way, by the order of its internal ids, so lmlib no longer trains with it.)
- **Encoding** runs ``tiktoken``'s encoder, given our tokens as byte strings ranked by
  the order they were learned and GPT-2's pre-split pattern unchanged
  (`lmlib.pretokenize.PATTERN`, which Rust's regex reads as the ``regex`` package does).
  It encodes big texts in chunks on several threads.

tiktoken merges, at each step, the adjacent pair whose *bytes together* form the
earliest-learned token; the from-scratch encoder merges the earliest-learned *pair*.
With one token per byte string (which `encoder` checks) the two agree on every text the
tests throw at them; a tokenizer whose merges build the same bytes twice, or that has
its own pattern, falls back to the from-scratch encoder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np
import regex

from lmlib.errors import LmlibError
from lmlib.pretokenize import PATTERN, check_encodable, cut_text, split_special

__all__ = ["count_pieces", "cpu_threads", "encode", "encoder"]

_PIECES = regex.compile(PATTERN)


def cpu_threads() -> int:
    """The CPUs this process may use (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def count_pieces(chunks: Iterable[str], special_tokens: Collection[str] = (), threads: int | None = None) -> Counter:
    """`lmlib.bpe.count_pieces` on several threads: each chunk is cut in parts of about
    256 KiB (at safe cuts) that are pre-split in parallel."""
    threads = threads or cpu_threads()

    def parts() -> Iterable[str]:
        for chunk in chunks:
            check_encodable(chunk)
            for part in split_special(chunk, special_tokens)[::2]:
                yield from cut_text(part, 1 << 18)

    def one(part: str) -> Counter:
        return Counter(_PIECES.findall(part, concurrent=True))

    counts: Counter = Counter()
    it = iter(parts())
    with ThreadPoolExecutor(threads) as pool:
        while batch := list(islice(it, 4 * threads)):  # a few parts at a time: memory stays bounded
            for c in pool.map(one, batch):
                counts.update(c)
    return counts


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise LmlibError(f"the fast BPE backend needs the {module!r} package: pip install {module} "
                         "(or use backend='scratch')") from None


def encoder(token_bytes: Sequence[bytes], pattern: str) -> Any | None:
    """A tiktoken encoder for these tokens (id = position), or None when it would not give
    the from-scratch encoder's ids: another pattern, or two tokens with the same bytes."""
    if pattern != PATTERN or len(set(token_bytes)) < len(token_bytes):
        return None
    tiktoken = _require("tiktoken")
    ranks = {b: i for i, b in enumerate(token_bytes)}
    return tiktoken.Encoding("lmlib-bpe", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})


def encode(enc: Any, text: str, threads: int | None = None, chunk_chars: int = 1 << 20) -> np.ndarray:
    """Encode ordinary text (no special tokens) with a tiktoken encoder, as int32 ids.

    A long text is cut into chunks where the pre-split is sure not to straddle
    (`lmlib.pretokenize.cut_text`): about four per thread, so that the threads finish
    together, of 64 KiB to ``chunk_chars`` characters. They are encoded on ``threads``
    threads (default: the CPUs this process may use). The ids do not depend on the cuts."""
    threads = threads or cpu_threads()
    chunks = cut_text(text, min(chunk_chars, max(1 << 16, -(-len(text) // (4 * threads)))))

    def one(chunk: str) -> np.ndarray:  # each chunk's list of ints becomes an array at once: less memory
        return np.array(enc.encode_ordinary(chunk), dtype=np.int32)

    if len(chunks) == 1 or threads == 1:
        return np.concatenate([one(c) for c in chunks])
    with ThreadPoolExecutor(min(threads, len(chunks))) as pool:  # tiktoken releases the GIL while it encodes
        return np.concatenate(list(pool.map(one, chunks)))
