import math

import numpy as np
import pytest
import torch

from lmlib import GPT, GPTConfig
from lmlib.synthetic import default_corpus
from lmlib.truth import (
    RULES,
    calibration,
    calibration_error,
    contexts,
    excess_by_rule,
    kl_divergence,
    model_probs,
    rule_of,
    rule_shares,
    true_probs,
)


@pytest.fixture(scope="module")
def corpus():
    return default_corpus()


@pytest.fixture(scope="module")
def ctxs(corpus):
    return contexts(corpus)


@pytest.fixture(scope="module")
def tiny_model(corpus):
    """A tiny model after a few AdamW steps on the corpus: imperfect, but not uniform."""
    torch.manual_seed(0)
    tok = corpus.tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=16))
    tokens = torch.from_numpy(corpus.sample_tokens(20_000, seed=0)).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        starts = torch.randint(len(tokens) - 17, (16,), generator=g)
        x = torch.stack([tokens[s:s + 16] for s in starts])
        y = torch.stack([tokens[s + 1:s + 17] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_contexts_cover_the_stream(corpus, ctxs):
    # the weights are the share of positions: they sum to 1, and the empty prefix starts every sentence
    assert math.isclose(sum(c.weight for c in ctxs), 1.0, rel_tol=1e-12)
    start = next(c for c in ctxs if c.prefix == ())
    assert math.isclose(start.weight, 1 / corpus.mean_sentence_length(), rel_tol=1e-12)
    assert {c.rule for c in ctxs} == set(RULES)
    assert math.isclose(sum(rule_shares(ctxs).values()), 1.0, rel_tol=1e-12)


def test_rules():
    assert rule_of((), {"the": 0.7, "hello": 0.3}) == "sentence start"
    assert rule_of(("the", "cat"), {"sat": 0.5, "is": 0.5}) == "agreement"
    assert rule_of(("the", "cat", "sat", "on", "the"), {"mat": 1.0}) == "after 'the'"
    assert rule_of(("the", "cat", "sat"), {"on": 1.0}) == "fixed phrase"
    assert rule_of(("the", "cat", "sleeps"), {".": 1.0}) == "sentence end"
    assert rule_of(("once", "upon"), {"a": 1.0}) == "story opening"
    assert rule_of(("the", "cat", "is"), {"happy": 0.6, "big": 0.4}) == "word choice"


def test_weighted_kl_is_the_excess_over_the_entropy(corpus, ctxs, tiny_model):
    vocab = corpus.vocab
    q = model_probs(tiny_model, corpus.tokenizer(), ctxs)
    p = true_probs(ctxs, vocab)
    w = np.array([c.weight for c in ctxs])
    cross_entropy = -(w * np.where(p > 0, p * np.log(q), 0.0).sum(axis=1)).sum()  # the model's expected loss
    excess = excess_by_rule(ctxs, q, vocab)
    assert excess["all"] == pytest.approx(cross_entropy - corpus.entropy_per_token(), rel=1e-9)
    assert all(v > 0 for v in excess.values())  # an imperfect model is above the truth everywhere
    # the probabilities are the model's own, asked after ". " + prefix
    tok = corpus.tokenizer()
    row = next(i for i, c in enumerate(ctxs) if c.prefix == ("hello",))
    with torch.no_grad():
        tiny_model.eval()
        direct = torch.softmax(tiny_model(torch.tensor([tok.encode(". hello")]))[0][0, -1].double(), -1)
    assert np.allclose(q[row], direct.numpy(), atol=1e-6)


def test_the_truth_has_no_excess_and_is_calibrated(corpus, ctxs):
    p = true_probs(ctxs, corpus.vocab)
    assert all(v == 0.0 for v in excess_by_rule(ctxs, p, corpus.vocab).values())
    table = calibration(ctxs, p, corpus.vocab)
    assert all(b.predicted == pytest.approx(b.true, abs=1e-12) for b in table)
    assert calibration_error(table) == pytest.approx(0.0, abs=1e-12)
    assert sum(b.weight for b in table) == pytest.approx(len(corpus.vocab))  # every word at every position


def test_kl_is_non_negative_and_detects_overconfidence(corpus, ctxs):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=100)
    q = rng.dirichlet(np.ones(5), size=100)
    assert (kl_divergence(p, q) >= 0).all() and np.allclose(kl_divergence(p, p), 0)
    assert kl_divergence([1.0, 0.0], [0.0, 1.0]) == math.inf
    # a sharpened truth (p ** 2, renormalised) is overconfident: where it says "likely", the truth is lower
    truth = true_probs(ctxs, corpus.vocab)
    sharp = truth ** 2 / (truth ** 2).sum(axis=1, keepdims=True)
    table = calibration(ctxs, sharp, corpus.vocab)
    high = [b for b in table if b.lo >= 0.5]
    assert high and all(b.true < b.predicted for b in high)
    assert calibration_error(table) > 1e-3
