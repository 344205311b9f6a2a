"""BPE on real-world text (lmlib.bpe): scripts with marks, tie-breaking, special tokens, streaming, bad input."""

from __future__ import annotations

import random
import tracemalloc
import unicodedata
from collections import Counter

import numpy as np
import pytest

from lmlib.bpe import EOT, BPETokenizer, pre_split, train_merges
from lmlib.errors import LmlibError

WORDS = {
    "hindi": ["हिन्दी", "भाषा", "किताब", "पानी", "दुनिया", "सरकार", "विद्यालय", "प्रेम", "समाचार", "जीवन"],
    "greek": ["Ελληνικά", "γλώσσα", "βιβλίο", "νερό", "κόσμος", "ἄνθρωπος", "ὕδωρ", "ψυχή", "λόγος", "ἀρετή"],
    "cjk": ["日本語", "中文", "テキスト", "한국어", "東京", "北京", "ひらがな", "漢字", "서울", "文章"],
    "emoji": ["😀", "👍🏽", "👩‍👩‍👧", "🇫🇷", "❤️", "🎉🎉", "🙂", "🔥", "✨", "🚀"],
    "nfd": [unicodedata.normalize("NFD", w) for w in ["café", "naïve", "résumé", "Ångström", "Mañana", "über",
                                                       "façade", "crème", "brûlée", "São"]],
}


def corpus(name: str, n: int = 3000) -> str:
    rng = random.Random(name)
    return "".join(rng.choice(WORDS[name]) + rng.choice([" ", " ", " ", ", ", ".\r\n", "\n\n"]) for _ in range(n))


@pytest.mark.parametrize("name", sorted(WORDS))
def test_both_trainers_learn_the_same_usable_merges_on_every_script(name):
    text = corpus(name)
    scratch = BPETokenizer.train(text, 256 + 60 + 1)
    fast = BPETokenizer.train(text, 256 + 60 + 1, backend="fast")
    assert fast.merges == scratch.merges and len(scratch.merges) >= 40
    pieces = [p.encode() for p in set(pre_split(text))]
    assert all(any(tb in p for p in pieces) for tb in scratch.token_bytes[256:])  # every merge can apply
    ids = scratch.encode(text)
    assert fast.encode(text) == ids and scratch.decode(ids) == text
    assert len(ids) < len(text.encode()) / 2


def reference_merges(word_counts: dict[str, int], n: int) -> list[tuple[bytes, bytes]]:
    """The textbook loop, recounting everything each step; ties: greatest pair of byte strings."""
    words = {tuple(bytes([b]) for b in w.encode()): c for w, c in word_counts.items()}
    out = []
    for _ in range(n):
        counts: Counter = Counter()
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] += c
        if not counts or max(counts.values()) < 2:
            break
        best = max(counts, key=lambda p: (counts[p], p))
        out.append(best)
        new = {}
        for w, c in words.items():
            merged, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(w[i])
                    i += 1
            new[tuple(merged)] = new.get(tuple(merged), 0) + c
        words = new
    return out


def test_ties_go_to_the_lexicographically_greatest_pair_in_both_backends():
    assert train_merges({"ab": 2, "cd": 2}, 1) == [(ord("c"), ord("d"))]
    rng = random.Random(0)
    for _ in range(40):
        text = " ".join("".join(rng.choice("abcé") for _ in range(rng.randint(1, 5))) for _ in range(40))
        want = reference_merges(Counter(pre_split(text)), 15)
        for backend in ("scratch", "fast"):
            tok = BPETokenizer.train(text, 256 + 15 + 1, backend=backend)
            got = [(tok.token_bytes[a], tok.token_bytes[b]) for a, b in tok.merges]
            assert got == want, (backend, text)


@pytest.mark.parametrize("backend", ["scratch", "fast"])
def test_a_lone_surrogate_is_one_clear_error(backend):
    tok = BPETokenizer.train("some text here", 260, backend=backend)
    with pytest.raises(LmlibError, match="lone surrogate"):
        tok.encode("a\ud800b")
    with pytest.raises(LmlibError, match="lone surrogate"):
        BPETokenizer.train("bad \udcff text", 260, backend=backend)


@pytest.mark.parametrize("backend", ["scratch", "fast"])
def test_special_tokens_are_never_merged_and_encode_to_their_ids(backend):
    docs = ["the cat sat", "on the mat", "the end"] * 30
    text = EOT.join(docs)
    double = EOT + EOT
    tok = BPETokenizer.train(text, 256 + 40 + 2, special_tokens=[EOT, double], backend=backend)
    assert not any(b"<|" in tb or b"|>" in tb for tb in tok.token_bytes[256:])  # nothing learned from the specials
    ids = tok.encode(f"a{double}b{EOT}c", allowed_special="all")
    assert ids.count(tok.special_ids[double]) == 1 and ids.count(tok.special_ids[EOT]) == 1  # longest first
    assert tok.decode(ids) == f"a{double}b{EOT}c"
    assert tok.special_ids[EOT] not in tok.encode(text)  # not allowed: ordinary text
    assert tok.encode(EOT, allowed_special={EOT}) == [tok.special_ids[EOT]]
    with pytest.raises(LmlibError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|user|>"})
    chat = tok.with_special_tokens([EOT, "<|user|>", "<|assistant|>"])
    assert chat.merges == tok.merges and chat.encode("<|user|>hi", allowed_special="all")[0] == chat.special_ids[
        "<|user|>"] == 256 + len(tok.merges) + 1


def test_encode_iterable_streams_in_bounded_memory():
    line = "Some words here, and more words.\r\n"
    tok = BPETokenizer.train(line, 300, backend="fast")
    assert list(tok.encode_iterable([line] * 5000)) == tok.encode(line * 5000)

    def peak(n_lines: int) -> int:
        tracemalloc.start()
        n = sum(1 for _ in tok.encode_iterable(line for _ in range(n_lines)))
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n == len(tok.encode_array(line * n_lines))
        return top

    small, big = peak(10_000), peak(40_000)  # 0.34 and 1.4 MB of text, never held at once
    assert big < 1.5 * small and big < 40_000 * len(line), (small, big)


def test_encode_iterable_keeps_ids_across_line_breaks_and_specials():
    rng = random.Random(1)
    tok = BPETokenizer.train(corpus("greek") + corpus("nfd"), 330)
    for _ in range(20):
        lines = [rng.choice(["\r\n", "\n", "  x\n", "a b", EOT, "  ", "Ελληνικά ", "é"]) * rng.randint(1, 3)
                 for _ in range(rng.randint(1, 4000))]
        assert list(tok.encode_iterable(lines, "all")) == tok.encode("".join(lines), "all")
        assert np.array_equal(tok.encode_array("".join(lines)), list(tok.encode_iterable(lines)))


def test_a_crlf_file_is_tokenized_in_many_small_chunks(tmp_path, monkeypatch):
    from lmlib.tokenfile import tokenize_file

    src = tmp_path / "book.txt"
    src.write_bytes(b"Some words here, and more.\r\n\r\n    An indented line\r\n" * 60_000)  # 3.2 MB, Gutenberg style
    tok = BPETokenizer.train("Some words here, and more.\r\n\r\n    An indented line\r\n", 300, backend="fast")
    sizes = []
    encode_array = BPETokenizer.encode_array
    monkeypatch.setattr(BPETokenizer, "encode_array", lambda self, text, *a: sizes.append(len(text)) or
                        encode_array(self, text, *a))
    tf = tokenize_file(src, tmp_path / "book", tokenizer=tok, chunk_bytes=1 << 16)
    assert len(sizes) > 40 and max(sizes) <= 2 << 16  # the old cut (LF between non-spaces only) made one chunk
    assert tf.tokens.tolist() == tok.encode(src.read_bytes().decode())


def test_without_tiktoken_the_fast_backend_falls_back_to_the_same_ids(monkeypatch):
    import sys

    text = corpus("greek", 300)
    want = BPETokenizer.train(text, 300).encode(text)
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as if not installed: import raises ImportError
    tok = BPETokenizer.train(text, 300, backend="fast")
    assert tok._fast_encoder() is None and tok.encode(text) == want
