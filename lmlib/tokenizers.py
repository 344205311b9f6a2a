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

Special tokens (opt-in here, e.g. ``CharTokenizer.fit(text, special_tokens=["<|endoftext|>"])``
or ``tok.with_special_tokens([...])``) follow the ordinary vocabulary: each is one id, never
part of the ordinary vocabulary, and encodes only where allowed
(``encode(text, allowed_special="all")``, as in tiktoken); decode gives it back. Without
them a vocabulary is exactly the text's symbols, as always.

Both kinds save to JSON as ``{"kind": ..., "vocab": [...], ...}``; use
``load_tokenizer(path)`` or ``tokenizer_from_dict(d)`` to get the right class back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import numpy as np

from lmlib.errors import LmlibError, UnknownSymbolError
from lmlib.fsutil import atomic_write_text
from lmlib.pretokenize import split_special

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

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = ()) -> None:
        self.special_tokens: list[str] = list(special_tokens)
        self.vocab: list[str] = list(vocab) + self.special_tokens
        if len(self.vocab) == len(self.special_tokens):
            raise LmlibError(f"a {self.kind} tokenizer needs a non-empty vocabulary; fit it on some text")
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.vocab)}
        if len(self.stoi) != len(self.vocab) or "" in self.special_tokens:
            raise LmlibError(f"the {self.kind} tokenizer's vocabulary has duplicate symbols (or an empty special "
                             "token); rebuild it")
        self.special_ids: dict[str, int] = {s: self.stoi[s] for s in self.special_tokens}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, allowed_special: str | Collection[str] = ()) -> list[int]:
        """Text to a list of token ids (special tokens: see `encode_array`)."""
        return self.encode_array(text, allowed_special).tolist()

    def encode_array(self, text: str, allowed_special: str | Collection[str] = ()) -> np.ndarray:
        """Text to an int32 array of token ids (the fast path for big texts). Special-token
        strings in the text are ordinary text unless allowed (``allowed_special="all"`` or
        a set of them, as in tiktoken); then each becomes its id, the longest first."""
        parts = split_special(text, self._allowed(allowed_special))
        if len(parts) == 1:
            return self._encode_ordinary(text)
        out = [np.array([self.special_ids[p]], np.int32) if i % 2 else self._encode_ordinary(p)
               for i, p in enumerate(parts) if p]
        return np.concatenate(out) if out else np.zeros(0, np.int32)

    def _encode_ordinary(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def _allowed(self, allowed_special: str | Collection[str]) -> list[str]:
        if allowed_special == "all":
            return self.special_tokens
        if isinstance(allowed_special, str):
            raise LmlibError(f"allowed_special must be 'all' or a collection of special tokens, got {allowed_special!r}")
        unknown = set(allowed_special) - set(self.special_tokens)
        if unknown:
            raise LmlibError(f"{sorted(unknown)} are not special tokens of this tokenizer ({self.special_tokens})")
        return list(allowed_special)

    def encode_documents(self, docs: Iterable[str], separator: str = "<|endoftext|>") -> np.ndarray:
        """Several documents, each followed by the special token ``separator``."""
        if separator not in self.special_ids:
            raise LmlibError(f"{separator!r} is not one of this tokenizer's special tokens {self.special_tokens}; "
                             "add it with with_special_tokens")
        sep = np.array([self.special_ids[separator]], np.int32)
        return np.concatenate([a for d in docs for a in (self.encode_array(d), sep)] or [np.zeros(0, np.int32)])

    @property
    def ordinary_vocab(self) -> list[str]:
        """The vocabulary without the special tokens."""
        return self.vocab[:len(self.vocab) - len(self.special_tokens)]

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
        d: dict[str, Any] = {"kind": self.kind, "vocab": self.ordinary_vocab}
        if self.special_tokens:
            d["special_tokens"] = list(self.special_tokens)
        return d

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

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = ()) -> None:
        super().__init__(vocab, special_tokens)
        if any(len(s) != 1 for s in self.ordinary_vocab):
            raise LmlibError("a char tokenizer's vocabulary must hold single characters; rebuild it")
        self._codes = np.array([ord(c) for c in self.ordinary_vocab], dtype="<u4")
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
    def fit(cls, text: str, special_tokens: Sequence[str] = ()) -> CharTokenizer:
        """Vocabulary = the distinct characters of text (then the special tokens, if any)."""
        return cls.fit_chunks([text], special_tokens)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str], special_tokens: Sequence[str] = ()) -> CharTokenizer:
        """Fit on text given piece by piece (for corpora larger than memory). Special tokens
        in the text are cut out first: their characters count only where they occur elsewhere."""
        seen = np.zeros(0x110000, dtype=bool)  # one flag per possible code point
        for chunk in (p for c in chunks for p in split_special(c, special_tokens)[::2]):
            if chunk.isascii():  # fast path: translate() drops the bytes already seen, usually all of them
                known = np.flatnonzero(seen[:128]).astype(np.uint8).tobytes()
                seen[np.frombuffer(chunk.encode("ascii").translate(None, known), dtype=np.uint8)] = True
            else:
                seen[_codepoints(chunk)] = True
        if not seen.any():
            raise LmlibError("cannot fit a char tokenizer on empty text; give it some text")
        return cls([chr(c) for c in np.flatnonzero(seen)], special_tokens)

    def with_special_tokens(self, special_tokens: Sequence[str]) -> CharTokenizer:
        """The same characters, then these special tokens."""
        return CharTokenizer(self.ordinary_vocab, special_tokens)

    def _encode_ordinary(self, text: str) -> np.ndarray:
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
        n = len(self._codes)
        specials = np.flatnonzero(arr >= n)
        if not specials.size:
            return self._codes[arr].tobytes().decode("utf-32-le", "surrogatepass")
        out, start = [], 0
        for i in specials.tolist():  # runs of characters between the special tokens
            out += [self.decode(arr[start:i]), self.vocab[arr[i]]]
            start = i + 1
        return "".join(out) + self.decode(arr[start:])


class WordTokenizer(Tokenizer):
    """Words and punctuation marks; optional lower-casing and ``<unk>`` token.

    ``lowercase=False`` by default: "The" and "the" are different tokens, which
    keeps decode() faithful. With ``unk=True`` the vocabulary holds ``<unk>``
    and unknown words encode to it instead of raising.
    """

    kind = "word"

    def __init__(self, vocab: Sequence[str], lowercase: bool = False, unk: bool = False,
                 special_tokens: Sequence[str] = ()) -> None:
        super().__init__(vocab, special_tokens)
        self.lowercase = bool(lowercase)
        self.unk = bool(unk)
        if self.unk and UNK not in self.stoi:
            raise LmlibError(f"a word tokenizer with unk=True needs {UNK!r} in its vocabulary; refit it")
        self.unk_id: int | None = self.stoi[UNK] if self.unk else None

    @classmethod
    def fit(cls, text: str, lowercase: bool = False, unk: bool = False,
            special_tokens: Sequence[str] = ()) -> WordTokenizer:
        """Vocabulary = the distinct words of text (plus ``<unk>`` if unk, then the special tokens)."""
        return cls.fit_chunks([text], lowercase=lowercase, unk=unk, special_tokens=special_tokens)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str], lowercase: bool = False, unk: bool = False,
                   special_tokens: Sequence[str] = ()) -> WordTokenizer:
        """Fit on text given piece by piece; pieces must not cut words in two. Special tokens
        in the text are cut out first."""
        words: set[str] = set()
        for chunk in (p for c in chunks for p in split_special(c, special_tokens)[::2]):
            words.update(split_words(chunk.lower() if lowercase else chunk))
        if unk:
            words.add(UNK)
        if not words:
            raise LmlibError("cannot fit a word tokenizer on text without words; give it some text")
        return cls(sorted(words), lowercase=lowercase, unk=unk, special_tokens=special_tokens)

    def with_special_tokens(self, special_tokens: Sequence[str]) -> WordTokenizer:
        """The same words, then these special tokens."""
        return WordTokenizer(self.ordinary_vocab, self.lowercase, self.unk, special_tokens)

    def split(self, text: str) -> list[str]:
        return split_words(text.lower() if self.lowercase else text)

    def _encode_ordinary(self, text: str) -> np.ndarray:
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
    special = d.get("special_tokens", [])
    if not isinstance(special, list) or not all(isinstance(s, str) for s in special):
        raise LmlibError("a tokenizer's 'special_tokens' must be a list of strings; re-save the tokenizer")
    if cls is WordTokenizer:
        return WordTokenizer(vocab, lowercase=bool(d.get("lowercase", False)), unk=bool(d.get("unk", False)),
                             special_tokens=special)
    return cls(vocab, special)  # type: ignore[call-arg]


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
