import math

import pytest
import torch

from lmlib.errors import LmlibError
from lmlib.model import GPT, GPTConfig


def small(vocab=50, **kw):
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw))


def test_initial_loss_close_to_ln_vocab():
    torch.manual_seed(0)
    for V in (30, 200):
        model = small(V)
        x = torch.randint(0, V, (8, 16))
        y = torch.randint(0, V, (8, 16))
        _, loss = model(x, y)
        assert abs(loss.item() - math.log(V)) < 0.1


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = small(20)
    x = torch.randint(0, 20, (4, 16))
    y = torch.randint(0, 20, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_causal_later_token_never_changes_earlier_logits():
    torch.manual_seed(0)
    model = small(40).eval()
    x = torch.randint(0, 40, (2, 16))
    x2 = x.clone()
    x2[:, 10] = (x2[:, 10] + 1) % 40
    a, _ = model(x)
    b, _ = model(x2)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_weights_are_tied_and_counted_once():
    model = small(50)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=True) == model.num_params() - 50 * 32 - 16 * 32


def test_trace_shapes_and_consistency():
    torch.manual_seed(0)
    model = small(50).eval()
    x = torch.randint(0, 50, (1, 7))
    tr = model.trace(x)
    assert tr["token_embedding"].shape == (1, 7, 32)
    assert len(tr["attention"]) == len(tr["ffn"]) == 2
    assert tr["logits"].shape == (1, 7, 50)
    logits, _ = model(x)
    assert torch.allclose(tr["logits"], logits)
    assert torch.allclose(tr["probs"].sum(-1), torch.ones(1, 7))


def test_too_long_input_and_bad_config():
    model = small(10)
    with pytest.raises(LmlibError, match="context"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(LmlibError, match="divisible"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(LmlibError, match="positive"):
        GPTConfig(vocab_size=0)


def test_inference_helpers_leave_training_mode_as_they_found_it():
    import numpy as np

    from lmlib.evaluate import estimate_loss, generate, next_token_probs
    from lmlib.tokenizers import CharTokenizer

    tok = CharTokenizer.fit("abcdef")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.5))
    tokens = np.array(tok.encode("abcdefabcdefabcdef"), dtype=np.uint16)
    for mode in (True, False):
        model.train(mode)
        probs = next_token_probs(model, tok, "abc")
        assert model.training is mode and probs.sum().item() == pytest.approx(1.0)
        assert next_token_probs(model, tok, "abc").equal(probs)  # dropout off while predicting
        generate(model, tok, "ab", max_new_tokens=3, seed=0)
        estimate_loss(model, tokens, 2, 8)
        assert model.training is mode
