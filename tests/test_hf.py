"""Export to the Hugging Face format and back (lmlib.hf, lmlib.hf_tokenizer, `lmlib export`)."""

import json
import os
import random
import subprocess
import sys
import unicodedata

os.environ["HF_HUB_OFFLINE"] = "1"  # (before transformers reads it) every load below is from a local folder

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from lmlib import LmlibError, TrainConfig, Trainer, load_data, train  # noqa: E402
from lmlib.checkpoint import load_model  # noqa: E402
from lmlib.cli import main  # noqa: E402
from lmlib.evaluate import generate  # noqa: E402
from lmlib.hf import export_model, export_run, load_gpt2  # noqa: E402
from lmlib.hf_tokenizer import WORD_PATTERN, tokenizer_json  # noqa: E402
from lmlib.model import GPT, GPTConfig  # noqa: E402
from lmlib.tokenizers import CharTokenizer, WordTokenizer, split_words  # noqa: E402

from helpers import TINY, char_data  # noqa: E402

GPT_KEYS = {"block_size", "n_layer", "n_head", "n_embd"}
TEXT = "Hello world.\n(it's) a-b [x] {y}; z: 'q' ok?! _under 12\r\n  tab\tend, «ça» ΟΔΟΣ 東京\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A char-level run on a short text and a word-level synthetic run trained with bias=False and dropout."""
    root = tmp_path_factory.mktemp("runs")
    settings = {**TINY, "max_steps": 16}
    train(char_data(), out_dir=str(root / "char"), plots=False, **settings)
    words = load_data("synthetic", n_tokens=4000)
    train(words, out_dir=str(root / "word"), plots=False, bias=False, dropout=0.1, **settings)
    return {"char": root / "char", "word": root / "word"}


@pytest.mark.parametrize("kind", ["char", "word"])
def test_transformers_loads_the_export_with_lmlibs_logits_greedy_text_and_ids(runs, kind, tmp_path):
    out = export_run(runs[kind], tmp_path / "hf")
    model, tok, _ = load_model(runs[kind] / "best.pt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config.activation_function == "gelu"

    prompt = "the cat sat" if kind == "char" else ". the"
    ids = tok.encode(prompt)
    assert hf_tok(prompt)["input_ids"] == ids
    x = torch.randint(0, tok.vocab_size, (3, model.config.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x)[0] - hf(x).logits).abs().max() <= 1e-5
        with pytest.raises(IndexError):  # (README) no input longer than the context
            hf(torch.zeros(1, model.config.block_size + 1, dtype=torch.long))

    n_new = model.config.block_size - len(ids)  # HF refuses to run past n_positions; lmlib would crop
    ours = generate(model, tok, prompt, max_new_tokens=n_new, temperature=0)
    theirs = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=n_new, pad_token_id=0)[0]
    assert tok.decode(theirs) == ours
    assert hf_tok.decode(theirs) == ours  # the decoder of tokenizer.json spaces the text as lmlib does


def test_a_bpe_run_exports_with_its_end_of_text_token(tmp_path):
    from tokenizers import Tokenizer

    from lmlib.bpe import BPETokenizer
    from lmlib.data import TokenData

    docs = [TEXT, "the cat sat on the mat. " * 30, "Ἀθῆναι καὶ Σπάρτη, 東京と大阪, naïve café 😀 " * 10]
    tok = BPETokenizer.fit("".join(docs), vocab_size=300)
    ids = tok.encode_documents(docs)
    n = int(len(ids) * 0.8)
    data = TokenData(train=ids[:n], val=ids[n:], tokenizer=tok, name="bpe", meta={})
    train(data, out_dir=str(tmp_path / "run"), plots=False, **{**TINY, "max_steps": 16})
    out = export_run(tmp_path / "run", tmp_path / "hf")
    model, _, _ = load_model(tmp_path / "run" / "best.pt")
    eot = tok.special_ids["<|endoftext|>"]
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == eot
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == eot

    text = docs[2] + "<|endoftext|>" + docs[0]
    want = tok.encode(text, allowed_special="all")
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids == want
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok(text)["input_ids"] == want and hf_tok.eos_token_id == eot
    assert hf_tok.decode(want) == tok.decode(want) == text

    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    x = torch.tensor([want[:model.config.block_size]])
    with torch.no_grad():
        assert (model(x)[0] - hf(x).logits).abs().max() <= 1e-5
    prompt = want[:4]
    ours = generate(model, tok, prompt, max_new_tokens=model.config.block_size - 4, temperature=0)
    theirs = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=model.config.block_size - 4)[0]
    # transformers stops at the end-of-text token (generation_config.json), lmlib's generate goes on
    assert ours.startswith(tok.decode(theirs))
    assert len(theirs) == model.config.block_size or theirs[-1] == eot


def test_tokenizer_json_encodes_and_decodes_like_lmlib():
    from tokenizers import Tokenizer

    lower = TEXT.replace("ΟΔΟΣ", "ΟΔΟ")  # (no final sigma, see below)
    for text, tok in [(TEXT, CharTokenizer.fit(TEXT)), (TEXT, WordTokenizer.fit(TEXT)),
                      (lower, WordTokenizer.fit(lower, lowercase=True, unk=True))]:
        hf = Tokenizer.from_str(tokenizer_json(tok))
        ids = hf.encode(text).ids
        assert ids == tok.encode(text)
        assert hf.decode(ids) == tok.decode(ids)
        assert hf.get_vocab() == tok.stoi  # same symbols, same ids
    # The documented difference: Rust lower-cases letter by letter, Python writes a word's last sigma as "ς".
    greek = WordTokenizer.fit("ΟΔΟΣ οδοσ", lowercase=True)
    assert greek.split("ΟΔΟΣ") == ["οδος"] and Tokenizer.from_str(tokenizer_json(greek)).encode("ΟΔΟΣ").tokens == ["οδοσ"]
    # Any sequence of tokens, punctuation next to punctuation included, decodes to lmlib's spacing.
    word = WordTokenizer.fit(".,;:!?()[]{}'-\n\"/ a bc 7", unk=True)
    hf, rng = Tokenizer.from_str(tokenizer_json(word)), random.Random(0)
    for _ in range(500):
        ids = [rng.randrange(word.vocab_size) for _ in range(rng.randrange(8))]
        assert hf.decode(ids) == word.decode(ids), ids
    with pytest.raises(Exception, match="Missing"):  # an unknown symbol is an error there too ...
        Tokenizer.from_str(tokenizer_json(CharTokenizer.fit(TEXT))).encode("Z")
    unk = WordTokenizer.fit(TEXT, unk=True)  # ... unless the word tokenizer has <unk>
    assert Tokenizer.from_str(tokenizer_json(unk)).encode("hello unseen").ids == unk.encode("hello unseen")


def test_special_tokens_of_char_and_word_tokenizers_are_added_tokens():
    from tokenizers import Tokenizer

    text = "one doc.<|endoftext|>(another) doc<|endoftext|>"
    for cls in (CharTokenizer, WordTokenizer):
        tok = cls.fit(text.replace("<|endoftext|>", ""), special_tokens=["<|endoftext|>"])
        hf = Tokenizer.from_str(tokenizer_json(tok))
        ids = hf.encode(text).ids
        assert ids == tok.encode(text, allowed_special="all") and ids[-1] == tok.special_ids["<|endoftext|>"]
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


def test_word_pattern_cuts_all_of_unicode_like_python():
    # Every character Python's tables know, next to letters, digits, spaces and punctuation.
    from tokenizers import Regex, pre_tokenizers

    chars = [chr(c) for c in range(sys.maxunicode + 1)
             if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"]
    random.Random(0).shuffle(chars)
    seps = ["a", " ", "", "\n", ".", "1", "_", "\x1c", "", ""]
    text = "".join(c + seps[i % len(seps)] for i, c in enumerate(chars))
    cut = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    assert [p for p, _ in cut.pre_tokenize_str(text)] == split_words(text)


def test_export_then_load_gpt2_round_trip(runs, tmp_path):
    for kind in ("char", "word"):
        model, tok, _ = load_model(runs[kind] / "best.pt")
        back, back_tok = load_gpt2(export_run(runs[kind], tmp_path / kind))
        assert back_tok == tok
        x = torch.arange(model.config.block_size)[None] % tok.vocab_size
        with torch.no_grad():
            assert (model(x)[0] - back(x)[0]).abs().max() <= 1e-6


def _random_hf_gpt2(vocab_size=50, activation="gelu"):
    cfg = transformers.GPT2Config(vocab_size=vocab_size, n_positions=12, n_embd=32, n_layer=2, n_head=4,
                                  activation_function=activation, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # biases and LayerNorms away from their zero/one start, so a mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.normal_(0, 0.1)
    return model


def test_load_gpt2_from_transformers_save_pretrained_and_from_a_bin_file(tmp_path):
    hf = _random_hf_gpt2()
    hf.save_pretrained(tmp_path / "st")
    x = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(x).logits
        model, tok = load_gpt2(tmp_path / "st")
        assert tok is None and model.config.block_size == 12
        assert (model(x)[0] - want).abs().max() <= 1e-5
        # the original GPT-2 files: pytorch_model.bin, names without "transformer.", mask buffers in them
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
        state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
        state.update({f"h.{i}.attn.bias": torch.ones(1, 1, 12, 12) for i in range(2)})
        torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
        assert (load_gpt2(tmp_path / "bin")[0](x)[0] - want).abs().max() <= 1e-5
        torch.save({**state, "h.0.mlp.gate.bias": torch.zeros(3)}, tmp_path / "bin" / "pytorch_model.bin")
        with pytest.raises(LmlibError, match="'h.0.mlp.gate.bias' .and 0 more. have no place"):
            load_gpt2(tmp_path / "bin")


def test_load_gpt2_reads_a_byte_level_bpe_tokenizer_json(tmp_path):
    from lmlib.bpe import BPETokenizer
    from lmlib.bpe_formats import save_tokenizer_json

    tok = BPETokenizer.fit(TEXT * 3, vocab_size=280)
    _random_hf_gpt2(vocab_size=tok.vocab_size).save_pretrained(tmp_path)
    save_tokenizer_json(tok, tmp_path / "tokenizer.json")
    back = load_gpt2(tmp_path)[1]
    assert back.encode(TEXT, allowed_special="all") == tok.encode(TEXT, allowed_special="all")
    # a char-level tokenizer.json is not one lmlib reads back: the model alone
    (tmp_path / "tokenizer.json").write_text(tokenizer_json(CharTokenizer.fit(TEXT)))
    assert load_gpt2(tmp_path)[1] is None


def test_gpt2s_own_tanh_gelu_loads_and_exports_as_gelu_tanh(tmp_path):
    # GPT-2's published weights use "gelu_new": a model of that config gives the same logits in lmlib,
    # and exports back under the same name.
    hf = _random_hf_gpt2(activation="gelu_new")
    with torch.no_grad():  # MLP inputs of order 1, where the two GELUs differ
        for block in hf.transformer.h:
            block.mlp.c_fc.weight.mul_(50)
    hf.save_pretrained(tmp_path / "hf")
    model, _ = load_gpt2(tmp_path / "hf")
    assert model.config.activation == "gelu_tanh"
    x = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        err = (hf(x).logits - model(x)[0]).abs().max()
        exact = GPT(GPTConfig(**{**model.config.to_dict(), "activation": "gelu"}))
        exact.load_state_dict(model.state_dict())
        err_exact = (hf(x).logits - exact.eval()(x)[0]).abs().max()
    assert err <= 1e-5 and err_exact > 20 * err  # the tanh GELU is what GPT-2 computes, not the exact one
    out = export_model(model, CharTokenizer([chr(c) for c in range(200, 250)]), tmp_path / "back")  # 50 symbols
    assert json.loads((out / "config.json").read_text())["activation_function"] == "gelu_new"


@pytest.mark.parametrize("setting, words", [
    ({"activation_function": "relu"}, "activation_function is 'relu'"),
    ({"tie_word_embeddings": False}, "not tied"),
    ({"n_inner": 64}, "n_inner is 64"),
    ({"model_type": "llama"}, "model_type is 'llama'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "attention is scaled"),
    ({"add_cross_attention": True}, "cross-attention"),
    ({"n_positions": None}, "lacks n_positions"),
])
def test_load_gpt2_refuses_what_lmlib_cannot_compute(tmp_path, setting, words):
    _random_hf_gpt2().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(setting)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(LmlibError, match=words) as e:
        load_gpt2(tmp_path)
    assert "\n" not in str(e.value)


def test_load_gpt2_needs_a_config_and_one_weights_file(tmp_path):
    with pytest.raises(LmlibError, match="no config.json"):
        load_gpt2(tmp_path)
    _random_hf_gpt2().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "model-00001-of-00002.safetensors")
    with pytest.raises(LmlibError, match="sharded model is not supported"):
        load_gpt2(tmp_path)


def test_a_loaded_model_fine_tunes_with_the_trainer(runs, tmp_path):
    model, tok = load_gpt2(export_run(runs["char"], tmp_path / "hf"))
    data = char_data()
    assert data.tokenizer == tok
    before = model.tok_emb.weight.clone()
    config = TrainConfig(**{k: v for k, v in TINY.items() if k not in GPT_KEYS}, max_steps=3,
                         out_dir=str(tmp_path / "tuned"))
    result = Trainer(model.config, data, config, model=model).fit()
    assert result.status == "finished" and not torch.equal(before, model.tok_emb.weight)


def test_cli_export_and_its_errors(runs, tmp_path, capsys):
    assert main(["export", str(runs["char"]), "--out", str(tmp_path / "hf")]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "lmlib_tokenizer.json"} == {p.name for p in (tmp_path / "hf").iterdir()}
    assert "hf" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "x").exists()


def test_a_tokenizer_that_cannot_be_exported_leaves_no_files(tmp_path):
    from lmlib.hf import export_model
    from lmlib.model import GPT, GPTConfig

    tok = CharTokenizer(["a", "\ud800"])  # a lone surrogate: UTF-8 (tokenizer.json) cannot hold it
    with pytest.raises(LmlibError, match="lone surrogate"):
        export_model(GPT(GPTConfig(vocab_size=2, n_layer=1, n_embd=8, n_head=2)), tok, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_a_bpe_tokenizer_with_another_pre_split_is_refused_before_anything_is_written(tmp_path):
    from lmlib.bpe import BPETokenizer
    from lmlib.hf import export_model
    from lmlib.model import GPT, GPTConfig

    old = BPETokenizer([], pattern=r"\w+|\s+|[^\w\s]+")  # e.g. a run from an lmlib before GPT-2's exact pattern
    with pytest.raises(LmlibError, match="pre-split"):
        export_model(GPT(GPTConfig(vocab_size=old.vocab_size, n_layer=1, n_embd=8, n_head=2)), old, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_lmlib_imports_without_transformers_and_export_names_the_extra(runs, tmp_path, monkeypatch):
    code = "import sys; sys.modules['transformers'] = sys.modules['safetensors'] = None; import lmlib, lmlib.hf"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(LmlibError, match=r"pip install lmlib\[hf\]"):
        export_run(runs["char"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
