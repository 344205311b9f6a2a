import json

import numpy as np
import pytest

from lmlib.errors import LmlibError, UnknownSymbolError
from lmlib.tokenizers import (
    UNK,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
    split_words,
    tokenizer_class,
    tokenizer_from_dict,
)

PLAY = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def test_char_fit_is_sorted_and_round_trips():
    tok = CharTokenizer.fit("hello world")
    assert tok.vocab == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    ids = tok.encode("hello")
    assert ids == [3, 2, 4, 4, 5]
    assert tok.decode(ids) == "hello"
    assert tok.encode_array("hello").tolist() == ids


def test_char_non_ascii_round_trip_and_fast_path_agree():
    text = "héllo wörld 中文 😀\n" + PLAY
    tok = CharTokenizer.fit(text)
    assert tok.decode(tok.encode_array(text)) == text
    # The ASCII fast path must give the same ids as the general UTF-32 path.
    ascii_part = PLAY
    general = tok.encode_array(ascii_part + "é")[:-1]
    assert np.array_equal(tok.encode_array(ascii_part), general)
    assert tok.encode_array(ascii_part).dtype == np.int32


def test_char_fit_chunks_equals_fit():
    text = "abc 中文 xyz\nq"
    assert CharTokenizer.fit_chunks([text[:3], text[3:7], text[7:]]) == CharTokenizer.fit(text)


@pytest.mark.parametrize("text, pos", [("heZlo", 2), ("hé Z", 3)])
def test_char_unknown_symbol_names_symbol_and_position(text, pos):
    tok = CharTokenizer.fit("hello é")
    with pytest.raises(UnknownSymbolError, match=f"unknown character 'Z' at position {pos};.*vocabulary of 6 symbols"):
        tok.encode(text)
    try:
        tok.encode_array(text)
    except UnknownSymbolError as e:
        assert isinstance(e, LmlibError) and e.symbol == "Z" and e.position == pos


def test_decode_rejects_out_of_range_ids():
    tok = CharTokenizer.fit("ab")
    with pytest.raises(LmlibError, match="token id 5 is out of range"):
        tok.decode([0, 5])
    assert tok.decode([]) == ""


def test_fit_on_empty_text_fails():
    with pytest.raises(LmlibError, match="empty"):
        CharTokenizer.fit("")
    with pytest.raises(LmlibError):
        WordTokenizer.fit("   ")


def test_split_words_keeps_punctuation_and_newlines():
    assert split_words("Hello, world.\nBye!") == ["Hello", ",", "world", ".", "\n", "Bye", "!"]


def test_word_decode_reads_naturally():
    tok = WordTokenizer.fit("hello world . the cat sat on the mat .")
    assert tok.decode(tok.encode("hello world .")) == "hello world."
    assert tok.decode(tok.encode("hello world . the cat sat .")) == "hello world. the cat sat."


def test_word_round_trips_play_text():
    tok = WordTokenizer.fit(PLAY)
    assert "\n" in tok.vocab
    assert tok.decode(tok.encode(PLAY)) == PLAY


def test_word_lowercase_option():
    assert WordTokenizer.fit("The the THE").vocab == ["THE", "The", "the"]
    tok = WordTokenizer.fit("The the THE", lowercase=True)
    assert tok.vocab == ["the"]
    assert tok.encode("ThE") == [0]


def test_word_unknown_raises_by_default_and_maps_to_unk_when_asked():
    tok = WordTokenizer.fit("the cat sat")
    with pytest.raises(UnknownSymbolError, match=r"unknown word 'dog' at position 4 \(token 1\)"):
        tok.encode("the dog sat")
    tok = WordTokenizer.fit("the cat sat", unk=True)
    assert UNK in tok.vocab
    assert tok.encode("the dog sat") == [tok.stoi["the"], tok.unk_id, tok.stoi["sat"]]


@pytest.mark.parametrize("tok", [CharTokenizer.fit(PLAY.lower()), WordTokenizer.fit(PLAY, lowercase=True, unk=True)])
def test_save_load_round_trip(tmp_path, tok):
    path = tmp_path / "tok.json"
    tok.save(path)
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["kind"] == tok.kind and d["vocab"] == tok.vocab
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded == tok
    assert loaded.encode(PLAY.lower()) == tok.encode(PLAY.lower())
    assert type(tok).load(path) == tok


def test_bad_tokenizer_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(LmlibError, match="not valid JSON"):
        load_tokenizer(bad)
    with pytest.raises(LmlibError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(LmlibError, match="unknown tokenizer kind 'unigram'"):
        tokenizer_from_dict({"kind": "unigram", "vocab": ["a"]})
    with pytest.raises(LmlibError, match="'kind' and 'vocab'"):
        tokenizer_from_dict(["a"])
    with pytest.raises(LmlibError, match="single characters"):
        tokenizer_from_dict({"kind": "char", "vocab": ["ab"]})
    with pytest.raises(LmlibError, match="duplicate"):
        tokenizer_from_dict({"kind": "word", "vocab": ["a", "a"]})
    with pytest.raises(LmlibError, match="expected a char tokenizer"):
        CharTokenizer.from_dict(WordTokenizer.fit("a b").to_dict())
    assert tokenizer_class("word") is WordTokenizer


@pytest.mark.parametrize("n_before", [0, 2, 300])
def test_char_unsorted_vocabulary_encodes_and_decodes_by_position(n_before):
    # A vocabulary need not be sorted (a saved file, a hand-made list): ids are positions.
    # With more than 256 symbols ahead of the ASCII ones, their ids no longer fit the byte table.
    vocab = [chr(0x4E00 + i) for i in range(n_before)] + ["z", "b", "\n", "a", "é", " "]
    tok = tokenizer_from_dict({"kind": "char", "vocab": vocab})
    assert tok.encode("ab z\n") == [n_before + 3, n_before + 1, n_before + 5, n_before, n_before + 2]
    for text in ("ab z\n", "é a", vocab[0] + "ba" if n_before else "ba"):
        ids = tok.encode_array(text)
        assert [vocab[i] for i in ids] == list(text)
        assert tok.decode(ids) == text
    with pytest.raises(UnknownSymbolError, match="unknown character 'q' at position 1"):
        tok.encode("aq")
    assert load_tokenizer_round_trip(tok) == tok


def load_tokenizer_round_trip(tok):
    return tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer])
def test_special_tokens_are_opt_in_for_char_and_word_tokenizers(cls, tmp_path):
    eot, user = "<|endoftext|>", "<|user|>"
    text = f"hello world{eot}bye now"
    plain = cls.fit("hello world bye now")
    assert plain.special_tokens == [] and "special_tokens" not in plain.to_dict()  # default: as always
    tok = cls.fit(text, special_tokens=[eot, user])
    assert tok.ordinary_vocab == plain.ordinary_vocab  # the specials' characters are not learned from them
    assert tok.vocab[-2:] == [eot, user] and tok.special_ids == {eot: tok.vocab_size - 2, user: tok.vocab_size - 1}
    ids = tok.encode(f"{user}hello{eot}", allowed_special="all")
    assert ids[0] == tok.special_ids[user] and ids[-1] == tok.special_ids[eot]
    assert tok.decode(ids).replace(" ", "") == f"{user}hello{eot}"
    with pytest.raises(LmlibError):
        tok.encode(eot)  # not allowed: ordinary text, whose symbols this vocabulary lacks
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json") == tok
    assert plain.with_special_tokens([eot]).encode_documents(["hello", "bye"]).tolist()[-1] == plain.vocab_size


def test_save_goes_through_fsutil(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    CharTokenizer.fit(PLAY).save(tmp_path / "tok.json")  # written to a temporary file, fsynced, renamed
    assert len(synced) == 2 and load_tokenizer(tmp_path / "tok.json") == CharTokenizer.fit(PLAY)
