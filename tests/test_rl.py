"""REINFORCE with the exact reward (lmlib.rl): the reward is the answer key, one update
moves probability towards the rewarded answer, and a short run leaves a working model."""

import pytest
import torch

from lmlib.evaluate import continuation_logprobs
from lmlib.instruct import END, chat_tokenizer, make_examples, prompt_ids
from lmlib.model import GPT, GPTConfig
from lmlib.rl import reinforce, reinforce_step, reward
from lmlib.run import load_data

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer(load_data("synthetic", n_tokens=2000).tokenizer)


def tiny(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16, dropout=0.0))


def other_place(ex):
    place = next(p for p in ("mat", "rug") if p not in ex.response)
    return f"on the {place} ."


def test_the_reward_is_the_answer_key_and_needs_the_end_token(tok):
    end = tok.special_ids[END]
    where, complete = make_examples(3, "test")[2], make_examples(1, "test")[0]
    assert where.kind == "where" and complete.kind == "complete" and len(complete.answers) > 1
    assert reward(tok.encode(where.response) + [end], where, tok) == 1.0
    assert reward(tok.encode(where.response), where, tok) == 0.0  # cut off: not an answer
    assert reward(tok.encode(other_place(where)) + [end], where, tok) == 0.0
    assert all(reward(tok.encode(a) + [end], complete, tok) == 1.0 for a in complete.answers)  # any correct ending


def test_one_update_raises_the_rewarded_answer_above_the_other(tok, monkeypatch):
    model, ex = tiny(tok), make_examples(2, "train")[1]
    end = tok.special_ids[END]
    right, wrong = tok.encode(ex.response) + [end], tok.encode(other_place(ex)) + [end]
    monkeypatch.setattr("lmlib.rl.sample_answers", lambda *a, **k: [right, wrong])
    prompt = prompt_ids(tok, ex.prompt)
    with torch.no_grad():
        before = continuation_logprobs(model, [prompt, prompt], [right, wrong])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = reinforce_step(model, opt, tok, [ex], k=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = continuation_logprobs(model, [prompt, prompt], [right, wrong])
    assert out["reward"] == 0.5
    assert after[0] > before[0]  # the rewarded answer became likelier ...
    assert after[0] - after[1] > before[0] - before[1]  # ... and more so than the other (they share "on the")


def test_continuation_logprobs_equal_token_by_token_scoring(tok):
    model, ex = tiny(tok).eval(), make_examples(1, "train")[0]
    prompt, answer = prompt_ids(tok, ex.prompt), tok.encode(ex.response)
    with torch.no_grad():
        batch = continuation_logprobs(model, [prompt, prompt[:3]], [answer, answer[:1]])
        logits = model(torch.tensor([prompt + answer]))[0][0].log_softmax(-1)
    alone = sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(answer))
    assert float(batch[0]) == pytest.approx(alone, abs=1e-4)  # padding the other row changes nothing


def test_a_short_run_is_reproducible_and_keeps_the_model_finite(tok):
    train = make_examples(12, "train")
    runs = []
    for _ in range(2):
        model = tiny(tok)
        history = reinforce(model, tok, train, steps=3, k=4, prompts_per_step=2, lr=1e-3, seed=1, max_new_tokens=4)
        runs.append((history, model))
    assert len(runs[0][0]) == 3 and runs[0][0] == runs[1][0]
    assert all(torch.isfinite(p).all() for p in runs[0][1].parameters())
    assert not runs[0][1].training
