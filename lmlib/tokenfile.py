"""Token files: a text file tokenized once, on disk, memory-mapped for training.

A UTF-8 text file of any size is tokenized chunk by chunk into ``<out>.bin`` (raw
uint16 or uint32 token ids) plus a JSON sidecar ``<out>.json`` that records the
tokenizer and where the tokens came from (``source_sha256``, ``source_bytes``).
`load_token_file` opens the ``.bin`` with ``np.memmap``, so a corpus larger than
RAM works: `lmlib.data` splits it and reads only the windows in a batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lmlib.documents import EOT, documents_digest, iter_documents
from lmlib.errors import LmlibError, UnknownSymbolError
from lmlib.fsutil import atomic_write, atomic_write_text
from lmlib.pretokenize import safe_cut
from lmlib.tokenizers import Tokenizer, tokenizer_class, tokenizer_from_dict

__all__ = ["DEFAULT_CHUNK_BYTES", "FORMAT", "VERSION", "TokenFile", "load_token_file", "tokenize_documents",
           "tokenize_file"]

FORMAT, VERSION = "lmlib-tokens", 1
DEFAULT_CHUNK_BYTES = 8 << 20  # 8 MiB of text at a time: a char chunk becomes ~4x that as UTF-32


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


def _iter_text(path: Path, chunk_bytes: int, whole_words: bool | Callable[[str], int],
               hasher: Any = None) -> Iterator[tuple[str, int]]:
    """Yield (text, character offset) chunks of a UTF-8 file, checking it as we go.

    A chunk never ends inside a UTF-8 sequence and, with whole_words, never
    inside a word (it ends just after whitespace), so tokens never straddle chunks.
    whole_words may also be a function giving where a text may be cut (0: nowhere yet),
    such as `lmlib.pretokenize.safe_cut`.
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
            if callable(whole_words) and not eof:
                k = whole_words(text)
            elif whole_words and not eof:
                while k > 0 and not text[k - 1].isspace():  # back up over the last, maybe partial, word
                    k -= 1
            carry_text = text[k:]
            if k:
                yield text[:k], char_pos
                char_pos += k
            if eof:
                return


# --- token files -------------------------------------------------------------------------------

def _paths(base: str | Path) -> tuple[Path, Path]:
    s = str(base)
    if s.endswith((".bin", ".json")):
        s = s.rsplit(".", 1)[0]
    return Path(s + ".bin"), Path(s + ".json")


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
                  tokenizer: Tokenizer | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                  vocab_size: int | None = None, bpe_backend: str = "fast") -> TokenFile:
    """Tokenize a UTF-8 text file of any size into ``<out>.bin`` + ``<out>.json``.

    kind: "char" (default), "word" or "bpe"; it is fitted on the file in a first pass
    unless ``tokenizer`` is given (a "bpe" one with ``vocab_size``, default 512, trained by
    ``bpe_backend``, "fast" or "scratch"). out_path defaults to ``<text dir>/<stem>.<kind>``.
    Both files are written atomically (`lmlib.fsutil`), so an interrupted run never
    leaves a half-written token file.
    """
    src = _check_source(text_path)
    if tokenizer is not None and kind not in (None, tokenizer.kind):
        raise LmlibError(f"kind={kind!r} does not match the given {tokenizer.kind} tokenizer; drop one of them")
    kind = tokenizer.kind if tokenizer is not None else (kind or "char")
    cls = tokenizer_class(kind)
    if chunk_bytes < 16:
        raise LmlibError(f"chunk_bytes must be at least 16, got {chunk_bytes}")
    whole_words: bool | Callable[[str], int] = kind == "word"
    if kind == "bpe":
        whole_words = safe_cut  # chunks cut where BPE's pre-split is unchanged
    elif vocab_size is not None:
        raise LmlibError(f"vocab_size is for a bpe tokenizer; a {kind} tokenizer's vocabulary is the text's symbols")
    if tokenizer is None:  # first pass: collect the vocabulary chunk by chunk
        chunks = (text for text, _ in _iter_text(src, chunk_bytes, whole_words))
        extra = {"vocab_size": 512 if vocab_size is None else vocab_size, "backend": bpe_backend} if kind == "bpe" else {}
        tokenizer = cls.fit_chunks(chunks, **extra)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    bin_path, json_path = _paths(out_path if out_path is not None else src.with_name(f"{src.stem}.{kind}"))
    hasher, n_tokens = hashlib.sha256(), 0

    def write_tokens(f: BinaryIO) -> None:  # second pass: encode chunk by chunk
        nonlocal n_tokens
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
        json_path.unlink(missing_ok=True)  # the new tokens are complete: retire the old sidecar first

    # The .bin, then its sidecar, each atomically: a crash in between leaves no sidecar, so
    # the half-done pair is refused by load_token_file rather than read with stale metadata.
    atomic_write(bin_path, write_tokens)
    meta = {"format": FORMAT, "version": VERSION, "dtype": dtype.name, "n_tokens": n_tokens,
            "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.to_dict(), "source": src.name,
            "source_bytes": src.stat().st_size, "source_sha256": hasher.hexdigest()}
    atomic_write_text(json_path, json.dumps(meta, ensure_ascii=False) + "\n")
    return load_token_file(bin_path)


def tokenize_documents(source: str | Path, out_path: str | Path, kind: str = "char",
                       tokenizer: Tokenizer | None = None, vocab_size: int | None = None,
                       bpe_backend: str = "fast") -> TokenFile:
    """Tokenize the documents of a folder or a JSONL file (`lmlib.documents`) into a token
    file, each document followed by the end-of-text token ``<|endoftext|>``.

    The tokenizer (unless given) is fitted on the documents with that token as a special
    token: for "bpe" it is the default anyway; a "char" or "word" tokenizer gets it after its
    symbols. A given tokenizer must have it. Documents are read one at a time, twice (fit,
    then encode); ``source_bytes`` in the sidecar counts the documents' text, not the JSON.
    """
    if tokenizer is None:
        cls = tokenizer_class(kind)
        if kind == "bpe":
            extra: dict[str, Any] = {"vocab_size": 512 if vocab_size is None else vocab_size, "backend": bpe_backend}
        elif vocab_size is not None:
            raise LmlibError(f"vocab_size is for a bpe tokenizer; a {kind} tokenizer's vocabulary is the text's symbols")
        else:
            extra = {}
        tokenizer = cls.fit_chunks(iter_documents(source), special_tokens=[EOT], **extra)
    if EOT not in tokenizer.special_ids:
        raise LmlibError(f"the {tokenizer.kind} tokenizer has no {EOT} special token to separate documents; "
                         "add it with tokenizer.with_special_tokens")
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    bin_path, json_path = _paths(out_path)
    eot = np.array([tokenizer.special_ids[EOT]], dtype=dtype)
    n_tokens = n_docs = n_bytes = 0

    def write_tokens(f: BinaryIO) -> None:
        nonlocal n_tokens, n_docs, n_bytes
        for doc in iter_documents(source):
            try:
                ids = tokenizer.encode_array(doc).astype(dtype)
            except UnknownSymbolError as e:
                raise UnknownSymbolError(f"{source}, document {n_docs + 1}: {e}", symbol=e.symbol,
                                         position=e.position) from None
            ids.tofile(f)
            eot.tofile(f)
            n_tokens, n_docs, n_bytes = n_tokens + len(ids) + 1, n_docs + 1, n_bytes + len(doc.encode("utf-8"))
        if n_docs == 0:
            raise LmlibError(f"{source} holds no documents; give a folder of text files or a .jsonl file")
        json_path.unlink(missing_ok=True)

    atomic_write(bin_path, write_tokens)
    sha, _ = documents_digest(source)
    meta = {"format": FORMAT, "version": VERSION, "dtype": dtype.name, "n_tokens": n_tokens,
            "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.to_dict(), "source": Path(source).name,
            "source_bytes": n_bytes, "source_sha256": sha, "n_documents": n_docs}
    atomic_write_text(json_path, json.dumps(meta, ensure_ascii=False) + "\n")
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
