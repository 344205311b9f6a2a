"""Byte-level BPE (byte-pair encoding): the tokenizer of GPT-2 and most language models since.

The idea fits in three sentences. Text is UTF-8 bytes, so the 256 byte values are
the starting vocabulary and any text whatsoever can be encoded (no unknown symbol,
ever). Training repeatedly finds the most frequent pair of adjacent tokens in the
training text and makes it a new token, until the vocabulary has the size asked for.
Encoding new text applies the same merges, in the order they were learned.

Two details make it work well:

- **Pre-split.** Before any merge, the text is cut into pieces with GPT-2's regular
  expression (``PATTERN``, in `lmlib.pretokenize`): a word with the space in front of
  it, a run of digits, a run of punctuation, a run of whitespace. Merges never cross a
  piece boundary, so tokens are word parts, not "d th" spanning two words.
- **Special tokens** (by default ``<|endoftext|>``) get ids of their own after the
  merges. Training cuts them out of the text first, so no merge crosses into them.
  Ordinary text never encodes to them (a text containing the characters
  "<|endoftext|>" encodes them as bytes); ``encode(..., allowed_special="all")`` (as in
  tiktoken) and ``encode_documents`` put them in on purpose, to mark where a document ends.

Ties between equally frequent pairs go to the lexicographically greatest pair of byte
strings (the rule of the usual reference trainers), so training is deterministic.

Two backends sit behind one tokenizer class, `BPETokenizer`:

- ``"scratch"``: the pure-Python code in this module, written to be read
  (`pair_counts`, `merge_pair`, `train_merges`, `encode_piece`).
- ``"fast"``: for real corpora (`lmlib.bpe_fast`): the pieces are counted on several
  threads and ``tiktoken`` encodes. Both backends learn the same merges and give the
  same ids (the tests check it).

A saved tokenizer is JSON: ``{"kind": "bpe", "vocab": [...], "merges": [[a, b], ...],
"special_tokens": [...], "pattern": ..., "backend": ...}`` (plus ``"ids"`` for a
vocabulary numbered another way, like GPT-2's). The vocabulary's strings
write each byte as one printable character (GPT-2's convention, `bytes_to_unicode`),
so "Ġthe" is the token " the" and "Ċ" is a newline.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
import regex

from lmlib import bpe_fast  # (imports tiktoken only when an encoder is built)
from lmlib.bpe_fast import merge_pair  # one merge step, shared by both trainers
from lmlib.errors import LmlibError
from lmlib.pretokenize import PATTERN, bytes_to_unicode, check_encodable, cut_text, pre_split, safe_cut, split_special
from lmlib.tokenizers import Tokenizer

__all__ = ["BACKENDS", "EOT", "PATTERN", "BPETokenizer", "bytes_to_unicode", "count_pieces",
           "cut_text", "encode_piece", "merge_pair", "pair_counts", "pre_split", "safe_cut", "train_merges"]

EOT = "<|endoftext|>"
BACKENDS = ("scratch", "fast")


# --- the from-scratch trainer: short functions, meant to be read ---------------------------------

def count_pieces(chunks: Iterable[str], special_tokens: Collection[str] = ()) -> Counter:
    """How often each pre-split piece occurs. Special tokens are cut out first, so that no
    merge ever crosses into them (training on "<|endoftext|>" never learns "<|")."""
    counts: Counter = Counter()
    for chunk in chunks:
        check_encodable(chunk)
        for part in split_special(chunk, special_tokens)[::2]:
            counts.update(pre_split(part))
    return counts


def pair_counts(words: dict[tuple[int, ...], int]) -> Counter:
    """How often each pair of adjacent tokens occurs, over words given with their counts."""
    counts: Counter = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += n
    return counts


def _best_pair(counts: dict[tuple[int, int], int], token_bytes: list[bytes]) -> tuple[int, int]:
    # The most frequent pair; on a tie, the lexicographically greatest pair of byte strings
    # (the rule of the usual reference trainers), so that training is deterministic.
    top = max(counts.values())
    return max((p for p, n in counts.items() if n == top), key=lambda p: (token_bytes[p[0]], token_bytes[p[1]]))


def train_merges(word_counts: dict[str, int], n_merges: int) -> list[tuple[int, int]]:
    """Learn up to ``n_merges`` merges from pre-split pieces and their counts.

    Token ids 0-255 are the bytes; merge number k creates token 256 + k. This is the
    textbook loop (count the pairs, merge the most frequent, repeat), made fast by
    keeping the pair counts up to date: after a merge, only the words that held the
    merged pair are recounted, instead of the whole text. It stops early when no
    pair occurs twice (merging a pair seen once gains nothing). Ties go to the
    lexicographically greatest pair of byte strings.
    """
    words = [tuple(piece.encode("utf-8")) for piece in word_counts]
    freqs = list(word_counts.values())
    token_bytes = [bytes([b]) for b in range(256)]
    counts: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> indices of words holding it
    for i, (word, n) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += n
            where[pair].add(i)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and counts:
        pair = _best_pair(counts, token_bytes)
        if counts[pair] < 2:
            break
        new_id = 256 + len(merges)
        merges.append(pair)
        token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
        for i in where.pop(pair):
            word, n = words[i], freqs[i]
            merged = merge_pair(word, pair, new_id)
            if merged == word:  # a stale entry: this word lost the pair to an earlier merge
                continue
            for p in zip(word, word[1:]):  # forget the old word's pairs ...
                counts[p] -= n
                if counts[p] <= 0:
                    del counts[p]
            for p in zip(merged, merged[1:]):  # ... and count the new word's
                counts[p] += n
                where[p].add(i)
            words[i] = merged
        counts.pop(pair, None)
    return merges


def encode_piece(piece_bytes: bytes, ranks: dict[tuple[int, int], int]) -> list[int]:
    """Encode one pre-split piece: start from its bytes and apply the learned merges.

    At each step the pair that was learned *earliest* (lowest rank) is merged, which
    replays training's merges in their order; it stops when no pair is a known merge.
    """
    word = list(piece_bytes)
    while len(word) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(word, word[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        word = list(merge_pair(word, (word[i], word[i + 1]), 256 + rank))
    return word


# --- the tokenizer -------------------------------------------------------------------------------

class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0-255 are bytes, then one id per merge, then the special tokens.

    Build one with `BPETokenizer.train(text, vocab_size)` (or `fit`, or `fit_chunks`
    for a file read piece by piece). ``backend="scratch"`` trains and encodes with
    the Python code of this module; ``backend="fast"`` counts pieces on several threads
    and encodes with tiktoken (`lmlib.bpe_fast`). Both learn the same merges.

    ``ids`` renumbers the ordinary tokens: ``ids[t]`` is the id shown to the world of the
    token made of bytes ``t < 256`` or by merge ``t - 256`` (GPT-2 orders its 256 byte
    tokens differently from byte values; `lmlib.bpe_formats` reads such vocabularies).
    """

    kind = "bpe"
    byte_level = True  # decode() may be given ids that cut a character in two (see decode)
    cache_limit = 1_000_000  # distinct pieces remembered with their ids before the cache is emptied

    def __init__(self, merges: Sequence[Sequence[int]], special_tokens: Sequence[str] = (EOT,),
                 pattern: str = PATTERN, backend: str = "scratch", ids: Sequence[int] | None = None) -> None:
        if backend not in BACKENDS:
            raise LmlibError(f"unknown BPE backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise LmlibError(f"BPE merge {k} ({a}, {b}) refers to a token not made yet; the tokenizer file is corrupt")
        self.special_tokens = list(special_tokens)
        if len(set(self.special_tokens)) != len(self.special_tokens) or "" in self.special_tokens:
            raise LmlibError(f"the BPE special tokens {self.special_tokens} hold a duplicate or an empty string; "
                             "give each once")
        self.pattern, self.backend = pattern, backend
        # Each token's bytes: a byte, or the concatenation of the two tokens a merge joined.
        self._bytes: list[bytes] = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self._bytes.append(self._bytes[a] + self._bytes[b])
        n = len(self._bytes)
        self._to_ext: np.ndarray | None = None
        self.token_bytes = self._bytes  # by id
        if ids is not None:
            self._to_ext = np.asarray(ids, dtype=np.int32)
            if self._to_ext.shape != (n,) or not np.array_equal(np.sort(self._to_ext), np.arange(n)):
                raise LmlibError(f"a BPE tokenizer's ids must number its {n} ordinary tokens 0 to {n - 1}, "
                                 "each once; the tokenizer file is corrupt")
            if np.array_equal(self._to_ext, np.arange(n)):
                self._to_ext = None
            else:
                self.token_bytes = [b""] * n
                for t, i in enumerate(self._to_ext.tolist()):
                    self.token_bytes[i] = self._bytes[t]
        to_str = bytes_to_unicode()
        # Not Tokenizer.__init__: two merges may (rarely) build the same bytes, e.g. (ab, c) and (a, bc);
        # they are different ids with the same text, and stoi keeps the first.
        self.vocab: list[str] = ["".join(to_str[c] for c in tb) for tb in self.token_bytes] + self.special_tokens
        self.stoi: dict[str, int] = {}
        for i, s in enumerate(self.vocab):
            self.stoi.setdefault(s, i)
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}
        self.special_ids = {s: n + i for i, s in enumerate(self.special_tokens)}
        self._regex = regex.compile(pattern)
        self._cache: dict[str, list[int]] = {}
        self._fast: Any = None  # the fast backend's encoder, see _fast_encoder
        self._fast_built = False

    def with_special_tokens(self, special_tokens: Sequence[str]) -> BPETokenizer:
        """The same merges with these special tokens (their ids follow the merges, in this order)."""
        return BPETokenizer(self.merges, special_tokens, self.pattern, self.backend,
                            None if self._to_ext is None else self._to_ext.tolist())

    # ---- training ------------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Sequence[str] = (EOT,),
              backend: str = "scratch") -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``."""
        return cls.fit_chunks([text], vocab_size=vocab_size, special_tokens=special_tokens, backend=backend)

    @classmethod
    def fit(cls, text: str, vocab_size: int = 512, special_tokens: Sequence[str] = (EOT,),
            backend: str = "scratch") -> BPETokenizer:
        return cls.train(text, vocab_size, special_tokens, backend)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str], vocab_size: int = 512, special_tokens: Sequence[str] = (EOT,),
                   backend: str = "scratch") -> BPETokenizer:
        """Train on text given piece by piece (chunks should be cut with `safe_cut`). Special
        tokens in the text are cut out before counting: no merge crosses into them."""
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise LmlibError(f"vocab_size must be an integer, got {vocab_size!r}")
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise LmlibError(f"a byte-level BPE vocabulary holds the 256 bytes and {len(special_tokens)} special "
                             f"token(s): vocab_size must be at least {256 + len(special_tokens)}, got {vocab_size}")
        if backend not in BACKENDS:
            raise LmlibError(f"unknown BPE backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if backend == "fast":
            word_counts, train = bpe_fast.count_pieces(chunks, special_tokens), bpe_fast.train_merges
        else:
            word_counts, train = count_pieces(chunks, special_tokens), train_merges
        if not word_counts:
            raise LmlibError("cannot train a BPE tokenizer on empty text; give it some text")
        return cls(train(word_counts, n_merges), special_tokens, PATTERN, backend)

    # ---- encoding and decoding -----------------------------------------------------------------
    def encode_array(self, text: str, allowed_special: str | Collection[str] = ()) -> np.ndarray:
        check_encodable(text)  # one clear error for both backends (tiktoken would write U+FFFD)
        return super().encode_array(text, allowed_special)

    def encode_iterable(self, texts: Iterable[str], allowed_special: str | Collection[str] = ()) -> Iterator[int]:
        """Ids of the concatenated ``texts`` (e.g. the lines of a file), yielded lazily: the
        same ids as encoding the whole text at once, in memory that does not grow with it:
        about 64K characters are held, then encoded up to their last `safe_cut` (a stretch
        without whitespace is held whole; a special token holding whitespace must not be
        split across two of ``texts``)."""
        allowed = self._allowed(allowed_special)
        parts: list[str] = []
        size = 0
        for t in texts:
            parts.append(t)
            size += len(t)
            if size < 1 << 16:
                continue
            buf = "".join(parts)
            k = safe_cut(buf)
            while k and any(buf.startswith(s, k + 1) for s in allowed):  # a special ends a run like end of text
                k = safe_cut(buf[:k])
            if k:
                yield from self.encode_array(buf[:k], allowed).tolist()
                buf = buf[k:]
            parts, size = [buf], len(buf)
        if size:
            yield from self.encode_array("".join(parts), allowed).tolist()

    def _encode_ordinary(self, text: str) -> np.ndarray:
        if self.backend == "fast" and (enc := self._fast_encoder()) is not None:
            ids = bpe_fast.encode(enc, text)
        elif len(text) > 1 << 22 and len(chunks := cut_text(text, 1 << 20)) > 1:
            # A big text in chunks, so that the list of its pieces stays small.
            return np.concatenate([self._encode_ordinary(c) for c in chunks])
        else:
            ids = self._encode_scratch(text)
        return ids if self._to_ext is None else self._to_ext[ids]

    def _encode_scratch(self, text: str) -> np.ndarray:
        # 1. Pre-split with the regular expression.
        pieces = self._regex.findall(text)
        if not pieces:
            return np.zeros(0, np.int32)
        # 2. Encode each *distinct* piece once: a text of a million pieces has a few thousand.
        index = dict.fromkeys(pieces)
        known = {p: self._cache.get(p) for p in index}
        missing = [p for p, t in known.items() if t is None]
        if missing:
            encoded = self._encode_pieces(missing)
            known.update(zip(missing, encoded))
            self._remember(missing, encoded)  # may empty the cache: `known` keeps this text's pieces
        toks = list(known.values())
        for i, p in enumerate(index):
            index[p] = i
        # 3. Lay the pieces' token lists end to end, in numpy (no Python loop over the pieces).
        which = np.array(list(map(index.__getitem__, pieces)), dtype=np.int64)
        lens = np.array([len(t) for t in toks], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(toks), dtype=np.int32, count=int(lens.sum()))
        ends = np.cumsum(lens)
        n = lens[which]
        out_ends = np.cumsum(n)
        return flat[np.repeat(ends[which] - out_ends, n) + np.arange(out_ends[-1])]

    def _encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        return [encode_piece(p.encode("utf-8"), self.ranks) for p in pieces]

    def _remember(self, pieces: list[str], toks: list[list[int]]) -> None:
        if len(self._cache) + len(pieces) > self.cache_limit:  # a bound on memory for huge corpora
            self._cache.clear()
        self._cache.update(zip(pieces, toks))

    def _fast_encoder(self) -> Any:
        """tiktoken's encoder for these merges, built once (None where it cannot be used)."""
        if not self._fast_built:
            self._fast, self._fast_built = bpe_fast.encoder(self._bytes, self.pattern), True
        return self._fast

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Ids to text. Ids cut from the middle of a sequence may split a character's
        bytes; such partial characters decode as U+FFFD (the replacement character)."""
        arr = self._check_ids(ids)
        tb = self.token_bytes + [s.encode("utf-8") for s in self.special_tokens]
        step = 1 << 20  # a million ids at a time, so a big text never becomes one huge list of ints
        out = b"".join(b"".join(map(tb.__getitem__, arr[i:i + step].tolist())) for i in range(0, len(arr), step))
        return out.decode("utf-8", errors="replace")

    def token_text(self, i: int) -> str:
        """A token as readable text (its bytes decoded, partial characters as U+FFFD)."""
        return self.decode([i])

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "vocab": list(self.vocab), "merges": [list(m) for m in self.merges],
             "special_tokens": list(self.special_tokens), "pattern": self.pattern, "backend": self.backend}
        if self._to_ext is not None:
            d["ids"] = self._to_ext.tolist()
        return d

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        merges, special = d.get("merges"), d.get("special_tokens", [])
        if (not isinstance(merges, list) or not all(isinstance(m, list) and len(m) == 2 for m in merges)
                or not isinstance(special, list)):
            raise LmlibError("a bpe tokenizer needs 'merges' (a list of id pairs) and 'special_tokens'; "
                             "re-save the tokenizer")
        tok = cls(merges, special, d.get("pattern", PATTERN), d.get("backend", "scratch"), d.get("ids"))
        if tok.vocab != d["vocab"]:
            raise LmlibError("the bpe tokenizer's 'vocab' does not match its merges; the file is corrupt, re-save it")
        return tok

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, backend={self.backend!r})"
