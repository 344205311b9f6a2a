"""GPT-2's pre-split: the pattern, its safe cut points, and the printable byte table.

Byte-level BPE first cuts text into pieces that merges never cross. The pattern is
GPT-2's, character for character (it is tiktoken's ``r50k_base`` pattern): every BPE
engine lmlib uses runs this one string, the from-scratch code through the ``regex``
package (Python's ``re`` has no ``\\p{L}``), tiktoken through Rust's regex and Hugging
Face ``tokenizers`` through Oniguruma. tests/test_pretokenize.py checks that the three
cut every Unicode general category the same way.

This module imports nothing from lmlib but its errors, so `lmlib.bpe`, `lmlib.bpe_fast`,
`lmlib.tokenizers` and the token-file reader can all use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache

import regex

from lmlib.errors import LmlibError  # (a leaf module: no cycle)

__all__ = ["PATTERN", "bytes_to_unicode", "check_encodable", "cut_text", "pre_split", "safe_cut", "split_special"]

#: GPT-2's pre-split: contractions, a word with an optional space in front, a number, a run
#: of other symbols, whitespace not followed by a non-space (so " word" keeps its space),
#: other whitespace. Every character is a letter, a number, whitespace or other: every
#: character of every text lands in some piece.
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PIECES = regex.compile(PATTERN)
# A whitespace character followed by a non-space, searched from the end ((?r): backwards).
_CUT = regex.compile(r"(?r)\s(?=\S)")
_NEXT_CUT = regex.compile(r"\s(?=\S)")


def split_special(text: str, special_tokens: Collection[str]) -> list[str]:
    """``text`` cut around the special tokens: [text, special, text, special, ..., text]
    (odd positions are specials). Longer specials are matched first, so "<|a|><|a|>" wins
    over "<|a|>" where both are special."""
    if not special_tokens:
        return [text]
    alternation = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
    return regex.split(f"({alternation})", text)


def check_encodable(text: str) -> None:
    """Raise LmlibError if ``text`` cannot be UTF-8 (a lone surrogate, e.g. from a bad decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise LmlibError(f"the text holds {text[e.start]!r} at character {e.start}, a lone surrogate that is not "
                         "Unicode text; decode the source with errors='replace' or fix it") from None


def pre_split(text: str) -> list[str]:
    """Cut text into the pieces that merges may not cross (words, numbers, symbols, spaces)."""
    return _PIECES.findall(text)


def safe_cut(text: str) -> int:
    """The largest k > 0 with ``pre_split(text[:k]) + pre_split(text[k:]) == pre_split(text)``
    guaranteed, 0 if there is none: just before the last whitespace character of a run of
    whitespace followed by a non-space. Why it is safe: a piece never holds whitespace
    followed by a non-space except " x" (one space, then a word, number or symbol), and
    the run's pieces up to that last character end the same whether the text goes on or
    not (``\\s+(?!\\S)`` stops one character before a non-space, as at the end of text).
    Works for LF, CRLF, blank lines and indentation alike."""
    m = _CUT.search(text, 1)
    return m.start() if m else 0


def cut_text(text: str, size: int) -> list[str]:
    """``text`` in chunks of at most about ``size`` characters, each cut at a `safe_cut`, so
    that pre-splitting (and encoding) the chunks one by one gives what the whole text gives.
    A stretch with no safe place to cut (no whitespace at all) stays whole."""
    chunks, start = [], 0
    while len(text) - start > size:
        cut = safe_cut(text[start:start + size])
        if cut == 0:  # one long stretch without a cut: cut at the first place after it
            m = _NEXT_CUT.search(text, start + size)
            if m is None:
                break
            cut = m.start() - start
        chunks.append(text[start:start + cut])
        start += cut
    chunks.append(text[start:])
    return chunks


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: each of the 256 byte values as one printable character.

    Printable ASCII and Latin-1 bytes stand for themselves; the others (control
    characters, space, ...) are shifted to code points 256 and up, so " " is "Ġ"
    and "\\n" is "Ċ". A token's bytes then read as a short, visible string.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
