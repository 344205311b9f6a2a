"""The fast BPE backend behind ``BPETokenizer(..., backend="fast")``: threads and tiktoken.

- **Training** counts the pre-split pieces of chunks on several threads (the ``regex``
  package releases the GIL while it matches), then runs the from-scratch trainer's loop
  (`lmlib.bpe.train_merges`) with a heap to find the most frequent pair (`train_merges`
  here), instead of a scan of every pair at every merge: both backends learn the same
  merges, merge for merge, ties included. (Hugging Face's ``BpeTrainer`` breaks ties
  its own way, by the order of its internal ids, so lmlib no longer trains with it.)
- **Encoding** runs ``tiktoken``'s encoder, given our tokens as byte strings ranked by
  the order they were learned and GPT-2's pre-split pattern unchanged
  (`lmlib.pretokenize.PATTERN`, which Rust's regex reads as the ``regex`` package does).
  It encodes big texts in chunks on several threads. tiktoken is optional
  (``pip install lmlib[bpe-fast]``); without it the from-scratch encoder runs.

tiktoken merges, at each step, the adjacent pair whose *bytes together* form the
earliest-learned token; the from-scratch encoder merges the earliest-learned *pair*.
With one token per byte string (which `encoder` checks) the two agree on every text the
tests throw at them; a tokenizer whose merges build the same bytes twice, or that has
its own pattern, falls back to the from-scratch encoder.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np
import regex

from lmlib.pretokenize import PATTERN, check_encodable, cut_text, split_special

__all__ = ["count_pieces", "cpu_threads", "encode", "encoder", "train_merges"]

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


class _Descending:
    """Bytes that sort backwards, so that heapq's smallest entry holds the greatest bytes."""

    __slots__ = ("b",)

    def __init__(self, b: bytes) -> None:
        self.b = b

    def __lt__(self, other: _Descending) -> bool:
        return self.b > other.b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.b == other.b


def merge_pair(word: Sequence[int], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """The word with every occurrence of ``pair`` (left to right) replaced by ``new_id``."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_merges(word_counts: dict[str, int], n_merges: int) -> list[tuple[int, int]]:
    """`lmlib.bpe.train_merges`, with the most frequent pair (ties: the greatest pair of byte
    strings) kept at the top of a heap. A pair's entry goes stale when its count changes;
    a new entry is pushed then, and stale ones are dropped as they come to the top."""
    words = [tuple(piece.encode("utf-8")) for piece in word_counts]
    freqs = list(word_counts.values())
    token_bytes = [bytes([b]) for b in range(256)]
    counts: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (word, n) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += n
            where[pair].add(i)

    def entry(pair: tuple[int, int]) -> tuple:
        return (-counts[pair], _Descending(token_bytes[pair[0]]), _Descending(token_bytes[pair[1]]), pair)

    heap = [entry(p) for p in counts]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg, _, _, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:  # stale
            continue
        if -neg < 2:
            break
        new_id = 256 + len(merges)
        merges.append(pair)
        token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
        changed = set()
        for i in where.pop(pair):
            word, n = words[i], freqs[i]
            merged = merge_pair(word, pair, new_id)
            if merged == word:
                continue
            for p in zip(word, word[1:]):
                counts[p] -= n
                changed.add(p)
                if counts[p] <= 0:
                    del counts[p]
            for p in zip(merged, merged[1:]):
                counts[p] += n
                changed.add(p)
                where[p].add(i)
            words[i] = merged
        counts.pop(pair, None)
        for p in changed:
            if p in counts and p != pair:
                heapq.heappush(heap, entry(p))
    return merges


def encoder(token_bytes: Sequence[bytes], pattern: str) -> Any | None:
    """A tiktoken encoder for these tokens (id = position), or None when it would not give
    the from-scratch encoder's ids (another pattern, or two tokens with the same bytes) or
    tiktoken is not installed (``pip install lmlib[bpe-fast]``): then the from-scratch
    encoder runs, with the same ids, more slowly."""
    if pattern != PATTERN or len(set(token_bytes)) < len(token_bytes):
        return None
    try:
        import tiktoken
    except ImportError:
        return None
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
