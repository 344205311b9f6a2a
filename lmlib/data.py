"""Datasets, train/validation splits and batches.

A dataset (`TokenData`) is a tokenizer plus two token arrays, train and
validation: in memory, or slices of a token file (`lmlib.tokenfile`), opened with
``np.memmap`` so that a corpus larger than RAM works: only the windows in a batch
are ever read (with plain file reads, so that a run's memory does not grow with
the file; see `_read_windows`). The synthetic dataset is built in
`lmlib.synthetic` (`synthetic_data`), on top of this module.

Batches are windows of ``block_size + 1`` consecutive tokens: x is the first
``block_size`` of them and y the same shifted by one (y[t] is the token after x[t]).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmlib import tokenfile
from lmlib.documents import documents_digest, is_documents
from lmlib.download import default_cache_dir
from lmlib.errors import LmlibError
from lmlib.fsutil import sha256_file
from lmlib.pretokenize import PATTERN
from lmlib.tokenfile import (  # noqa: F401  (the token file format lived here: re-exported)
    DEFAULT_CHUNK_BYTES,
    FORMAT,
    VERSION,
    TokenFile,
    _check_source,
    _paths,
    load_token_file,
    tokenize_file,
)
from lmlib.tokenizers import Tokenizer, tokenizer_class

if TYPE_CHECKING:
    import torch

    from lmlib.synthetic import SyntheticCorpus

#: Share of the tokens held out for validation when nothing else is said: the
#: last fifth of the text (a preset may carry its own, e.g. nanoGPT's 0.1).
DEFAULT_VAL_FRACTION = 0.2


def __getattr__(name: str) -> Any:
    # The synthetic dataset is built in lmlib.synthetic, which imports this module;
    # its old home still answers, without importing it at import time (no cycle).
    if name in ("synthetic_data", "DEFAULT_SYNTHETIC_TOKENS"):
        from lmlib import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- datasets ----------------------------------------------------------------------------------

@dataclass(eq=False)
class TokenData:
    """A tokenized dataset split into train and validation token arrays."""

    train: np.ndarray  # may be a slice of a memmap
    val: np.ndarray
    tokenizer: Tokenizer
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    corpus: SyntheticCorpus | None = None  # the true distribution, for synthetic data
    # Loss masks (1 = this token is a target that counts), parallel to train and val:
    # fine-tuning trains on the responses only (`lmlib.finetune`). None: every token counts.
    train_mask: np.ndarray | None = None
    val_mask: np.ndarray | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def split_tokens(tokens: np.ndarray, val_fraction: float = DEFAULT_VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the first (1 - val_fraction) of the tokens train, the rest validate."""
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise LmlibError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_train = len(tokens) - round(len(tokens) * val_fraction)
    if _owns_file_map(tokens):  # a token file: one map per split, so windows can be read by offset
        return _map_part(tokens, 0, n_train), _map_part(tokens, n_train, len(tokens) - n_train)
    return tokens[:n_train], tokens[n_train:]


def _owns_file_map(tokens: np.ndarray) -> bool:
    """True for a np.memmap opened on a file (not a view of one): its offset is its own."""
    return isinstance(tokens, np.memmap) and isinstance(tokens.base, mmap.mmap) and tokens.filename is not None


def _map_part(tokens: np.memmap, start: int, count: int) -> np.ndarray:
    if count == 0:  # an empty file region cannot be mapped
        return tokens[start:start]
    offset = tokens.offset + start * tokens.dtype.itemsize
    return np.memmap(tokens.filename, dtype=tokens.dtype, mode="r", offset=offset, shape=(count,))


def prepare_text(path: str | Path, kind: str = "char", cache_dir: str | Path | None = None,
                 val_fraction: float = DEFAULT_VAL_FRACTION, vocab_size: int | None = None) -> TokenData:
    """Tokenize a text file, a folder of text files or a JSONL file once (cached) and split
    it into train/val. Documents (a folder's files, JSONL records) are each followed by
    ``<|endoftext|>`` (`lmlib.tokenfile.tokenize_documents`).

    The token file lives in ``cache_dir`` (default ``<lmlib cache>/tokens``) as
    ``<stem>-<sha256 prefix>-<kind>``; it is reused while the text's sha256 and kind match.
    kind "bpe" trains a byte-level BPE tokenizer of ``vocab_size`` (default 512) on the
    file (`lmlib.bpe`, fast backend), cached as ``...-bpe<vocab_size>``.
    """
    docs = is_documents(path)
    src = Path(path) if docs else _check_source(path)
    tokenizer_class(kind)  # fail early on a bad kind
    if kind == "bpe":
        vocab_size = 512 if vocab_size is None else vocab_size
    elif vocab_size is not None:
        raise LmlibError(f"vocab_size is for a bpe tokenizer; a {kind} tokenizer's vocabulary is the text's symbols")
    sha = documents_digest(src)[0] if docs else sha256_file(src)
    tag = f"bpe{vocab_size}" if kind == "bpe" else kind
    base = Path(cache_dir if cache_dir is not None else default_cache_dir() / "tokens") / f"{src.stem}-{sha[:16]}-{tag}"
    tf = None
    if _paths(base)[1].exists():
        try:
            tf = load_token_file(base)
        except LmlibError:  # corrupt or outdated cache entry: rebuild it
            tf = None
        if tf is not None and (tf.meta.get("source_sha256") != sha or tf.tokenizer.kind != kind
                               or getattr(tf.tokenizer, "pattern", PATTERN) != PATTERN):  # an older BPE
            tf = None
    if tf is None:
        tf = (tokenfile.tokenize_documents(src, base, kind=kind, vocab_size=vocab_size) if docs
              else tokenize_file(src, base, kind=kind, vocab_size=vocab_size))
    train, val = split_tokens(tf.tokens, val_fraction)
    meta = {**tf.meta, "token_file": str(tf.bin_path), "val_fraction": val_fraction}
    return TokenData(train=train, val=val, tokenizer=tf.tokenizer, name=src.stem, meta=meta)


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray | None:
    """UTF-8 bytes of each token id's text, for tokenizers that keep every byte of the
    text (char, bpe; special tokens count 0); None for a word tokenizer (it drops spaces)."""
    if tokenizer.kind == "char":
        n = [len(c.encode("utf-8", "surrogatepass")) for c in tokenizer.ordinary_vocab]
        return np.array(n + [0] * len(tokenizer.special_tokens), dtype=np.int64)
    if tokenizer.kind == "bpe":
        tb = tokenizer.token_bytes  # type: ignore[attr-defined]
        return np.array([len(b) for b in tb] + [0] * (tokenizer.vocab_size - len(tb)), dtype=np.int64)
    return None


def tokens_per_byte(data: TokenData) -> float | None:
    """Tokens per byte of text of the data's validation split (the training split's if
    there is no validation split), to turn a loss per token into bits per byte.

    Exact for char and BPE tokens (each knows its bytes); the whole file's ratio for word
    tokens of a text or token file; None for the synthetic corpus, which is words, not text.
    """
    if data.corpus is not None or data.meta.get("source") == "synthetic":
        return None
    return split_tokens_per_byte(data.val if len(data.val) else data.train, data.tokenizer, data.meta)


def split_tokens_per_byte(tokens: np.ndarray, tokenizer: Tokenizer, meta: dict | None = None) -> float | None:
    """Tokens per byte of these tokens' text (see `tokens_per_byte`); ``meta``: a token file's sidecar."""
    meta = meta or {}
    lengths = token_byte_lengths(tokenizer)
    if lengths is not None and len(tokens):
        counts = np.zeros(len(lengths), dtype=np.int64)
        for i in range(0, len(tokens), 1 << 22):  # in slices: a token file's split may be bigger than RAM
            counts += np.bincount(np.asarray(tokens[i:i + (1 << 22)]), minlength=len(lengths))
        n_bytes = int(counts @ lengths)
        return len(tokens) / n_bytes if n_bytes else None
    n, size = meta.get("n_tokens"), meta.get("source_bytes")
    return n / size if isinstance(n, int) and isinstance(size, int) and size > 0 else None


# --- batches -----------------------------------------------------------------------------------

def check_enough_tokens(tokens: np.ndarray | Sequence[int], block_size: int) -> None:
    """Raise LmlibError unless tokens hold at least one window of block_size + 1 tokens."""
    if block_size < 1:
        raise LmlibError(f"block_size must be at least 1, got {block_size}")
    if len(tokens) < block_size + 1:
        raise LmlibError(f"need at least block_size+1 = {block_size + 1} tokens, got {len(tokens)}; "
                         "use a smaller block_size or more data")


def windows_to_batch(tokens: np.ndarray, starts: np.ndarray | Sequence[int], block_size: int,
                     mask: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) int64 tensors of shape (len(starts), block_size) for windows starting at ``starts``.

    With a loss ``mask`` (parallel to ``tokens``), a target whose mask is 0 becomes -100,
    the index `torch.nn.functional.cross_entropy` ignores.
    """
    import torch

    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if starts.size and (starts.min() < 0 or starts.max() + block_size >= len(tokens)):
        raise LmlibError(f"window starts must be in [0, {len(tokens) - block_size - 1}] for "
                         f"{len(tokens)} tokens and block_size {block_size}")
    if _owns_file_map(tokens):
        w = _read_windows(tokens, starts, block_size + 1)
    else:
        w = tokens[starts[:, None] + np.arange(block_size + 1)]
    w = torch.from_numpy(np.asarray(w, dtype=np.int64))
    x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
    if mask is not None:
        keep = torch.from_numpy(np.asarray(mask[starts[:, None] + np.arange(1, block_size + 1)], dtype=bool))
        y[~keep] = -100
    return x, y


def _read_windows(tokens: np.memmap, starts: np.ndarray, n: int) -> np.ndarray:
    """Read windows of a token file with plain file reads, not through its memory map.

    Pages read through a map stay mapped and count as the process's memory (the
    kernel may map up to 2 MB around each one), so a long run of random windows would
    seem to hold most of a 1 GB file. File reads leave them in the OS's page cache,
    which is where they belong. (nanoGPT re-opens its memmap every batch for the same
    reason.)
    """
    out = np.empty((len(starts), n), dtype=tokens.dtype)
    item = tokens.dtype.itemsize
    with open(tokens.filename, "rb", buffering=0) as f:
        for row, start in zip(out, starts):
            f.seek(tokens.offset + int(start) * item)
            f.readinto(memoryview(row).cast("B"))
    return out


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of windows at random starts drawn with ``generator``.

    All randomness comes from the generator, so saving and restoring its state
    resumes the exact same sequence of batches.
    """
    import torch

    check_enough_tokens(tokens, block_size)
    if batch_size < 1:
        raise LmlibError(f"batch_size must be at least 1, got {batch_size}")
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    return windows_to_batch(tokens, starts.numpy(), block_size)


def n_batches_per_epoch(tokens: np.ndarray | int, batch_size: int, block_size: int) -> int:
    """Batches in one epoch of ``epoch_batches`` (tokens may be an array or its length)."""
    n = tokens if isinstance(tokens, (int, np.integer)) else len(tokens)
    n_windows = (int(n) - 1) // block_size if block_size >= 1 else 0
    return n_windows // batch_size if n_windows >= batch_size else int(n_windows > 0)


def epoch_batches(tokens: np.ndarray, batch_size: int, block_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Window starts for each batch of one epoch: shuffled, non-overlapping windows.

    The windows start at multiples of block_size; their order is a pure function
    of (seed, epoch), so resuming at (epoch, batch index) is exact. The last
    incomplete batch is dropped, except that if there are fewer windows than
    batch_size the epoch is one smaller batch holding all of them.
    """
    check_enough_tokens(tokens, block_size)
    if batch_size < 1 or seed < 0 or epoch < 0:
        raise LmlibError(f"batch_size must be >= 1 and seed, epoch >= 0; got {batch_size}, {seed}, {epoch}")
    n_windows = (len(tokens) - 1) // block_size
    starts = np.random.default_rng([seed, epoch]).permutation(n_windows) * block_size
    n_batches = n_batches_per_epoch(len(tokens), batch_size, block_size)
    size = min(batch_size, n_windows)
    return [starts[i * size:(i + 1) * size] for i in range(n_batches)]


def eval_window_starts(n_tokens: int, block_size: int, max_windows: int | None = None) -> np.ndarray:
    """Starts of the non-overlapping windows 0, T, 2T, ... (or max_windows evenly spaced ones)."""
    if block_size < 1 or n_tokens < block_size + 1:
        raise LmlibError(f"need at least block_size+1 = {block_size + 1} tokens, got {n_tokens}; "
                         "use a smaller block_size or more data")
    if max_windows is not None and max_windows < 1:
        raise LmlibError(f"max_windows must be at least 1, got {max_windows}")
    n_windows = (n_tokens - 1) // block_size
    idx = np.arange(n_windows)
    if max_windows is not None and max_windows < n_windows:
        # Spread evenly over the whole split, so a limited evaluation still sees all of it.
        idx = np.linspace(0, n_windows - 1, max_windows).round().astype(np.int64)
    return idx * block_size


def iter_eval_batches(tokens: np.ndarray, batch_size: int, block_size: int, max_batches: int | None = None,
                      mask: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic (x, y) batches of non-overlapping windows covering the whole split.

    The last batch may be smaller. With max_batches, windows are evenly spaced
    over the split rather than taken from its start.
    """
    if batch_size < 1:
        raise LmlibError(f"batch_size must be at least 1, got {batch_size}")
    starts = eval_window_starts(len(tokens), block_size, None if max_batches is None else max_batches * batch_size)
    # A generator expression, not a generator function: bad arguments raise here, not at the first batch.
    return (windows_to_batch(tokens, starts[i:i + batch_size], block_size, mask)
            for i in range(0, len(starts), batch_size))

