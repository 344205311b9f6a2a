"""`--optimizer muon`: torch's Muon for the blocks' matrices, AdamW for the rest."""

import json

import pytest
import torch

from lmlib.checkpoint import load_checkpoint
from lmlib.cli import main
from lmlib.errors import LmlibError
from lmlib.model import GPT, GPTConfig
from lmlib.optim import MuonWithAdamW, build_optimizer, muon_split, set_lr
from lmlib.run import train

from helpers import TINY, InterruptAt, char_data, same_weights


def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16))


def test_split_matrices_to_muon_the_rest_to_adamw():
    model = tiny_model()
    matrices, rest = muon_split(model)
    ids = {id(p) for p in matrices}
    for block in model.blocks:
        for lin in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj):
            assert id(lin.weight) in ids and id(lin.bias) not in ids
        assert id(block.ln1.weight) not in ids
    assert id(model.tok_emb.weight) not in ids  # tied with lm_head: stays with AdamW
    assert id(model.pos_emb.weight) not in ids
    assert all(p.ndim == 2 for p in matrices)
    assert len(matrices) + len(rest) == len(list(model.parameters()))

    opt = build_optimizer(model, "muon", lr=1e-3, weight_decay=0.1)
    assert isinstance(opt.muon, torch.optim.Muon) and isinstance(opt.adamw, torch.optim.AdamW)
    assert opt.muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    decays = sorted(g["weight_decay"] for g in opt.adamw.param_groups)
    assert decays == [0.0]  # no Linear weight is left outside the blocks but the tied head
    with pytest.raises(LmlibError, match="adamw, adamw-scratch, sgd or muon"):
        build_optimizer(model, "lion")


def test_set_lr_reaches_both_optimizers_and_steps_both():
    model = tiny_model()
    opt = build_optimizer(model, "muon", lr=1e-3)
    set_lr(opt, 0.0123)
    assert [g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups] == [0.0123] * len(opt.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 20, (4, 8))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    opt.zero_grad()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "blocks.0.attn.qkv.weight" in moved and "tok_emb.weight" in moved and "blocks.1.ln2.weight" in moved
    assert all(p.grad is None for p in model.parameters())
    assert len(opt.state) == len(list(model.parameters()))


def test_schedule_reaches_both_optimizers_in_a_run(tmp_path, monkeypatch):
    seen = []
    real = MuonWithAdamW.step

    def step(self, closure=None):
        seen.append((self.muon.param_groups[0]["lr"], [g["lr"] for g in self.adamw.param_groups]))
        return real(self, closure)

    monkeypatch.setattr(MuonWithAdamW, "step", step)
    r = train(char_data(), **{**TINY, "max_steps": 8, "warmup_steps": 2, "lr": 3e-3, "log_interval": 1,
                              "optimizer": "muon", "out_dir": str(tmp_path / "r")})
    assert len(seen) == 8
    assert [m for m, _ in seen] == pytest.approx(r.metrics["learning_rate"])
    assert all(a == [m] * len(a) for m, a in seen)
    assert seen[0][0] == pytest.approx(1.5e-3) and seen[1][0] == pytest.approx(3e-3)  # warm-up
    assert seen[-1][0] == pytest.approx(3e-4)  # cosine down to min_lr


def test_muon_run_learns(tmp_path):
    r = train(char_data(), **{**TINY, "max_steps": 40, "lr": 1e-2, "optimizer": "muon", "eval_interval": 40,
                              "out_dir": str(tmp_path / "r")})
    assert r.status == "finished"
    first, last = r.metrics["train_loss"][0], r.metrics["train_loss"][-1]
    assert last < 0.75 * first, (first, last)  # 2.85 -> 1.90 here (AdamW at the same rate: 1.47)
    assert r.metrics["val_loss"][-1] < 0.8 * first


def test_muon_resume_is_exact(tmp_path):
    kw = {**TINY, "max_steps": 12, "lr": 3e-3, "optimizer": "muon"}
    straight = train(char_data(), **kw, out_dir=str(tmp_path / "straight"))
    half = train(char_data(), **kw, out_dir=str(tmp_path / "resumed"), callbacks=[InterruptAt(6)])
    assert half.status == "interrupted" and half.steps == 6
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt")["optimizer"]
    assert set(saved) == {"muon", "adamw"} and saved["muon"]["state"] and saved["adamw"]["state"]
    resumed = train(char_data(), **kw, out_dir=str(tmp_path / "resumed"), resume=True)
    assert resumed.steps == straight.steps == 12
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert same_weights(a["model"], b["model"])
    for part in ("muon", "adamw"):
        for k, state in a["optimizer"][part]["state"].items():
            for name, t in state.items():
                assert torch.equal(t, b["optimizer"][part]["state"][k][name]), (part, k, name)
    for k in ("steps", "train_loss", "val_loss", "learning_rate"):
        assert straight.metrics[k] == resumed.metrics[k], k


def test_an_adamw_checkpoint_is_refused_by_a_muon_optimizer():
    model = tiny_model()
    adamw_state = build_optimizer(model, "adamw").state_dict()
    with pytest.raises(LmlibError, match="not a muon run"):
        build_optimizer(model, "muon").load_state_dict(adamw_state)


def test_cli_train_synthetic_muon_and_report(tmp_path, capsys):
    out = tmp_path / "syn"
    flags = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8",
             "--eval-interval", "5", "--eval-batches", "2", "--log-interval", "5", "--no-progress"]
    assert main(["train", "synthetic", "--n-tokens", "5000", "--max-steps", "5", "--optimizer", "muon",
                 "--out-dir", str(out), *flags]) == 0
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert metrics["config"]["train"]["optimizer"] == "muon"
    assert main(["train", "synthetic", "--n-tokens", "5000", "--max-steps", "10", "--optimizer", "muon",
                 "--out-dir", str(out), "--resume", "--extend", *flags]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    assert "status               finished" in report and "steps                10" in report
    assert "optimizer            muon" in report


def test_muon_on_a_torch_without_it_is_one_line(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(LmlibError, match="needs torch 2.9"):
        build_optimizer(GPT(GPTConfig(vocab_size=10, **{k: TINY[k] for k in ("block_size", "n_layer", "n_head",
                                                                             "n_embd")})), "muon", lr=1e-3)
