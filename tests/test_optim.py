import math

import pytest
import torch

from lmlib.errors import LmlibError
from lmlib.model import GPT, GPTConfig
from lmlib.optim import AdamW, build_optimizer, lr_at, param_groups


def test_schedule_warmup_peak_and_end():
    kw = dict(max_lr=1e-3, total_steps=1000, warmup_steps=100, min_lr=1e-4)
    assert lr_at(0, **kw) == pytest.approx(1e-5)  # warm-up starts at max_lr / warmup
    assert lr_at(99, **kw) == pytest.approx(1e-3)  # reaches the peak at its last step
    assert lr_at(100, **kw) == pytest.approx(1e-3)  # decay starts from the peak
    assert lr_at(999, **kw) == pytest.approx(1e-4)  # ends exactly on the floor
    mid = 100 + (999 - 100) / 2
    assert lr_at(int(mid), **kw) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * (int(mid) - 100) / 899)))
    # monotone decay after warm-up
    vals = [lr_at(s, **kw) for s in range(100, 1000)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert lr_at(500, schedule="constant", **kw) == 1e-3
    assert lr_at(999, schedule="linear", **kw) == pytest.approx(1e-4)
    with pytest.raises(LmlibError):
        lr_at(0, schedule="bogus", **kw)


def test_param_groups_no_decay_on_bias_norm_embedding():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    decay, no_decay = param_groups(model, 0.1)
    ids = {id(p) for p in decay["params"]}
    assert id(model.blocks[0].attn.qkv.weight) in ids
    assert id(model.tok_emb.weight) not in ids  # tied with lm_head: an embedding
    assert id(model.blocks[0].ln1.weight) not in ids
    assert id(model.blocks[0].attn.qkv.bias) not in ids
    n = len(decay["params"]) + len(no_decay["params"])
    assert n == len(list(model.parameters()))
    assert no_decay["weight_decay"] == 0.0


def test_scratch_adamw_matches_torch_after_100_steps():
    # In float64. The key slice of each qkv.bias has an exactly zero true gradient:
    # adding the same b_k to every key adds q.b_k to all of a query's scores, and
    # softmax ignores a constant shift. What backprop returns there is rounding
    # noise, and Adam divides it by its own running size, turning noise into steps
    # of full size lr. In float32 the noise (~1e-9) is not small next to eps (1e-8),
    # so those entries random-walk differently with every kernel and CPU; in float64
    # it is ~1e-18 and they stay put. The comparison can then be tight enough to
    # catch any slip in the update rule: here the two agree to ~1e-13, while a weight
    # decay 10% off moves a weight by 3e-4 and beta2 = 0.999 instead of 0.99 by 1e-2.
    def run(opt_name, fused=None):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16)).double()
        opt = build_optimizer(model, opt_name, lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=fused)
        g = torch.Generator().manual_seed(1)
        for _ in range(100):
            x = torch.randint(0, 30, (4, 8), generator=g)
            _, loss = model(x, torch.roll(x, -1, 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    # torch's one-tensor-at-a-time AdamW is the reference; the fused kernel the trainer uses too.
    ref, scratch, fused = run("adamw", fused=False), run("adamw-scratch"), run("adamw", fused=True)
    for (n, p), q, f in zip(ref.named_parameters(), scratch.parameters(), fused.parameters()):
        assert torch.allclose(p, q, atol=1e-9, rtol=1e-8), n
        assert torch.allclose(p, f, atol=1e-9, rtol=1e-8), n


def test_scratch_adamw_single_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamW([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)
    w.grad = torch.tensor([0.5, 0.5])
    opt.step()
    # first step: m_hat = g, v_hat = g^2 -> update = lr * sign(g); decay lr*wd*w first
    expected = torch.tensor([1.0, -2.0]) * (1 - 0.1 * 0.5) - 0.1 * torch.tensor([1.0, 1.0])
    assert torch.allclose(w.detach(), expected, atol=1e-6)
