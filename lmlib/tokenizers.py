"""Character- and word-level tokenizers.

A tokenizer is a fixed vocabulary (a list of symbols; a token's id is its
position; fitting sorts the list, so it is deterministic) plus the rules to cut
text into those symbols:

- ``CharTokenizer`` (kind "char"): one token per Unicode character.
- ``WordTokenizer`` (kind "word"): words and single punctuation marks, matched
  by ``\\w+|[^\\w\\s]``; a newline is kept as its own token "\\n" so that
  play-shaped text keeps its lines. Other whitespace only separates tokens.

Unknown-symbol policy: by default, encoding a symbol that is not in the
vocabulary raises ``UnknownSymbolError`` naming the symbol and its position.
Nothing is silently dropped. The only exception is a ``WordTokenizer`` fitted
with ``unk=True``: its vocabulary has an explicit ``<unk>`` token and unknown
words map to it.

Both kinds save to JSON as ``{"kind": ..., "vocab": [...], ...}``; use
``load_tokenizer(path)`` or ``tokenizer_from_dict(d)`` to get the right class back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import numpy as np

from lmlib.errors import LmlibError, UnknownSymbolError
from lmlib.fsutil import atomic_write_text

WORD_RE = re.compile(r"\n|\w+|[^\w\s]")
UNK = "<unk>"
# decode() joins words with spaces, except around these (so "hello world ." reads "hello world.")
_NO_SPACE_BEFORE = frozenset([".", ",", ";", ":", "!", "?", ")", "]", "}", "'", "-", "\n"])
_NO_SPACE_AFTER = frozenset(["(", "[", "{", "'", "-", "\n"])


def split_words(text: str) -> list[str]:
    """Cut text into word-level symbols: words, punctuation marks and newlines."""
    return WORD_RE.findall(text)


def _codepoints(text: str) -> np.ndarray:
    # UTF-32 is one uint32 per character, so numpy sees the code points without a Python loop.
    # surrogatepass: a str may hold lone surrogates (e.g. from surrogateescape); keep them as symbols.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class Tokenizer:
    """Shared base: a vocabulary of symbols, ids are positions in it."""

    kind: ClassVar[str] = ""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab: list[str] = list(vocab)
        if not self.vocab:
            raise LmlibError(f"a {self.kind} tokenizer needs a non-empty vocabulary; fit it on some text")
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.vocab)}
        if len(self.stoi) != len(self.vocab):
            raise LmlibError(f"the {self.kind} tokenizer's vocabulary has duplicate symbols; rebuild it")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Text to a list of token ids."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Text to an int32 array of token ids (the fast path for big texts)."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Token ids back to text."""
        raise NotImplementedError

    def _check_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr[(arr < 0) | (arr >= self.vocab_size)][0])
            raise LmlibError(f"token id {bad} is out of range for a vocabulary of {self.vocab_size} symbols; "
                             "decode with the tokenizer the ids were made with")
        return arr

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        tok = tokenizer_from_dict(d)
        if not isinstance(tok, cls):
            raise LmlibError(f"expected a {cls.kind} tokenizer, got kind {tok.kind!r}")
        return tok

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON, atomically (`lmlib.fsutil`): a crash never leaves half a file."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls.from_dict(_read_json(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One token per character.

    ``fit`` sorts the vocabulary by code point; a vocabulary given in any other order
    (``from_dict``, the constructor) is used as given: a symbol's id is its position.
    """

    kind = "char"

    def __init__(self, vocab: Sequence[str]) -> None:
        super().__init__(vocab)
        if any(len(s) != 1 for s in self.vocab):
            raise LmlibError("a char tokenizer's vocabulary must hold single characters; rebuild it")
        self._codes = np.array([ord(c) for c in self.vocab], dtype="<u4")
        # Lookup table code point -> id; its last slot (-1) catches every code point above the vocabulary.
        self._lut = np.full(int(self._codes.max()) + 2, -1, dtype=np.int32)
        self._lut[self._codes] = np.arange(len(self._codes), dtype=np.int32)
        # ASCII fast path: bytes.translate maps each byte through a 256-byte table in C, several
        # times faster than numpy indexing. It needs every ASCII character's id to fit in a byte:
        # true for fitted vocabularies (sorted, so ASCII ids are < 128), but a vocabulary loaded in
        # another order may put them anywhere; then encode_array takes the general path.
        self._ascii_known = bytes(c for c in range(128) if chr(c) in self.stoi)
        ascii_ids = [self.stoi.get(chr(c), 0) for c in range(128)]
        self._ascii_table = bytes(ascii_ids + [0] * 128) if max(ascii_ids) < 256 else None

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """Vocabulary = the distinct characters of text."""
        return cls.fit_chunks([text])

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str]) -> CharTokenizer:
        """Fit on text given piece by piece (for corpora larger than memory)."""
        seen = np.zeros(0x110000, dtype=bool)  # one flag per possible code point
        for chunk in chunks:
            if chunk.isascii():  # fast path: translate() drops the bytes already seen, usually all of them
                known = np.flatnonzero(seen[:128]).astype(np.uint8).tobytes()
                seen[np.frombuffer(chunk.encode("ascii").translate(None, known), dtype=np.uint8)] = True
            else:
                seen[_codepoints(chunk)] = True
        if not seen.any():
            raise LmlibError("cannot fit a char tokenizer on empty text; give it some text")
        return cls([chr(c) for c in np.flatnonzero(seen)])

    def encode_array(self, text: str) -> np.ndarray:
        if self._ascii_table is not None and text.isascii():  # isascii() is O(1) in CPython
            raw = text.encode("ascii")
            if not raw.translate(None, self._ascii_known):  # every byte is in the vocabulary
                return np.frombuffer(raw.translate(self._ascii_table), dtype=np.uint8).astype(np.int32)
        codes = _codepoints(text)  # general path (also finds and reports unknown characters)
        ids = self._lut[np.minimum(codes, len(self._lut) - 1)]
        if ids.size and ids.min() < 0:
            pos = int(np.argmax(ids < 0))
            raise UnknownSymbolError(
                f"unknown character {text[pos]!r} at position {pos}; it is not in the tokenizer's vocabulary "
                f"of {self.vocab_size} symbols (refit the tokenizer on text that contains it)",
                symbol=text[pos], position=pos)
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = self._check_ids(ids)
        return self._codes[arr].tobytes().decode("utf-32-le", "surrogatepass")


class WordTokenizer(Tokenizer):
    """Words and punctuation marks; optional lower-casing and ``<unk>`` token.

    ``lowercase=False`` by default: "The" and "the" are different tokens, which
    keeps decode() faithful. With ``unk=True`` the vocabulary holds ``<unk>``
    and unknown words encode to it instead of raising.
    """

    kind = "word"

    def __init__(self, vocab: Sequence[str], lowercase: bool = False, unk: bool = False) -> None:
        super().__init__(vocab)
        self.lowercase = bool(lowercase)
        self.unk = bool(unk)
        if self.unk and UNK not in self.stoi:
            raise LmlibError(f"a word tokenizer with unk=True needs {UNK!r} in its vocabulary; refit it")
        self.unk_id: int | None = self.stoi[UNK] if self.unk else None

    @classmethod
    def fit(cls, text: str, lowercase: bool = False, unk: bool = False) -> WordTokenizer:
        """Vocabulary = the distinct words of text (plus ``<unk>`` if unk)."""
        return cls.fit_chunks([text], lowercase=lowercase, unk=unk)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str], lowercase: bool = False, unk: bool = False) -> WordTokenizer:
        """Fit on text given piece by piece; pieces must not cut words in two."""
        words: set[str] = set()
        for chunk in chunks:
            words.update(split_words(chunk.lower() if lowercase else chunk))
        if unk:
            words.add(UNK)
        if not words:
            raise LmlibError("cannot fit a word tokenizer on text without words; give it some text")
        return cls(sorted(words), lowercase=lowercase, unk=unk)

    def split(self, text: str) -> list[str]:
        return split_words(text.lower() if self.lowercase else text)

    def encode_array(self, text: str) -> np.ndarray:
        words = self.split(text)
        stoi = self.stoi
        if self.unk_id is not None:
            ids = [stoi.get(w, self.unk_id) for w in words]
        else:
            try:
                ids = [stoi[w] for w in words]
            except KeyError:
                self._raise_unknown(text)
        return np.array(ids, dtype=np.int32)

    def _raise_unknown(self, text: str) -> NoReturn:
        # Only on the error path: find the first unknown word again, with its character offset.
        for i, m in enumerate(WORD_RE.finditer(text.lower() if self.lowercase else text)):
            if m.group() not in self.stoi:
                raise UnknownSymbolError(
                    f"unknown word {m.group()!r} at position {m.start()} (token {i}); it is not in the tokenizer's "
                    f"vocabulary of {self.vocab_size} symbols (refit it on this text, or fit it with unk=True)",
                    symbol=m.group(), position=m.start())
        raise AssertionError("unreachable: no unknown word found")

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        out: list[str] = []
        prev = "\n"  # start of text: no leading space
        for i in self._check_ids(ids).tolist():
            w = self.vocab[i]
            if w not in _NO_SPACE_BEFORE and prev not in _NO_SPACE_AFTER:
                out.append(" ")
            out.append(w)
            prev = w
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "lowercase": self.lowercase, "unk": self.unk}


KINDS = ("char", "word", "bpe")


def tokenizer_class(kind: str) -> type[Tokenizer]:
    """The tokenizer class for a kind name ("char", "word" or "bpe", byte-level BPE in `lmlib.bpe`)."""
    if kind == "char":
        return CharTokenizer
    if kind == "word":
        return WordTokenizer
    if kind == "bpe":
        from lmlib.bpe import BPETokenizer  # (lmlib.bpe imports this module)

        return BPETokenizer
    raise LmlibError(f"unknown tokenizer kind {kind!r}; use 'char', 'word' or 'bpe'")


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict()`` output, dispatching on its kind."""
    if not isinstance(d, dict) or "kind" not in d or "vocab" not in d:
        raise LmlibError("a tokenizer description must be a JSON object with 'kind' and 'vocab'; re-save the tokenizer")
    vocab = d["vocab"]
    if not isinstance(vocab, list) or not all(isinstance(s, str) for s in vocab):
        raise LmlibError("a tokenizer's 'vocab' must be a list of strings; re-save the tokenizer")
    cls = tokenizer_class(d["kind"])
    if d["kind"] == "bpe":
        return cls._from_dict(d)
    if cls is WordTokenizer:
        return WordTokenizer(vocab, lowercase=bool(d.get("lowercase", False)), unk=bool(d.get("unk", False)))
    return cls(vocab)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved with ``save(path)``, whatever its kind."""
    return tokenizer_from_dict(_read_json(path))


def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlibError(f"tokenizer file {path} does not exist; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlibError(f"tokenizer file {path} is not valid JSON ({e}); re-save the tokenizer") from None
