"""Resume, extension, divergence and how a run ends: what a script user relies on."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lmlib.checkpoint import load_checkpoint
from lmlib.config import TrainConfig
from lmlib.errors import LmlibError
from lmlib.metrics import load_metrics
from lmlib.run import train
from lmlib.trainer import StopTraining, Trainer

from helpers import TINY, InterruptAt, char_data, same_weights


def run(tmp_path, name="run", **kw):
    settings = {**TINY, "max_steps": 12, "lr": 3e-3, "out_dir": str(tmp_path / name), **kw}
    return train(char_data(), **settings)


@pytest.mark.parametrize("change", [
    dict(batch_size=4), dict(seed=1), dict(lr=1e-3), dict(schedule="linear"),
    dict(warmup_steps=1), dict(max_steps=20), dict(grad_clip=0.5), dict(weight_decay=0.0),
])
def test_resume_refuses_changed_settings_naming_both_values(tmp_path, change):
    run(tmp_path, max_steps=12, warmup_steps=2)
    name, value = next(iter(change.items()))
    settings = {"max_steps": 12, "warmup_steps": 2, **change}
    with pytest.raises(LmlibError, match=rf"{name} was .* now {value!r}") as err:
        run(tmp_path, resume=True, **settings)
    assert "\n" not in str(err.value)


def test_resume_refuses_other_epoch_count(tmp_path):
    run(tmp_path, epochs=2, max_steps=None)
    with pytest.raises(LmlibError, match="epochs was 2"):
        run(tmp_path, epochs=3, max_steps=None, resume=True)


def test_resume_in_epoch_mode_between_evaluations_is_exact(tmp_path):
    # Interrupted at step 6: a logging step (every 2) that is not an evaluation (every 4).
    kw = dict(epochs=3, max_steps=None, dropout=0.1)
    straight = run(tmp_path, "straight", **kw)
    half = run(tmp_path, "resumed", callbacks=[InterruptAt(6)], **kw)
    assert half.status == "interrupted" and half.steps == 6
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6  # saved at the interruption
    resumed = run(tmp_path, "resumed", resume=True, **kw)
    assert resumed.steps == straight.steps
    assert same_weights(load_checkpoint(tmp_path / "straight" / "last.pt")["model"],
                        load_checkpoint(tmp_path / "resumed" / "last.pt")["model"])
    for k in ("steps", "epochs", "train_loss", "val_loss", "learning_rate"):
        assert straight.metrics[k] == resumed.metrics[k], k


def test_extend_keeps_the_schedule_and_the_rate_continuous(tmp_path):
    first = run(tmp_path, max_steps=12, warmup_steps=2, log_interval=1)
    floor = first.metrics["learning_rate"][-1]
    assert floor == pytest.approx(3e-4)  # the cosine ends on min_lr = lr / 10
    with pytest.raises(LmlibError, match="--extend"):
        run(tmp_path, max_steps=20, warmup_steps=2, log_interval=1, resume=True)
    longer = run(tmp_path, max_steps=20, warmup_steps=2, log_interval=1, resume=True, extend=True)
    assert longer.status == "finished" and longer.steps == 20
    lrs = longer.metrics["learning_rate"]
    assert lrs[:12] == first.metrics["learning_rate"]
    assert lrs[12:] == [floor] * 8  # no jump back up: the rate holds at its floor
    assert longer.metrics["config"]["train"]["schedule_steps"] == 12
    with pytest.raises(LmlibError, match="cannot extend to 10 steps"):
        run(tmp_path, max_steps=10, warmup_steps=2, resume=True, extend=True)


def test_extend_refuses_a_new_schedule_horizon(tmp_path):
    run(tmp_path, max_steps=12, warmup_steps=2)
    with pytest.raises(LmlibError, match="cannot extend with schedule_steps 20: the run's schedule has 12"):
        run(tmp_path, max_steps=20, warmup_steps=2, schedule_steps=20, resume=True, extend=True)
    assert run(tmp_path, max_steps=20, warmup_steps=2, schedule_steps=12, resume=True, extend=True).steps == 20


def _crash_at(step):
    def callback(m):
        if m["steps"][-1] == step:
            raise RuntimeError("power cut")
    return callback


@pytest.mark.parametrize("val_fraction, extra, saved_at", [
    (0.0, {}, 6),  # no validation: last.pt at every logging step
    (0.2, {}, 4),  # with validation: at each evaluation (every 4 steps)
    (0.2, {"save_interval": 6}, 6),  # ... and every save_interval steps
])
def test_last_checkpoint_without_validation_and_save_interval(tmp_path, val_fraction, extra, saved_at):
    settings = {**TINY, "max_steps": 12, "lr": 3e-3, "out_dir": str(tmp_path / "r"), **extra}
    with pytest.raises(RuntimeError, match="power cut"):
        train(char_data(val_fraction=val_fraction), callbacks=[_crash_at(6)], **settings)
    assert load_checkpoint(tmp_path / "r" / "last.pt")["step"] == saved_at


def test_stop_and_interrupt_save_the_final_state(tmp_path):
    def stop_at_6(m):
        if m["steps"][-1] == 6:
            raise StopTraining("enough")

    r = run(tmp_path, "stopped", callbacks=[stop_at_6])
    last = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert r.status == "stopped" and last["step"] == 6
    assert same_weights(last["model"], r.model.state_dict())  # result.model is what last.pt holds


def test_an_exception_marks_the_run_failed(tmp_path):
    def boom(m):
        raise RuntimeError("a bug in a callback")

    with pytest.raises(RuntimeError, match="a bug"):
        run(tmp_path, callbacks=[boom])
    assert load_metrics(tmp_path / "run")["status"] == "failed"


def test_non_finite_validation_loss_ends_the_run_as_diverged(tmp_path, monkeypatch):
    real = Trainer.evaluate
    calls = []

    def evaluate(self):
        calls.append(1)
        result = real(self)
        return {**result, "loss": math.inf} if len(calls) == 2 else result

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    r = run(tmp_path, max_steps=12)
    out = tmp_path / "run"
    assert r.status == "diverged" and r.steps == 8 and "validation loss" in r.message
    m = json.loads((out / "training_metrics.json").read_text())  # valid JSON, no "Infinity"
    assert m["status"] == "diverged" and m["val_loss"][-1] is None
    assert load_checkpoint(out / "last.pt")["step"] == 4  # the last good one, intact
    assert load_checkpoint(out / "best.pt")["step"] == 4


def test_non_finite_gradient_never_reaches_the_weights(tmp_path):
    d = char_data()
    trainer = Trainer(__import__("lmlib.model", fromlist=["GPTConfig"]).GPTConfig(
        vocab_size=d.tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16),
        d, TrainConfig(**{k: v for k, v in TINY.items() if k in TrainConfig.__dataclass_fields__},
                       max_steps=12, out_dir=str(tmp_path / "run")))
    weight = trainer.model.lm_head.weight
    seen = []

    def poison(grad):  # a NaN in the gradient at the 6th step, while the loss stays finite
        seen.append(1)
        return torch.full_like(grad, math.nan) if len(seen) == 6 else grad

    weight.register_hook(poison)
    before = {}

    def remember(m):
        before.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer.callbacks.append(remember)  # weights after step 4 (the last entry before the NaN)
    r = trainer.fit()
    assert r.status == "diverged" and r.steps == 5 and "gradient" in r.message
    assert all(torch.isfinite(v).all() for v in r.model.state_dict().values())
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4


@pytest.mark.parametrize("kw, msg", [
    (dict(grad_clip=-1.0), "grad_clip must be a norm >= 0"),
    (dict(dtype="bf16"), "unknown dtype 'bf16'"),
    (dict(finite_check="sometimes"), "unknown finite_check 'sometimes'"),
    (dict(save_interval=0), "save_interval must be positive"),
    (dict(tf32="yes"), "tf32 must be True, False or None"),
    (dict(device="cude"), "unknown device 'cude'"),
    (dict(epochs=2, max_steps=None, batch_size=0), "batch_size must be a positive"),
    (dict(grad_accum=0), "grad_accum must be a positive"),
    (dict(optimizer="adam"), "unknown optimizer"),
    (dict(max_steps=2.5), "max_steps must be a whole number"),
    (dict(min_lr=1.0), "min_lr"),
])
def test_every_setting_is_validated_before_use(tmp_path, kw, msg):
    with pytest.raises(LmlibError, match=msg) as err:
        run(tmp_path, **kw)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing written


def test_mps_is_refused_where_there_is_none(tmp_path):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(LmlibError, match="MPS"):
        run(tmp_path, device="mps")


def test_torch_floor_has_muon():
    # torch.optim.Muon with adjust_lr_fn (optimizer="muon") exists from torch 2.9 on (CPU fused AdamW from 2.4).
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    floor = text.split('"torch>=')[1].split('"')[0]
    assert tuple(int(p) for p in floor.split(".")[:2]) >= (2, 9)


def test_the_library_leaves_the_allocator_alone(tmp_path, monkeypatch):
    import ctypes

    opened = []
    real = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: opened.append(a) or real(*a, **k))
    run(tmp_path, max_steps=2)
    assert opened == []  # no mallopt: only the CLI and the benchmarks opt in
    assert "lmlib.runtime" in sys.modules


def test_grad_accumulation_equals_a_batch_that_many_times_larger(tmp_path):
    one = run(tmp_path, "one", batch_size=8, grad_accum=2, max_steps=6)
    big = run(tmp_path, "big", batch_size=16, grad_accum=1, max_steps=6)
    # The same 16 windows per step (two draws of 8 are one draw of 16), the same mean gradient.
    assert one.metrics["train_loss"] == pytest.approx(big.metrics["train_loss"], rel=1e-5)
    a, b = one.model.state_dict(), big.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)
    assert one.metrics["config"]["runtime"]["global_batch"] == 16
