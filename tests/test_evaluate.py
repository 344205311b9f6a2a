"""Inference helpers: sampling randomness and the device evaluation runs on."""

import numpy as np
import pytest
import torch

from lmlib import data as D
from lmlib.evaluate import estimate_loss, generate
from lmlib.model import GPT, GPTConfig
from lmlib.tokenizers import CharTokenizer

TEXT = "the cat sat on the mat. a dog ran by the rug. "


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def model_tok():
    tok = CharTokenizer.fit(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    return model, tok


def test_generate_without_seed_draws_fresh_text_each_call(model_tok):
    model, tok = model_tok
    texts = {generate(model, tok, "the ", max_new_tokens=20, temperature=1.0) for _ in range(3)}
    assert len(texts) == 3
    # it draws from torch's global generator, so torch.manual_seed makes it repeatable
    torch.manual_seed(7)
    a = generate(model, tok, "the ", max_new_tokens=20)
    torch.manual_seed(7)
    assert generate(model, tok, "the ", max_new_tokens=20) == a


def test_generate_with_seed_repeats_and_leaves_global_rng_alone(model_tok):
    model, tok = model_tok
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generate(model, tok, "the ", max_new_tokens=20, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, tok, "the ", max_new_tokens=20, seed=3) == a
    assert generate(model, tok, "the ", max_new_tokens=20, seed=4) != a


class _Recorded:
    """Stands in for a batch tensor and records where estimate_loss sends it."""

    def __init__(self, t, seen):
        self.t, self.seen = t, seen

    def to(self, device):
        self.seen.append(torch.device(device))
        return self.t


class _MetaModel(torch.nn.Module):
    """A model whose weights live on another device (meta) but which computes on the CPU."""

    def __init__(self, vocab_size):
        super().__init__()
        self.w = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.vocab_size = vocab_size

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab_size), None


def test_estimate_loss_defaults_to_the_models_device(monkeypatch):
    seen = []
    real = D.iter_eval_batches

    def recorded(*args, **kw):
        return ((_Recorded(x, seen), _Recorded(y, seen)) for x, y in real(*args, **kw))

    monkeypatch.setattr(D, "iter_eval_batches", recorded)
    r = estimate_loss(_MetaModel(5), np.arange(40) % 5, batch_size=2, block_size=8)
    assert r["loss"] == pytest.approx(np.log(5)) and seen
    assert {d.type for d in seen} == {"meta"}
    seen.clear()
    estimate_loss(_MetaModel(5), np.arange(40) % 5, batch_size=2, block_size=8, device="cpu")
    assert {d.type for d in seen} == {"cpu"}  # an explicit device still wins
