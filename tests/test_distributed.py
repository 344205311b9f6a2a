"""DistributedDataParallel on 2 CPU processes (gloo, 127.0.0.1), launched with torchrun.

One launch runs tests/ddp_worker.py, which trains three small runs; the tests read what
each rank reported and compare it with single-process runs here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmlib.checkpoint import load_checkpoint
from lmlib.run import train

from helpers import TINY, char_data

HERE = Path(__file__).resolve().parent
SETTINGS = {**TINY, "max_steps": 12, "lr": 3e-3, "warmup_steps": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", str(HERE / "ddp_worker.py"), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def reported(ddp, name):
    return [json.loads((ddp / name / f"rank{r}.json").read_text()) for r in (0, 1)], \
           [torch.load(ddp / name / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def close(a, b, atol=1e-5):
    """Parameters agree to 1e-5. Most agree to 1e-7; the key slice of qkv.bias has an exactly
    zero true gradient, and Adam turns the rounding noise there into steps (see test_optim)."""
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_both_ranks_hold_identical_weights(ddp):
    (r0, r1), (w0, w1) = reported(ddp, "whole")
    assert r0["status"] == r1["status"] == "finished" and r0["steps"] == 12
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert r0["runtime"] == {**r0["runtime"], "world_size": 2, "grad_accum": 1, "global_batch": 16}


def test_two_processes_equal_one_process_with_twice_the_accumulation(ddp, tmp_path):
    (r0, _), (w0, _) = reported(ddp, "whole")
    single = train(char_data(), out_dir=str(tmp_path / "single"), grad_accum=2, **SETTINGS)
    # The same windows, the same mean gradient: equal to float rounding (the sums run in another order).
    assert r0["train_loss"] == pytest.approx(single.metrics["train_loss"], rel=1e-5)
    vals = [v for v in single.metrics["val_loss"] if v is not None]
    assert [v for v in r0["val_loss"] if v is not None] == pytest.approx(vals, rel=1e-5)
    assert close(w0, single.model.state_dict())


def test_only_rank_0_wrote_files(ddp):
    # The worker makes every lmlib writer fail on rank 1, so a finished run proves it;
    # here: rank 0's files are all there.
    names = {p.name for p in (ddp / "whole" / "run").iterdir()}
    assert {"training_metrics.json", "training_curve.png", "loss_by_epoch.png", "best.pt", "last.pt"} <= names


def test_a_ddp_checkpoint_resumes_in_one_process(ddp, tmp_path):
    (r0, r1), _ = reported(ddp, "half")
    assert r0["status"] == r1["status"] == "stopped" and r0["steps"] == 6
    run_dir = ddp / "half" / "run"
    assert load_checkpoint(run_dir / "last.pt")["step"] == 6
    with pytest.raises(Exception, match="global batch"):  # same data, but half the batch
        train(char_data(), out_dir=str(run_dir), resume=True, **SETTINGS)
    resumed = train(char_data(), out_dir=str(run_dir), resume=True, grad_accum=2, **SETTINGS)
    straight = train(char_data(), out_dir=str(tmp_path / "straight"), grad_accum=2, **SETTINGS)
    assert resumed.steps == 12
    assert resumed.metrics["train_loss"] == pytest.approx(straight.metrics["train_loss"], rel=1e-5)
    assert close(resumed.model.state_dict(), straight.model.state_dict())


def test_a_nan_on_one_rank_ends_both_as_diverged(ddp):
    (r0, r1), _ = reported(ddp, "nan")
    assert r0["status"] == r1["status"] == "diverged"
    assert r0["steps"] == r1["steps"] == 4
    assert json.loads((ddp / "nan" / "run" / "training_metrics.json").read_text())["status"] == "diverged"
