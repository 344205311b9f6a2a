"""Documents (lmlib.documents): a folder or a JSONL file, <|endoftext|> between documents, CLI, generate's stop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmlib.cli import main
from lmlib.documents import EOT, iter_documents
from lmlib.errors import LmlibError
from lmlib.tokenfile import load_token_file, tokenize_documents

DOCS = ["First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n\r\n",
        "All:\r\nSpeak, speak.\r\n\r\n    First Citizen:\r\nYou are all resolved rather to die than to famish?\r\n",
        "Ελληνικά κείμενα, café e\u0301.\r\n"]
FLAGS = ["--max-steps", "4", "--eval-interval", "2", "--eval-batches", "1", "--n-layer", "1", "--n-embd", "16",
         "--n-head", "2", "--block-size", "16", "--batch-size", "4", "--no-progress"]


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS * 10):
        (d / ("sub" if i % 2 else ".") / f"{i:03d}.txt").write_bytes(doc.encode())
    (d / ".hidden").write_text("not a document")
    return d


def test_a_folder_is_its_files_in_order_and_jsonl_its_records(folder, tmp_path):
    docs = list(iter_documents(folder))
    assert len(docs) == 30 and ".hidden" not in "".join(docs) and docs[0] == DOCS[0]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)) + "\n\n", encoding="utf-8")
    assert list(iter_documents(jl)) == DOCS


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_end_of_text_follows_every_document(folder, tmp_path, kind):
    tf = tokenize_documents(folder, tmp_path / kind, kind=kind, vocab_size=300 if kind == "bpe" else None)
    tok = tf.tokenizer
    eot = tok.special_ids[EOT]
    ends = np.flatnonzero(np.asarray(tf.tokens) == eot)
    assert len(ends) == tf.meta["n_documents"] == 30 and ends[-1] == len(tf.tokens) - 1
    first = tok.decode(tf.tokens[:ends[0]])
    assert first == DOCS[0] if kind != "word" else first.split() == tok.decode(tok.encode(DOCS[0])).split()
    if kind == "char":  # the char vocabulary: the text's characters, then the token
        assert tok.vocab[-1] == EOT and all(len(c) == 1 for c in tok.vocab[:-1])
        assert tf.meta["source_bytes"] == sum(len(d.encode()) for d in DOCS) * 10


def test_a_broken_jsonl_record_names_file_and_line(tmp_path, capsys):
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(LmlibError, match=r"bad.jsonl, line 2: a record needs a \"text\" string"):
        list(iter_documents(jl))
    jl.write_text('{"text": "fine"}\n\n{"text": "cut\n', encoding="utf-8")
    assert main(["tokenize", str(jl)]) == 2
    assert "bad.jsonl, line 3: not valid JSON" in capsys.readouterr().err


def test_cli_trains_bpe_on_a_folder_of_crlf_files_with_bits_per_byte(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", str(folder), "--tokenizer", "bpe", "--vocab-size", "512", *FLAGS, "--out-dir", str(out)]) == 0
    metrics = json.loads((out / "training_metrics.json").read_text())
    data = metrics["config"]["data"]
    assert data["tokenizer"] == "bpe" and 0 < data["tokens_per_byte"] < 1
    assert metrics["val_bits_per_byte"][-1] == pytest.approx(metrics["val_loss"][-1] * data["tokens_per_byte"]
                                                             / math.log(2))
    token_file = next((tmp_path / "cache" / "tokens").glob("*.bin"))
    tf = load_token_file(token_file)
    assert int((np.asarray(tf.tokens) == tf.tokenizer.special_ids[EOT]).sum()) == 30
    assert main(["tokenize", str(folder), "--tokenizer", "char", "--out", str(tmp_path / "c")]) == 0
    assert "-> " in capsys.readouterr().out and load_token_file(tmp_path / "c").tokenizer.vocab[-1] == EOT
    assert main(["generate", str(out), "--max-new-tokens", "5", "--seed", "0"]) == 0
    assert main(["generate", str(out), "--max-new-tokens", "5", "--seed", "0", "--no-stop-at-eot"]) == 0


def test_generate_stops_at_a_stop_id():
    import torch

    from lmlib.evaluate import generate
    from lmlib.model import GPT, GPTConfig
    from lmlib.tokenizers import CharTokenizer

    tok = CharTokenizer.fit("abc", special_tokens=[EOT])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    every = range(tok.vocab_size)
    assert len(generate(model, tok, "a", 20, temperature=1.0, seed=0)) > 5
    out = generate(model, tok, "a", 20, temperature=1.0, seed=0, stop_ids=every)  # whatever comes first stops it
    assert len(tok.encode(out, allowed_special="all")) == 2
