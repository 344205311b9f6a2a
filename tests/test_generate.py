"""Generation: the key/value cache gives the logits and the text of a full recomputation;
top-p keeps exactly the nucleus; a stop token ends the text."""

import pytest
import torch

from lmlib.errors import LmlibError
from lmlib.evaluate import generate, generate_ids, sample_next
from lmlib.model import GPT, GPTConfig, KVCache
from lmlib.run import train

from helpers import TINY, char_data

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = char_data()
    result = train(data, out_dir=str(tmp_path_factory.mktemp("gen")), max_steps=60, lr=1e-2, warmup_steps=5,
                   plots=False, save_checkpoints=False, **TINY)
    return result.model.eval(), data.tokenizer


def test_decode_step_by_step_gives_the_logits_of_a_full_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(11, (2, 12))
    full, _ = model(idx)
    cache = KVCache(2)
    parts = [model.decode(idx[:, :5], cache), model.decode(idx[:, 5:9], cache)]  # a prompt, then 4 at once (masked)
    parts += [model.decode(idx[:, t:t + 1], cache) for t in range(9, 12)]  # then one token at a time
    assert cache.length == 12
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)
    with pytest.raises(LmlibError, match="context"):
        model.decode(idx[:, :1], cache)  # a 13th position does not exist


def test_greedy_text_is_the_same_with_and_without_the_cache(trained):
    model, tok = trained
    # 40 new tokens after a 10-token prompt: past the 16-token context, so the cache is rebuilt too
    with_cache = generate_ids(model, tok.encode("the cat sa"), 40, temperature=0)
    without = generate_ids(model, tok.encode("the cat sa"), 40, temperature=0, cache=False)
    assert with_cache == without and len(with_cache) == 40


def test_sampling_draws_the_same_text_with_and_without_the_cache(trained):
    model, tok = trained
    texts = {generate(model, tok, "the ", 30, temperature=1.0, top_p=0.9, seed=s, cache=c) for c in (True, False)
             for s in [3]}
    assert len(texts) == 1


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    g = torch.Generator().manual_seed(0)
    drawn = {sample_next(logits.clone(), top_p=0.8, generator=g) for _ in range(300)}
    assert drawn == {0, 1}  # 0.5 + 0.3 reaches 0.8: the other two are cut
    drawn = {sample_next(logits.clone(), top_p=0.81, generator=g) for _ in range(300)}
    assert drawn == {0, 1, 2}
    assert {sample_next(logits.clone(), top_p=0.01, generator=g) for _ in range(50)} == {0}
    with pytest.raises(LmlibError, match="top_p"):
        generate_ids(GPT(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=4)), [0], 1, top_p=0)


def test_a_stop_token_ends_the_text(trained):
    model, tok = trained
    free = generate_ids(model, tok.encode("the cat"), 30, temperature=0)
    stop = free[5]
    cut = generate_ids(model, tok.encode("the cat"), 30, temperature=0, stop_ids=[stop])
    assert cut == free[:free.index(stop) + 1]  # the stop token ends the text, as its last token
    assert generate(model, tok, "the cat", 30, temperature=0, stop_ids=[stop]) == tok.decode(tok.encode("the cat") + cut)


def test_cli_generate_takes_top_p(tmp_path, capsys):
    from lmlib.cli import main

    out = tmp_path / "run"
    assert main(["train", "synthetic", "--n-tokens", "3000", "--max-steps", "3", "--block-size", "8", "--n-layer", "1",
                 "--n-embd", "8", "--n-head", "1", "--batch-size", "2", "--no-progress", "--out-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["generate", str(out), "--top-p", "0.9", "--max-new-tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["generate", str(out), "--top-p", "1.5"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err


def test_the_benchmark_runs_and_checks_the_tokens_agree():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "bench/generate_speed.py", "--no-record", "--repeats", "1", "--n-layer", "1",
                           "--n-embd", "16", "--block-size", "16", "--new-tokens", "8", "--vocab-size", "32"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "past the context" in done.stdout and "True" in done.stdout
