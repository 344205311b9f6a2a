"""lmlib.runtime: the execution policy. Precision per card (driven with fake compute
capabilities), TF32 only when asked and restored, the deferred finite check (CUDA's
policy) run on the CPU, and 16-bit CPU training through autocast and the gradient scaler."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmlib import runtime as R
from lmlib.checkpoint import load_checkpoint
from lmlib.cli import main
from lmlib.config import TrainConfig
from lmlib.errors import LmlibError
from lmlib.model import GPTConfig
from lmlib.run import train
from lmlib.runtime import Precision, Runtime, choose_precision, precision_dtype
from lmlib.trainer import Trainer

from helpers import TINY, char_data, same_weights

HERE = Path(__file__).resolve().parent
T4, V100, A100, H100 = (7, 5), (7, 0), (8, 0), (9, 0)


# --- precision: a pure function of (request, device type, capability) ---------------------------

@pytest.mark.parametrize("capability, expected", [(T4, "float16"), (V100, "float16"), (A100, "bfloat16"),
                                                  (H100, "bfloat16")])
def test_auto_on_cuda_uses_bf16_only_where_the_card_has_it_natively(capability, expected):
    assert precision_dtype("auto", "cuda", capability) == expected


def test_explicit_requests():
    with pytest.raises(LmlibError, match="no native bfloat16: use --dtype float16"):
        precision_dtype("bfloat16", "cuda", T4)
    assert precision_dtype("float32", "cuda", A100) == "float32"
    for device in ("cpu", "mps"):
        assert precision_dtype("auto", device) == "float32"  # the book's stored results are fp32
        assert precision_dtype("float16", device) == "float16"  # CPU autocast, and MPS with GradScaler("mps")
        assert precision_dtype("bfloat16", device) == "bfloat16"


def test_float16_gets_a_gradient_scaler_on_the_cpu_too():
    p = choose_precision("float16", torch.device("cpu"))
    assert p.name == "float16" and isinstance(p.scaler, torch.amp.GradScaler) and p.scaler._device == "cpu"
    assert choose_precision("bfloat16", torch.device("cpu")).scaler is None
    assert choose_precision("float32", torch.device("cpu")).autocast().__class__.__name__ == "nullcontext"


# --- TF32: only when asked, recorded, restored --------------------------------------------------

def _fake_cuda(monkeypatch):
    monkeypatch.setattr(R, "process_device", lambda name, dist: torch.device("cuda"))


@pytest.mark.parametrize("dtype, tf32, expected", [("auto", None, True), ("float32", None, False),
                                                   ("float32", True, True), ("auto", False, False)])
def test_tf32_only_with_dtype_auto_or_when_asked(monkeypatch, dtype, tf32, expected):
    _fake_cuda(monkeypatch)
    rt = Runtime.create("cuda", dtype, tf32=tf32, capability=A100, dist=R.Distributed())
    assert rt.tf32 is expected and rt.describe()["tf32"] is expected
    assert rt.finite_check == "deferred"  # auto on CUDA


def test_active_sets_tf32_and_restores_it():
    cpu = torch.device("cpu")
    before = torch.get_float32_matmul_precision()
    on = Runtime(torch.device("cuda"), Precision(cpu, None), tf32=True)
    with on.active():
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before
    torch.set_float32_matmul_precision("high")  # someone turned it on: a float32 run turns it off, then back
    try:
        with Runtime(torch.device("cuda"), Precision(cpu, None), tf32=False).active():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_cpu_run_touches_no_process_wide_switch(tmp_path):
    before = torch.get_float32_matmul_precision()
    r = train(char_data(), out_dir=str(tmp_path), max_steps=2, **TINY)
    assert torch.get_float32_matmul_precision() == before
    assert r.metrics["config"]["runtime"] | {} == {**r.metrics["config"]["runtime"], "device": "cpu",
                                                    "dtype": "float32", "tf32": False, "finite_check": "every-step"}


# --- the deferred finite check (CUDA's policy) on the CPU ---------------------------------------

def _nan_gradient_at(trainer, step):
    seen = []
    trainer.model.lm_head.weight.register_hook(lambda g: (seen.append(1), g * math.nan if len(seen) == step else g)[1])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "adamw-scratch", "muon"])
def test_a_nan_between_two_checks_ends_the_run_as_diverged(tmp_path, optimizer):
    # The review's replay: NaN gradient at step 25, entries every 10 steps. Before, CUDA's
    # control flow skipped it silently (fused AdamW's found_inf) and "finished" at 60.
    d = char_data()
    cfg = TrainConfig(max_steps=60, batch_size=8, log_interval=10, eval_interval=10, eval_batches=2, progress=False,
                      out_dir=str(tmp_path), finite_check="deferred", optimizer=optimizer, lr=1e-3)
    tr = Trainer(GPTConfig(vocab_size=d.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16), d, cfg)
    _nan_gradient_at(tr, 25)
    saved = {}
    tr.callbacks.append(lambda m: saved.update({m["steps"][-1]: (tmp_path / "last.pt").read_bytes()}))
    r = tr.fit()
    assert r.status == "diverged" and r.steps == 29  # found at the check after step 30
    assert r.metrics["nonfinite"] == {"steps": 1, "first_step": 25, "last_step": 25}
    assert "infinite or NaN at step 25" in r.message
    assert (tmp_path / "last.pt").read_bytes() == saved[20]  # the last good checkpoint, byte for byte
    assert all(torch.isfinite(p).all() for p in load_checkpoint(tmp_path / "last.pt")["model"].values())
    assert all(torch.isfinite(p).all() for p in r.model.parameters())  # the NaN never reached the weights
    assert json.loads((tmp_path / "training_metrics.json").read_text())["status"] == "diverged"


def test_every_step_policy_is_unchanged_on_the_cpu(tmp_path):
    d = char_data()
    cfg = TrainConfig(max_steps=60, batch_size=8, log_interval=10, eval_interval=50, eval_batches=2, progress=False,
                      out_dir=str(tmp_path), save_checkpoints=False)
    tr = Trainer(GPTConfig(vocab_size=d.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16), d, cfg)
    _nan_gradient_at(tr, 25)
    r = tr.fit()
    assert (r.status, r.steps) == ("diverged", 24) and r.metrics["nonfinite"]["first_step"] == 25


def test_cli_acceptance_lr_1e6_deferred_ends_diverged(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "synthetic", "--n-tokens", "20000", "--lr", "1e6", "--grad-clip", "0", "--log-interval",
                 "10", "--finite-check", "deferred", "--max-steps", "40", "--n-layer", "1", "--n-embd", "16",
                 "--n-head", "2", "--block-size", "16", "--batch-size", "8", "--no-progress", "--out-dir", str(out)])
    assert code == 1
    m = json.loads((out / "training_metrics.json").read_text())  # strict JSON
    assert m["status"] == "diverged" and m["nonfinite"]["steps"] >= 1 and m["config"]["runtime"]["finite_check"] == "deferred"
    assert "diverged" in capsys.readouterr().out


# --- 16-bit training on the CPU: the scaler's path, its state, exact resume after kill -9 --------

KILLED = """
import os, signal, sys
sys.path.insert(0, {here!r})
from helpers import TINY, char_data
from lmlib.run import train
def kill(m):
    if m["steps"][-1] == 10:
        os.kill(os.getpid(), signal.SIGKILL)
train(char_data(), callbacks=[kill], out_dir={out!r}, **{settings!r})
"""


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_cpu_training_resumes_exactly_after_kill_9(tmp_path, dtype):
    settings = {**TINY, "max_steps": 16, "lr": 3e-3, "warmup_steps": 2, "dtype": dtype, "device": "cpu"}
    straight = train(char_data(), out_dir=str(tmp_path / "straight"), **settings)
    assert straight.status == "finished" and straight.metrics["config"]["runtime"]["dtype"] == dtype
    code = KILLED.format(here=str(HERE), out=str(tmp_path / "killed"), settings=settings)
    # The killed run uses this process's number of threads: 16-bit CPU kernels round differently
    # with another number, and the comparison below is bit for bit.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert ckpt["step"] == 8  # the evaluation before the kill
    if dtype == "float16":
        assert ckpt["scaler"]["scale"] > 0  # the scaler's state travels with the run
    resumed = train(char_data(), out_dir=str(tmp_path / "killed"), resume=True, **settings)
    assert resumed.status == "finished" and resumed.steps == 16
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.metrics["train_loss"] == straight.metrics["train_loss"]


def test_float16_overflow_is_skipped_by_the_scaler_not_counted_as_divergence(tmp_path):
    # A gradient overflow in fp16 is routine: the scaler skips the update and lowers its scale.
    d = char_data()
    cfg = TrainConfig(max_steps=12, batch_size=8, log_interval=4, eval_interval=4, eval_batches=2, progress=False,
                      out_dir=str(tmp_path), dtype="float16", device="cpu", finite_check="deferred")
    tr = Trainer(GPTConfig(vocab_size=d.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16), d, cfg)
    seen = []
    tr.model.lm_head.weight.register_hook(lambda g: (seen.append(1), g * math.inf if len(seen) == 5 else g)[1])
    scale0 = tr.precision.scaler.get_scale()
    r = tr.fit()
    assert r.status == "finished" and "nonfinite" not in r.metrics
    assert tr.precision.scaler.get_scale() < scale0  # found_inf lowered the scale


@pytest.mark.slow
def test_compile_trains_on_the_cpu(tmp_path):
    r = train(char_data(), out_dir=str(tmp_path), max_steps=4, compile=True, device="cpu", **TINY)
    assert r.status == "finished" and r.metrics["config"]["runtime"]["compiled"] is True


def test_the_mps_random_state_is_saved_and_restored(monkeypatch):
    # No Mac here: torch.mps's two RNG calls are replaced by a recorder, so the path runs.
    from lmlib.runtime import Distributed
    from lmlib.trainstate import rng_state, set_rng_state

    device_state = {"now": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: device_state["now"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda t: device_state.update(now=t.clone()))
    saved = rng_state(torch.device("mps"))
    assert torch.equal(saved["mps"], torch.tensor([1, 2, 3], dtype=torch.uint8))
    device_state["now"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # the stream moves on
    set_rng_state({"rng_ranks": [saved]}, torch.device("mps"), Distributed())
    assert torch.equal(device_state["now"], saved["mps"])
