"""Token files, train/validation splits and batches.

A text file is tokenized once into ``<out>.bin`` (raw uint16 or uint32 token
ids) plus a JSON sidecar ``<out>.json`` that records the tokenizer and where the
tokens came from. Training opens the ``.bin`` with ``np.memmap``, so a corpus
larger than RAM works: only the windows in a batch are ever read (with plain file
reads, so that a run's memory does not grow with the file; see `_read_windows`).

Batches are windows of ``block_size + 1`` consecutive tokens: x is the first
``block_size`` of them and y the same shifted by one (y[t] is the token after x[t]).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmlib.download import default_cache_dir
from lmlib.errors import LmlibError, UnknownSymbolError
from lmlib.synthetic import SyntheticCorpus
from lmlib.tokenizers import Tokenizer, tokenizer_class, tokenizer_from_dict

if TYPE_CHECKING:
    import torch

FORMAT, VERSION = "lmlib-tokens", 1
DEFAULT_CHUNK_BYTES = 8 << 20  # 8 MiB of text at a time: a char chunk becomes ~4x that as UTF-32
DEFAULT_SYNTHETIC_TOKENS = 1_000_000
#: Share of the tokens held out for validation when nothing else is said: the
#: last fifth of the text (a preset may carry its own, e.g. nanoGPT's 0.1).
DEFAULT_VAL_FRACTION = 0.2


# --- reading text in chunks --------------------------------------------------------------------

def _check_source(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise LmlibError(f"text file {p} does not exist; check the path")
    if not p.is_file():
        raise LmlibError(f"{p} is not a file; give the path of a UTF-8 text file")
    if p.stat().st_size == 0:
        raise LmlibError(f"text file {p} is empty; give a file with some text")
    return p


def _utf8_cut(buf: bytes) -> int:
    """Length of the longest prefix of buf that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(buf)) + 1):
        b = buf[-back]
        if b < 0x80:  # ASCII byte: nothing is pending after it
            return len(buf)
        if b >= 0xC0:  # lead byte of a sequence of `need` bytes
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(buf) - back if back < need else len(buf)
    return len(buf)  # only continuation bytes: invalid, let the decoder report it


def _iter_text(path: Path, chunk_bytes: int, whole_words: bool, hasher: Any = None) -> Iterator[tuple[str, int]]:
    """Yield (text, character offset) chunks of a UTF-8 file, checking it as we go.

    A chunk never ends inside a UTF-8 sequence and, with whole_words, never
    inside a word (it ends just after whitespace), so tokens never straddle chunks.
    """
    carry_bytes, carry_text = b"", ""
    byte_pos = char_pos = 0  # byte offset of carry_bytes, characters yielded so far
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk_bytes)
            eof = not data
            if hasher is not None:
                hasher.update(data)
            nul = data.find(b"\x00")
            if nul >= 0:
                raise LmlibError(f"{path} has a NUL byte at byte offset {byte_pos + len(carry_bytes) + nul}; "
                                 "it looks like a binary file, give a UTF-8 text file")
            buf = carry_bytes + data
            cut = len(buf) if eof else _utf8_cut(buf)
            try:
                text = carry_text + buf[:cut].decode("utf-8")
            except UnicodeDecodeError as e:
                raise LmlibError(f"{path} is not valid UTF-8 at byte offset {byte_pos + e.start}; "
                                 "re-save it as UTF-8") from None
            byte_pos, carry_bytes = byte_pos + cut, buf[cut:]
            k = len(text)
            if whole_words and not eof:
                while k > 0 and not text[k - 1].isspace():  # back up over the last, maybe partial, word
                    k -= 1
            carry_text = text[k:]
            if k:
                yield text[:k], char_pos
                char_pos += k
            if eof:
                return


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --- token files -------------------------------------------------------------------------------

def _paths(base: str | Path) -> tuple[Path, Path]:
    s = str(base)
    if s.endswith((".bin", ".json")):
        s = s.rsplit(".", 1)[0]
    return Path(s + ".bin"), Path(s + ".json")


def _tmp_path(final: Path) -> Path:
    # In the same directory, so os.replace is an atomic rename.
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


@dataclass(eq=False)
class TokenFile:
    """A tokenized file: read-only memmap of token ids plus its sidecar metadata."""

    bin_path: Path
    tokens: np.ndarray
    tokenizer: Tokenizer
    meta: dict[str, Any]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def tokenize_file(text_path: str | Path, out_path: str | Path | None = None, kind: str | None = None,
                  tokenizer: Tokenizer | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> TokenFile:
    """Tokenize a UTF-8 text file of any size into ``<out>.bin`` + ``<out>.json``.

    kind: "char" (default) or "word"; it is fitted on the file in a first pass
    unless ``tokenizer`` is given. out_path defaults to ``<text dir>/<stem>.<kind>``.
    Both files are written to temporary names and renamed at the end, so an
    interrupted run never leaves a half-written token file.
    """
    src = _check_source(text_path)
    if tokenizer is not None and kind not in (None, tokenizer.kind):
        raise LmlibError(f"kind={kind!r} does not match the given {tokenizer.kind} tokenizer; drop one of them")
    kind = tokenizer.kind if tokenizer is not None else (kind or "char")
    cls = tokenizer_class(kind)
    if chunk_bytes < 16:
        raise LmlibError(f"chunk_bytes must be at least 16, got {chunk_bytes}")
    whole_words = kind == "word"
    if tokenizer is None:  # first pass: collect the vocabulary chunk by chunk
        tokenizer = cls.fit_chunks(text for text, _ in _iter_text(src, chunk_bytes, whole_words))
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    bin_path, json_path = _paths(out_path if out_path is not None else src.with_name(f"{src.stem}.{kind}"))
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_bin, tmp_json = _tmp_path(bin_path), _tmp_path(json_path)
    hasher, n_tokens = hashlib.sha256(), 0
    try:
        with open(tmp_bin, "wb") as f:  # second pass: encode chunk by chunk
            for text, char_pos in _iter_text(src, chunk_bytes, whole_words, hasher):
                try:
                    ids = tokenizer.encode_array(text)
                except UnknownSymbolError as e:
                    what = "character" if kind == "char" else "word"
                    raise UnknownSymbolError(
                        f"{src}: unknown {what} {e.symbol!r} at character {char_pos + e.position}; it is not in "
                        f"the tokenizer's vocabulary of {tokenizer.vocab_size} symbols (use a tokenizer fitted "
                        "on this file)", symbol=e.symbol, position=char_pos + e.position) from None
                ids.astype(dtype).tofile(f)
                n_tokens += len(ids)
        if n_tokens == 0:
            raise LmlibError(f"{src} produced no tokens; give a file with some text")
        meta = {"format": FORMAT, "version": VERSION, "dtype": dtype.name, "n_tokens": n_tokens,
                "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.to_dict(), "source": src.name,
                "source_bytes": src.stat().st_size, "source_sha256": hasher.hexdigest()}
        tmp_json.write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
        json_path.unlink(missing_ok=True)  # a crash between the two renames then leaves no stale sidecar
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_json, json_path)
    finally:
        tmp_bin.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
    return load_token_file(bin_path)


def load_token_file(path: str | Path) -> TokenFile:
    """Open a token file (``<out>``, ``<out>.bin`` or ``<out>.json``) as a read-only memmap."""
    bin_path, json_path = _paths(path)
    fix = "re-run tokenize on the text file"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlibError(f"token file sidecar {json_path} does not exist; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LmlibError(f"corrupt token file sidecar {json_path} (not JSON); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LmlibError(f"{json_path} is not an lmlib token file sidecar; {fix}")
    if meta.get("version") != VERSION:
        raise LmlibError(f"{json_path} has token file version {meta.get('version')!r}, expected {VERSION}; {fix}")
    n, dtype = meta.get("n_tokens"), meta.get("dtype")
    if dtype not in ("uint16", "uint32") or not isinstance(n, int) or n < 1:
        raise LmlibError(f"corrupt token file sidecar {json_path} (bad dtype or n_tokens); {fix}")
    try:
        tokenizer = tokenizer_from_dict(meta.get("tokenizer"))
    except LmlibError as e:
        raise LmlibError(f"corrupt token file sidecar {json_path} ({e}); {fix}") from None
    size = bin_path.stat().st_size if bin_path.exists() else -1
    if size != n * np.dtype(dtype).itemsize:
        raise LmlibError(f"corrupt token file {bin_path}: expected {n} {dtype} tokens "
                         f"({n * np.dtype(dtype).itemsize} bytes), found {max(size, 0)} bytes; {fix}")
    tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))
    return TokenFile(bin_path=bin_path, tokens=tokens, tokenizer=tokenizer, meta=meta)


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

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
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
                 val_fraction: float = 0.2) -> TokenData:
    """Tokenize a text file once (cached) and split it into train/val.

    The token file lives in ``cache_dir`` (default ``<lmlib cache>/tokens``) as
    ``<stem>-<sha256 prefix>-<kind>``; it is reused while the text's sha256 and kind match.
    """
    src = _check_source(path)
    tokenizer_class(kind)  # fail early on a bad kind
    sha = _sha256_file(src)
    base = Path(cache_dir if cache_dir is not None else default_cache_dir() / "tokens") / f"{src.stem}-{sha[:16]}-{kind}"
    tf = None
    if _paths(base)[1].exists():
        try:
            tf = load_token_file(base)
        except LmlibError:  # corrupt or outdated cache entry: rebuild it
            tf = None
        if tf is not None and (tf.meta.get("source_sha256") != sha or tf.tokenizer.kind != kind):
            tf = None
    if tf is None:
        tf = tokenize_file(src, base, kind=kind)
    train, val = split_tokens(tf.tokens, val_fraction)
    meta = {**tf.meta, "token_file": str(tf.bin_path), "val_fraction": val_fraction}
    return TokenData(train=train, val=val, tokenizer=tf.tokenizer, name=src.stem, meta=meta)


def synthetic_data(n_tokens: int | None = None, n_sentences: int | None = None, seed: int = 0,
                   val_fraction: float = 0.2, holdout: Sequence[str] = (),
                   corpus: SyntheticCorpus | None = None) -> TokenData:
    """Sample the synthetic corpus (lmlib.synthetic) and split it into train/val.

    Give n_tokens or n_sentences (default: 1,000,000 tokens). The validation
    split is the contiguous tail of the same i.i.d. stream. Held-out sentences
    are removed from the distribution itself, so they appear in neither split.
    """
    if corpus is None:
        corpus = SyntheticCorpus(holdout)
    elif holdout:
        raise LmlibError("pass holdout to SyntheticCorpus or to synthetic_data, not both")
    if n_tokens is not None and n_sentences is not None:
        raise LmlibError("give n_tokens or n_sentences, not both")
    if n_sentences is not None:
        tokens = corpus.sample_sentence_tokens(n_sentences, seed)
    else:
        tokens = corpus.sample_tokens(DEFAULT_SYNTHETIC_TOKENS if n_tokens is None else n_tokens, seed)
    train, val = split_tokens(tokens, val_fraction)
    meta = {"source": "synthetic", "seed": seed, "n_tokens": len(tokens), "val_fraction": val_fraction,
            "holdout": list(corpus.holdout), "entropy_per_token": corpus.entropy_per_token()}
    return TokenData(train=train, val=val, tokenizer=corpus.tokenizer(), name="synthetic", meta=meta,
                     corpus=corpus)


# --- batches -----------------------------------------------------------------------------------

def check_enough_tokens(tokens: np.ndarray | Sequence[int], block_size: int) -> None:
    """Raise LmlibError unless tokens hold at least one window of block_size + 1 tokens."""
    if block_size < 1:
        raise LmlibError(f"block_size must be at least 1, got {block_size}")
    if len(tokens) < block_size + 1:
        raise LmlibError(f"need at least block_size+1 = {block_size + 1} tokens, got {len(tokens)}; "
                         "use a smaller block_size or more data")


def windows_to_batch(tokens: np.ndarray, starts: np.ndarray | Sequence[int],
                     block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) int64 tensors of shape (len(starts), block_size) for windows starting at ``starts``."""
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
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


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


def iter_eval_batches(tokens: np.ndarray, batch_size: int, block_size: int,
                      max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic (x, y) batches of non-overlapping windows covering the whole split.

    The last batch may be smaller. With max_batches, windows are evenly spaced
    over the split rather than taken from its start.
    """
    if batch_size < 1:
        raise LmlibError(f"batch_size must be at least 1, got {batch_size}")
    starts = eval_window_starts(len(tokens), block_size, None if max_batches is None else max_batches * batch_size)
    # A generator expression, not a generator function: bad arguments raise here, not at the first batch.
    return (windows_to_batch(tokens, starts[i:i + batch_size], block_size) for i in range(0, len(starts), batch_size))

