"""BPE interop (lmlib.bpe_formats): GPT-2's encoder.json + vocab.bpe, Hugging Face tokenizer.json."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
import tiktoken
import tokenizers
from tiktoken_ext.openai_public import r50k_pat_str

from lmlib.bpe import EOT, BPETokenizer
from lmlib.bpe_formats import (
    from_gpt2_files,
    from_tokenizer_json,
    from_vocab_and_merges,
    save_tokenizer_json,
    to_tokenizer_json,
)
from lmlib.errors import LmlibError
from lmlib.pretokenize import bytes_to_unicode

FIXTURE = Path(__file__).parent / "fixtures" / "gpt2" / "gpt2.tiktoken.gz"
TEXT = ("Hello world! It's 2024, isn't it?\r\n\r\n    def f(x):\n\treturn x²  # Ⅻ\n"
        "Ελληνικά κείμενα. Русский текст. हिन्दी पाठ। 日本語のテキスト、中文。한국어 😀👍🏽👩‍👩‍👧 "
        "e\u0301 ñ café naïve <|endoftext|> end.\n") * 3


@pytest.fixture(scope="module")
def gpt2_ranks() -> dict[bytes, int]:
    lines = gzip.decompress(FIXTURE.read_bytes()).decode().split()
    return {base64.b64decode(tok): int(rank) for tok, rank in zip(lines[::2], lines[1::2])}


def gpt2_files(ranks: dict[bytes, int], out: Path) -> tuple[Path, Path]:
    """GPT-2's encoder.json and vocab.bpe from its ranks: each token of rank r >= 256 is the
    merge of the two parts that BPE with the ranks below r leaves of its bytes."""
    to_str = bytes_to_unicode()

    def name(b: bytes) -> str:
        return "".join(to_str[c] for c in b)

    merges = []
    for token in sorted(ranks, key=ranks.__getitem__):
        if len(token) == 1:
            continue
        parts = [bytes([c]) for c in token]
        while len(parts) > 2:
            i = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 30))
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merges.append(f"{name(parts[0])} {name(parts[1])}")
    encoder = {name(t): r for t, r in ranks.items()} | {EOT: len(ranks)}
    (out / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (out / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out / "encoder.json", out / "vocab.bpe"


def test_gpt2_from_encoder_json_and_vocab_bpe_gives_tiktokens_ids(tmp_path, gpt2_ranks):
    enc = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=gpt2_ranks, special_tokens={EOT: 50256})
    tok = from_gpt2_files(*gpt2_files(gpt2_ranks, tmp_path))
    assert tok.vocab_size == 50257 and tok.special_ids == {EOT: 50256}
    assert tok.encode(TEXT) == enc.encode_ordinary(TEXT)
    assert tok.encode(TEXT, allowed_special="all") == enc.encode(TEXT, allowed_special="all")
    assert tok.encode("!") == [0] and tok.decode(enc.encode(TEXT, allowed_special="all")) == TEXT
    scratch = BPETokenizer(tok.merges, tok.special_tokens, ids=tok._to_ext.tolist())  # the Python encoder agrees
    assert scratch.encode(TEXT) == enc.encode_ordinary(TEXT)
    # saved and loaded as lmlib JSON, and as tokenizer.json: the same ids
    tok.save(tmp_path / "gpt2.json")
    assert BPETokenizer.load(tmp_path / "gpt2.json").encode(TEXT) == enc.encode_ordinary(TEXT)
    save_tokenizer_json(tok, tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(TEXT).ids == enc.encode(TEXT, allowed_special="all")
    assert from_tokenizer_json(tmp_path / "tokenizer.json").encode(TEXT) == enc.encode_ordinary(TEXT)


def test_lmlibs_tokenizer_json_loads_in_tokenizers_and_encodes_identically(tmp_path):
    tok = BPETokenizer.train(TEXT * 5, 256 + 80 + 2, special_tokens=[EOT, "<|user|>"])
    path = save_tokenizer_json(tok, tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(path))
    text = TEXT + "<|user|>hi<|endoftext|>"
    assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
    assert hf.get_vocab_size() == tok.vocab_size
    assert hf.decode(tok.encode(text, allowed_special="all"), skip_special_tokens=False) == text
    assert to_tokenizer_json(tok)["added_tokens"][1] == {**to_tokenizer_json(tok)["added_tokens"][1],
                                                        "id": tok.special_ids["<|user|>"], "special": True}


def test_vocabulary_and_merges_that_do_not_match_are_refused():
    with pytest.raises(LmlibError, match="no earlier merge made"):
        from_vocab_and_merges({}, [("ab", "c")])
    vocab = {bytes_to_unicode()[b]: b for b in range(256)}
    with pytest.raises(LmlibError, match="has no token"):
        from_vocab_and_merges(vocab, [("a", "b")])
    with pytest.raises(LmlibError, match="right after the merges"):
        from_vocab_and_merges({**vocab, "ab": 256, EOT: 300}, [("a", "b")], [EOT])
