"""GPT-2's pre-split (lmlib.pretokenize): one pattern, the same cuts in all three engines, safe chunk cuts."""

from __future__ import annotations

import random
import unicodedata

import regex
import tiktoken
import tokenizers
from tiktoken_ext.openai_public import r50k_pat_str

from lmlib.pretokenize import PATTERN, cut_text, pre_split, safe_cut

CONTEXTS = ["{}", "a{}", "{}a", " {}", "{} ", "1{}", "{}1", "_{}", "'{}", "{}{}", " {}a", " {} ", "\n{}", "{}\n",
            "  {}", "{}.", "{}  x", "é{}", "{}\x1c", "\xa0{}", "\r\n{}", "{}\u0301", "'s{}", "{}'ll"]


def one_per_class() -> list[str]:
    """Every Latin-1 character, then up to 4 code points of every Unicode general category
    (assigned in this Python's Unicode version, which the three engines all know), spread over it."""
    by_cat: dict[str, list[str]] = {}
    for c in map(chr, range(256, 0x110000)):
        by_cat.setdefault(unicodedata.category(c), []).append(c)
    out = [chr(c) for c in range(256)]
    for cat, chars in sorted(by_cat.items()):
        if cat not in ("Cn", "Cs"):  # unassigned (engines know different Unicode versions), surrogates
            out += chars[::max(1, len(chars) // 4)][:4]
    return out


def tiktoken_pieces(pattern: str, texts: list[str]) -> list[list[bytes]]:
    """tiktoken's pieces: give it every expected piece as a token; a piece that is a whole
    token comes back as that one id, so the ids spell out where tiktoken cut."""
    ranks = {bytes([b]): b for b in range(256)}
    for p in sorted({p.encode() for t in texts for p in pre_split(t)}, key=len):
        ranks.setdefault(p, len(ranks))
    enc = tiktoken.Encoding("pieces", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    token = {i: b for b, i in ranks.items()}
    return [[token[i] for i in ids] for ids in enc.encode_ordinary_batch(texts, num_threads=1)]


def test_the_pattern_is_gpt2s():
    assert PATTERN == r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    assert pre_split("Hello world, it's 2024!\n\n  ok ²Ⅻ") == ["Hello", " world", ",", " it", "'s", " 2024", "!",
                                                                "\n\n ", " ok", " ²Ⅻ"]


def test_three_engines_cut_every_unicode_category_as_gpt2_does():
    texts = [ctx.format(c, c) for c in one_per_class() for ctx in CONTEXTS]
    ours = [[p.encode() for p in pre_split(t)] for t in texts]
    hf = tokenizers.pre_tokenizers.Split(tokenizers.Regex(PATTERN), behavior="isolated")
    assert [[p.encode() for p, _ in hf.pre_tokenize_str(t)] for t in texts] == ours  # Oniguruma
    assert tiktoken_pieces(PATTERN, texts) == ours  # Rust regex
    assert tiktoken_pieces(r50k_pat_str, texts) == ours  # GPT-2's pattern as tiktoken ships it


def test_number_classes_are_numbers_as_in_gpt2():
    assert pre_split("x²") == ["x", "²"] and pre_split("aⅫb") == ["a", "Ⅻ", "b"]  # No, Nl: numbers, not letters


def test_safe_cut_on_crlf_blank_lines_and_indentation():
    for text in ["a\r\nb", "para one.\n\npara two", "def f():\n    return 1", "x \u00a0 y", "tab\t\tz"]:
        k = safe_cut(text)
        assert k > 0 and pre_split(text[:k]) + pre_split(text[k:]) == pre_split(text), text
    assert safe_cut("nowhitespace") == 0 and safe_cut(" x") == 0 and safe_cut("trailing  ") == 0


def test_chunks_pre_split_like_the_whole_text_on_random_texts():
    rng = random.Random(0)
    alphabet = ["\r", "\n", "\r\n", " ", "  ", "\t", "\xa0", "\u0301", "'s", "'ll", "'", "1", "23", "a", "bc", "Δ",
                "हि", "😀", "👍🏽", ".", "_", "\x1c", "²"]
    for _ in range(30_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        k = safe_cut(text)
        assert k == 0 or pre_split(text[:k]) + pre_split(text[k:]) == pre_split(text), repr(text)
        chunks = cut_text(text, rng.randint(1, 8))
        assert "".join(chunks) == text
        assert [p for c in chunks for p in pre_split(c)] == pre_split(text), repr(text)


def test_a_crlf_text_is_cut_into_many_bounded_chunks():
    text = "Some words here, and more.\r\n\r\n    indented line\r\n" * 50_000  # about 2.5 MB, Gutenberg style
    chunks = cut_text(text, 1 << 16)
    assert "".join(chunks) == text and len(chunks) > 30 and max(map(len, chunks)) <= 1 << 16
    assert regex.compile(PATTERN).findall(text[:5000]) == [p for c in cut_text(text[:5000], 100) for p in pre_split(c)]
