"""Supervised fine-tuning: from a pretrained run, with the trainer's guarantees (masked loss
visible in the metrics, exact resume), the answer key, and one-line errors for bad records."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmlib.checkpoint import load_model
from lmlib.cli import main
from lmlib.errors import LmlibError
from lmlib.finetune import chat_rows, extend_vocabulary, finetune, language_loss, load_chat_jsonl
from lmlib.instruct import chat_tokenizer, encode_chat, make_examples
from lmlib.model import GPT, GPTConfig
from lmlib.run import load_data, train

from helpers import InterruptAt, same_weights

SFT = dict(epochs=2, lr=3e-3, batch_size=8, eval_interval=4, log_interval=2, progress=False, plots=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    train(load_data("synthetic", n_tokens=4000), out_dir=str(out), max_steps=4, block_size=48, n_layer=1,
          n_head=2, n_embd=16, batch_size=4, eval_interval=2, progress=False, plots=False)
    return out


def test_new_tokens_start_at_the_mean_embedding_and_old_logits_are_kept():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    big = extend_vocabulary(model, 13).eval()
    assert torch.equal(big.tok_emb.weight[:10], model.tok_emb.weight)
    assert torch.allclose(big.tok_emb.weight[12], model.tok_emb.weight.mean(0))
    assert big.lm_head.weight is big.tok_emb.weight  # still tied
    idx = torch.randint(10, (1, 8))
    assert torch.allclose(big(idx)[0][..., :10], model(idx)[0], atol=1e-6)


def test_language_loss_leaves_the_chat_tokens_out_of_the_softmax():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    tokens = torch.randint(10, (8 * 5 + 1,)).numpy()
    x = torch.from_numpy(tokens.astype("int64"))
    with torch.no_grad():
        plain = float(model(x[:-1].view(5, 8), x[1:].view(5, 8))[1])  # the model's own loss, 5 windows
    assert language_loss(model, tokens, 10, 8) == pytest.approx(plain, rel=1e-6)
    big = extend_vocabulary(model, 13).eval()
    with torch.no_grad():
        big.tok_emb.weight[10:] = 5 * big.tok_emb.weight[:10].sum(0)  # new tokens that take most of the mass
    assert language_loss(big, tokens, 10, 8) == pytest.approx(plain, rel=1e-5)  # not counted against it
    with torch.no_grad():
        assert float(big(x[:-1].view(5, 8), x[1:].view(5, 8))[1]) > plain + 0.3  # ... as a full softmax would


def test_the_metrics_show_the_loss_mask_and_the_answer_key(base, tmp_path):
    tr, va, te = make_examples(48, "train"), make_examples(8, "val"), make_examples(9, "test")
    result = finetune(base, tr, va, test=te, out_dir=tmp_path / "sft", **SFT)
    assert result.status == "finished" and result.steps == 2 * 48 // 8
    m = json.loads((tmp_path / "sft" / "training_metrics.json").read_text())
    tok = chat_tokenizer(load_model(base / "best.pt")[1])
    _, mask = chat_rows(tok, tr, 48)
    assert m["config"]["data"]["loss_tokens"]["train"] == int(mask.sum()) < len(mask) // 4  # responses only
    assert m["answer_key"]["n"] == 9 and set(m["answer_key"]["by_kind"]) == {"complete", "what", "where", "likes"}


def test_loss_on_all_keeps_the_prompt_in_the_loss_but_never_the_padding(base, tmp_path):
    tok = chat_tokenizer(load_model(base / "best.pt")[1])
    tr = make_examples(12, "train")
    ids, response = chat_rows(tok, tr, 48)
    _, everything = chat_rows(tok, tr, 48, loss_on="all")
    assert (everything >= response).all() and everything.sum() > 2 * response.sum()
    for i, ex in enumerate(tr):  # row i: exactly its exchange's tokens are in the loss
        assert everything[48 * i:48 * (i + 1)].sum() == len(encode_chat(tok, ex.prompt, ex.response)[0])
    with pytest.raises(LmlibError, match="loss_on"):
        chat_rows(tok, tr, 48, loss_on="prompt")
    finetune(base, tr, tr[:3], out_dir=tmp_path / "all", loss_on="all", **{**SFT, "epochs": 1})
    m = json.loads((tmp_path / "all" / "training_metrics.json").read_text())["config"]["data"]["loss_tokens"]
    assert m["train"] == int(everything.sum())
    assert m["val"] == int(chat_rows(tok, tr[:3], 48)[1].sum())  # validation still scores the answers


def test_an_interrupted_fine_tuning_resumes_exactly(base, tmp_path):
    tr, va = make_examples(48, "train"), make_examples(8, "val")
    straight = finetune(base, tr, va, out_dir=tmp_path / "a", **SFT)
    stopped = finetune(base, tr, va, out_dir=tmp_path / "b", callbacks=[InterruptAt(6)], **SFT)
    assert stopped.status == "interrupted" and stopped.steps == 6
    resumed = finetune(base, tr, va, out_dir=tmp_path / "b", resume=True, **SFT)
    assert resumed.steps == straight.steps
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())


RUN = """
import os, signal, sys
from lmlib.finetune import finetune
from lmlib.instruct import make_examples
def kill(m):
    if sys.argv[1] == "killed" and m["steps"][-1] == 6:
        os.kill(os.getpid(), signal.SIGKILL)
finetune({base!r}, make_examples(48, "train"), make_examples(8, "val"), out_dir=sys.argv[2], callbacks=[kill],
         resume=sys.argv[1] == "resume", **{sft!r})
"""


def test_a_fine_tuning_killed_with_sigkill_resumes_exactly(base, tmp_path):
    # Every run in a fresh process of its own, as a user's would be (and so that no state of
    # this test process can make the two sides differ).
    code = RUN.format(base=str(base), sft=SFT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}

    def run(mode, out):
        return subprocess.run([sys.executable, "-c", code, mode, str(out)], env=env, capture_output=True, text=True,
                              timeout=300)

    assert run("straight", tmp_path / "a").returncode == 0
    done = run("killed", tmp_path / "b")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 4  # the validation before the kill
    resumed = run("resume", tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight, after = (json.loads((tmp_path / d / "training_metrics.json").read_text()) for d in "ab")
    assert after["status"] == "finished" and after["steps"] == straight["steps"]
    assert after["train_loss"] == straight["train_loss"]
    assert same_weights(*(load_model(tmp_path / d / "last.pt")[0].state_dict() for d in "ab"))


def test_a_broken_jsonl_record_is_named_and_nothing_is_written(base, tmp_path, capsys):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"prompt": "the cat", "response": "sat ."}\n{"prompt": "x"}\n'
                    '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\nnot json\n')
    with pytest.raises(LmlibError) as e:
        load_chat_jsonl(data)
    assert str(e.value).count("\n") == 1 and ":2:" in str(e.value) and ":4:" in str(e.value)
    out = tmp_path / "never"
    assert main(["finetune", str(base), str(data), "--out-dir", str(out)]) == 2
    assert "chat.jsonl:2" in capsys.readouterr().err and not out.exists()


def test_cli_finetune_then_chat_and_evaluate(base, tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(["finetune", str(base), "synthetic-chat", "--out-dir", str(tmp_path / "all"), "--epochs", "1",
                 "--n-examples", "32", "--batch-size", "8", "--no-progress", "--loss-on", "all"]) == 0
    whole = json.loads((tmp_path / "all" / "training_metrics.json").read_text())["config"]["data"]["loss_tokens"]["train"]
    assert main(["finetune", str(base), "synthetic-chat", "--out-dir", str(out), "--epochs", "1",
                 "--n-examples", "32", "--batch-size", "8", "--no-progress"]) == 0
    assert "exact-match accuracy on 300 held-out questions" in capsys.readouterr().out
    response_only = json.loads((out / "training_metrics.json").read_text())["config"]["data"]["loss_tokens"]["train"]
    assert whole > 2 * response_only  # --loss-on all puts the questions in the loss too
    assert main(["generate", str(out), "--chat", "--prompt", "complete : the cats", "--temperature", "0",
                 "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["evaluate", str(out), "--data", "synthetic-chat"]) == 0
    assert "exact-match accuracy" in capsys.readouterr().out
    assert main(["generate", str(base), "--chat", "--prompt", "hello"]) == 2  # a base model has no chat template
    assert "not a chat model" in capsys.readouterr().err
