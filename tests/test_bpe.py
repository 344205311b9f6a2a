"""Byte-level BPE (lmlib.bpe): exact round trips, both backends, files, checkpoints, CLI, bits per byte."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from lmlib.bpe import EOT, BPETokenizer, merge_pair, pair_counts, pre_split, safe_cut, train_merges
from lmlib.errors import LmlibError
from lmlib.tokenizers import load_tokenizer, tokenizer_class, tokenizer_from_dict

TRAIN_TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
              "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 20

# Code point ranges for random text: ASCII, controls, Latin with combining marks, Greek,
# Cyrillic, Arabic, Devanagari, Ethiopic, CJK, Hangul, emoji (with skin tones and ZWJ).
RANGES = [(0x00, 0x7F), (0x80, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF),
          (0x900, 0x97F), (0x1200, 0x137F), (0x2000, 0x206F), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0x1F300, 0x1F6FF), (0x1F3FB, 0x1F3FF), (0x200D, 0x200D), (0xFE0F, 0xFE0F), (0x10000, 0x10FFFF)]


def random_text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        lo, hi = rng.choice(RANGES)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:  # surrogates are not UTF-8 text
            c = 0xFFFD
        out.append(chr(c))
        if rng.random() < 0.2:
            out.append(rng.choice([" ", "\n", "  ", "\t", "'s", "123"]))
    return "".join(out)


@pytest.fixture(scope="module")
def scratch() -> BPETokenizer:
    return BPETokenizer.train(TRAIN_TEXT, 256 + 60 + 1)


@pytest.fixture(scope="module")
def fast() -> BPETokenizer:
    return BPETokenizer.train(TRAIN_TEXT, 256 + 60 + 1, backend="fast")


def test_the_readable_pieces():
    assert pre_split("Hello world, it's 2024!\n\n  ok") == ["Hello", " world", ",", " it", "'s", " 2024", "!",
                                                            "\n\n ", " ok"]
    assert pair_counts({(1, 2, 1, 2): 3}) == {(1, 2): 6, (2, 1): 3}
    assert merge_pair((1, 2, 1, 2, 2), (1, 2), 9) == (9, 9, 2)
    assert merge_pair((5, 5, 5), (5, 5), 9) == (9, 5)  # left to right, no overlap
    merges = train_merges({"aaab": 5, "ab": 2}, 10)
    assert merges[0] == (97, 97) and all(a < 256 + k and b < 256 + k for k, (a, b) in enumerate(merges))


def test_training_learns_frequent_words_and_respects_word_boundaries(scratch):
    assert scratch.vocab_size == 256 + 60 + 1 and len(scratch.merges) == 60
    texts = [scratch.token_text(i) for i in range(256, 256 + len(scratch.merges))]
    assert " speak" in texts or " Citizen" in texts
    # a merged token never holds a space in its middle: merges stop at the pre-split's word boundaries
    assert not any(" " in t.strip(" ") for t in texts if t.strip())
    assert scratch.vocab[-1] == EOT and scratch.special_ids[EOT] == scratch.vocab_size - 1


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_is_exact_for_any_text(scratch, fast, seed):
    rng = random.Random(seed)
    for _ in range(25):
        text = random_text(rng, rng.randint(0, 200))
        for tok in (scratch, fast):
            ids = tok.encode(text)
            assert tok.decode(ids) == text
            assert all(0 <= i < tok.vocab_size - 1 for i in ids)  # ordinary text never makes a special token
        assert scratch.encode(text) == BPETokenizer(scratch.merges, backend="fast").encode(text)


def test_hand_picked_hard_cases(scratch, fast):
    cases = ["", " ", "\n", "\x00", "e\u0301\u0302", "👩‍👩‍👧‍👦👍🏽", "日本語のテキスト", "ሰላም ለዓለም", "a_b__c",
             "\r\n\t\x0b\x0c", "x" * 5000, "'s'S'll'LL", "½²³ ٣٤ Ⅻ", EOT, "<|endoftext", "\U0010FFFF"]
    for tok in (scratch, fast):
        for text in cases:
            assert tok.decode(tok.encode(text)) == text, (tok.backend, text)


def test_special_tokens_only_when_allowed(scratch):
    text = f"one{EOT}two"
    plain = scratch.encode(text)
    assert scratch.special_ids[EOT] not in plain
    special = scratch.encode(text, allowed_special="all")
    assert special.count(scratch.special_ids[EOT]) == 1 and scratch.decode(special) == text
    docs = scratch.encode_documents(["a", "b"])
    assert docs.tolist() == scratch.encode("a") + [scratch.special_ids[EOT]] + scratch.encode("b") + [
        scratch.special_ids[EOT]]


def test_decode_of_a_cut_character_is_a_replacement_not_an_error(scratch):
    ids = scratch.encode("é")
    assert len(ids) == 2 and scratch.decode(ids[:1]) == "\ufffd"


def test_both_backends_agree_on_plain_text(scratch, fast):
    ids = scratch.encode_array(TRAIN_TEXT)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32
    assert BPETokenizer(scratch.merges, backend="fast").encode_array(TRAIN_TEXT).tolist() == ids.tolist()
    assert len(ids) < len(TRAIN_TEXT) / 2  # merges compress
    assert len(fast.encode(TRAIN_TEXT)) < len(TRAIN_TEXT) / 2


def test_fast_encoder_is_used_and_agrees_with_scratch(scratch):
    fast = BPETokenizer(scratch.merges, backend="fast")
    assert fast._fast_encoder() is not None  # the tiktoken path really runs
    from test_pretokenize import one_per_class

    text = TRAIN_TEXT + "".join(one_per_class())
    assert fast.encode(text) == scratch.encode(text)


def test_fast_encoder_in_threaded_chunks_equals_one_piece(fast):
    from lmlib import bpe_fast

    text = TRAIN_TEXT * 30
    enc = fast._fast_encoder()
    whole = bpe_fast.encode(enc, text, threads=1, chunk_chars=len(text) + 1)
    chunked = bpe_fast.encode(enc, text, threads=2, chunk_chars=300)
    assert chunked.dtype == np.int32 and chunked.tolist() == whole.tolist()
    assert fast.decode(chunked) == text


def test_a_big_text_is_encoded_in_chunks_with_the_same_ids(scratch):
    from lmlib.bpe import cut_text

    text = TRAIN_TEXT * 5
    chunks = cut_text(text, 1000)
    assert len(chunks) > 5 and "".join(chunks) == text and all(len(c) <= 1000 for c in chunks)
    assert np.concatenate([scratch.encode_array(c) for c in chunks]).tolist() == scratch.encode(text)
    assert cut_text("nospace" * 200, 100) == ["nospace" * 200]  # no safe place: whole


def test_merges_that_build_the_same_bytes_twice_fall_back_to_python():
    # "abc" is built twice, as (ab, c) and (a, bc): tiktoken cannot hold two tokens with one text.
    merges = [(97, 98), (98, 99), (256, 99), (97, 257)]
    fast, scratch = BPETokenizer(merges, backend="fast"), BPETokenizer(merges)
    assert fast._fast_encoder() is None
    for text in ["abc", "xbcabcab c", "aabbcc"]:
        assert fast.encode(text) == scratch.encode(text) and fast.decode(fast.encode(text)) == text


def test_a_full_piece_cache_is_emptied_without_losing_the_text_being_encoded(scratch):
    tok = BPETokenizer(scratch.merges)
    tok.cache_limit = 5  # far fewer than the distinct pieces of one text
    first = tok.encode(TRAIN_TEXT)
    assert len(tok._cache) <= len(set(pre_split(TRAIN_TEXT)))
    assert tok.encode(TRAIN_TEXT) == first == scratch.encode(TRAIN_TEXT)


def test_safe_cut_keeps_the_pre_split():
    text = "ab cd\r\nEf gh\r\n\r\n    ij"
    k = safe_cut(text)
    assert text[k:] == " ij" and pre_split(text[:k]) + pre_split(text[k:]) == pre_split(text)
    assert safe_cut("nowhitespace") == 0 and safe_cut(" x") == 0


def test_json_round_trip_and_refusals(tmp_path, scratch, fast):
    for tok in (scratch, fast):
        path = tmp_path / f"{tok.backend}.json"
        tok.save(path)
        back = load_tokenizer(path)
        assert back == tok and back.backend == tok.backend and back.encode(TRAIN_TEXT) == tok.encode(TRAIN_TEXT)
    assert tokenizer_class("bpe") is BPETokenizer
    d = scratch.to_dict()
    with pytest.raises(LmlibError, match="does not match its merges"):
        tokenizer_from_dict({**d, "vocab": d["vocab"][:-2] + ["x", d["vocab"][-1]]})
    with pytest.raises(LmlibError, match="not made yet"):
        tokenizer_from_dict({**d, "merges": [[0, 999]]})
    with pytest.raises(LmlibError, match="at least 257"):
        BPETokenizer.train("abc", 100)
    with pytest.raises(LmlibError, match="backend"):
        BPETokenizer.train("abc", 300, backend="turbo")


def test_token_file_records_the_tokenizer_and_bytes(tmp_path):
    from lmlib.data import load_token_file, prepare_text, tokenize_file, tokens_per_byte

    src = tmp_path / "play.txt"
    src.write_text(TRAIN_TEXT + "Ünïcödé 🎭\n", encoding="utf-8")
    big = tokenize_file(src, tmp_path / "one", kind="bpe", vocab_size=300)
    small = tokenize_file(src, tmp_path / "many", tokenizer=big.tokenizer, chunk_bytes=64)  # chunked: same ids
    assert np.array_equal(big.tokens, small.tokens)
    assert big.tokenizer.decode(big.tokens) == src.read_text(encoding="utf-8")
    tf = load_token_file(tmp_path / "one.bin")
    assert tf.meta["tokenizer"]["kind"] == "bpe" and tf.meta["source_bytes"] == src.stat().st_size
    data = prepare_text(src, kind="bpe", vocab_size=300, cache_dir=tmp_path / "cache", val_fraction=0.0)
    assert tokens_per_byte(data) == pytest.approx(len(data.train) / src.stat().st_size)
    with pytest.raises(LmlibError, match="vocab_size is for a bpe"):
        tokenize_file(src, tmp_path / "x", kind="char", vocab_size=300)


def test_bits_per_byte():
    from lmlib.metrics import bits_per_byte, with_bits_per_byte

    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(2.0, 0.25) == pytest.approx(0.5 / math.log(2))
    assert bits_per_byte(None, 0.5) is None and bits_per_byte(1.0, None) is None
    m = {"config": {"data": {"tokens_per_byte": 0.5}}, "steps": [1, 2], "val_loss": [None, 2.0], "x": 1}
    out = with_bits_per_byte(m)
    assert list(out) == ["config", "steps", "val_loss", "val_bits_per_byte", "x"]
    assert out["val_bits_per_byte"] == [None, pytest.approx(1 / math.log(2))]
    assert with_bits_per_byte({"config": {"data": {}}, "val_loss": [1.0]}) == {"config": {"data": {}}, "val_loss": [1.0]}


def test_cli_train_report_evaluate_generate_with_bpe(tmp_path, capsys, monkeypatch):
    from lmlib.cli import main

    monkeypatch.setenv("LMLIB_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "play.txt"
    src.write_text(TRAIN_TEXT, encoding="utf-8")
    out = tmp_path / "run"
    flags = ["--max-steps", "4", "--eval-interval", "2", "--eval-batches", "1", "--n-layer", "1", "--n-embd", "16",
             "--n-head", "2", "--block-size", "16", "--batch-size", "4", "--no-progress", "--out-dir", str(out)]
    assert main(["train", str(src), "--tokenizer", "bpe", "--vocab-size", "300", *flags]) == 0
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert metrics["config"]["data"]["tokenizer"] == "bpe" and metrics["config"]["data"]["vocab_size"] == 300
    tpb = metrics["config"]["data"]["tokens_per_byte"]
    assert 0 < tpb < 1
    assert metrics["val_bits_per_byte"][-1] == pytest.approx(metrics["val_loss"][-1] * tpb / math.log(2))
    assert {p.name for p in out.iterdir()} >= {"training_metrics.json", "training_curve.png", "loss_by_epoch.png"}
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "val bits per byte" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--data", str(src)]) == 0
    assert "bits per byte" in capsys.readouterr().out
    assert main(["generate", str(out), "--max-new-tokens", "10", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
    # a char token file is refused, with both tokenizers named
    assert main(["tokenize", str(src), "--out", str(tmp_path / "chars")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(tmp_path / "chars.bin")]) == 2
    assert "char tokenizer" in capsys.readouterr().err
    assert main(["tokenize", str(src), "--tokenizer", "bpe", "--vocab-size", "280", "--out", str(tmp_path / "b")]) == 0
    assert "vocabulary 280" in capsys.readouterr().out
    assert main(["train", str(src), "--vocab-size", "300", *flags]) == 2
