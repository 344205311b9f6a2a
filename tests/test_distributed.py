"""DistributedDataParallel on 2 CPU processes (gloo, 127.0.0.1), launched with torchrun.

One launch runs tests/ddp_worker.py, which trains several small runs; the tests read what
each rank reported and compare it with single-process runs here. Three more launches run
`lmlib train` (data prepared once, a run killed with SIGKILL, its resume), and one starts
two torchrun agents as two "machines" (--nnodes 2, c10d rendezvous).
"""

import json
import os
import socket
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


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra,
            "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}


def _launch(out, mode, *args, env=None, check=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", str(HERE / "ddp_worker.py"), str(out), mode, *args]
    done = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _launch(out, "main")
    return out


ACCUM = {**SETTINGS, "dropout": 0.1}


def single(tmp_path, name, **kw):
    return train(char_data(), out_dir=str(tmp_path / name), **{**ACCUM, **kw})


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


@pytest.mark.parametrize("mode", [{}, {"max_steps": None, "epochs": 2}], ids=["steps", "epochs"])
def test_2_processes_x_accumulation_2_equal_1_x_4_with_dropout(ddp, tmp_path, mode):
    name = "accum_epoch" if mode else "accum_step"
    (r0, r1), (w0, w1) = reported(ddp, name)
    one = single(tmp_path, name, grad_accum=4, **mode)
    assert r0["status"] == one.status == "finished" and r0["steps"] == one.steps
    assert r0["runtime"]["world_size"] == 2 and r0["runtime"]["grad_accum"] == 2
    # the same windows and the same dropout masks (seeded per micro-batch), summed in another order
    assert r0["train_loss"] == pytest.approx(one.metrics["train_loss"], rel=1e-5)
    # validation, sharded over the two processes, gives the one-process number
    assert [v for v in r0["val_loss"] if v is not None] == pytest.approx(
        [v for v in one.metrics["val_loss"] if v is not None], rel=1e-5)
    assert r0["val_loss"] == r1["val_loss"] and close(w0, one.model.state_dict())


def test_fine_tuning_under_ddp_equals_one_process_with_twice_the_accumulation(tmp_path):
    from lmlib.finetune import finetune
    from lmlib.instruct import make_examples
    from lmlib.run import load_data

    base = tmp_path / "base"
    train(load_data("synthetic", n_tokens=4000), out_dir=str(base), max_steps=4, block_size=48, n_layer=1,
          n_head=2, n_embd=16, batch_size=4, eval_interval=2, progress=False, plots=False)
    sft = dict(epochs=2, lr=3e-3, batch_size=4, eval_interval=4, log_interval=2, progress=False, plots=False,
               device="cpu")
    _launch(tmp_path / "ddp", "finetune", str(base), json.dumps(sft))
    (r0, r1), (w0, w1) = reported(tmp_path / "ddp", "sft")
    one = finetune(base, make_examples(32, "train"), make_examples(8, "val"), out_dir=tmp_path / "one",
                   grad_accum=2, **sft)
    assert r0["status"] == r1["status"] == one.status == "finished" and r0["steps"] == one.steps == 2 * 32 // 8
    assert r0["runtime"]["world_size"] == 2 and r0["runtime"]["global_batch"] == 8
    # the same rows and loss masks, summed in another order
    assert r0["train_loss"] == pytest.approx(one.metrics["train_loss"], rel=1e-5)
    assert [v for v in r0["val_loss"] if v is not None] == pytest.approx(
        [v for v in one.metrics["val_loss"] if v is not None], rel=1e-5)
    assert all(torch.equal(w0[k], w1[k]) for k in w0) and close(w0, one.model.state_dict())


def test_a_stop_on_one_rank_stops_both(ddp):
    (r0, r1), _ = reported(ddp, "stop_one")
    assert r0["status"] == r1["status"] == "stopped" and r0["steps"] == r1["steps"] == 4


def test_deferred_check_a_nan_on_one_rank_ends_both_at_the_next_entry(ddp):
    (r0, r1), _ = reported(ddp, "nan_deferred")
    assert r0["status"] == r1["status"] == "diverged" and r0["steps"] == r1["steps"] == 5
    assert r0["nonfinite"] == r1["nonfinite"] == {"steps": 1, "first_step": 5, "last_step": 5}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_equal_two_processes_on_one(ddp, tmp_path):
    port = _free_port()
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(i),
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lmlib-test",
         str(HERE / "ddp_worker.py"), str(tmp_path), "nodes"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    assert all(a.returncode == 0 for a in agents), "\n".join(o[-3000:] for o in outs)
    (n0, _), (nw0, _) = reported(tmp_path, "accum_step")
    (r0, _), (w0, _) = reported(ddp, "accum_step")
    assert n0["train_loss"] == pytest.approx(r0["train_loss"], rel=1e-5) and n0["val_loss"] == r0["val_loss"]
    assert close(nw0, w0)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """`lmlib train` under torchrun: whole, killed with SIGKILL after step 6, resumed."""
    from test_cli import PLAY

    whole, killed = tmp_path_factory.mktemp("cli_whole"), tmp_path_factory.mktemp("cli_killed")
    text = whole / "play.txt"
    text.write_text(PLAY)
    env = _env(LMLIB_CACHE=str(whole / "cache"))
    _launch(whole, "cli", str(text), env=env)
    died = _launch(killed, "killed", str(text), env=env, check=False)
    assert died.returncode != 0
    at_kill = load_checkpoint(killed / "cli" / "run" / "last.pt")["step"]
    _launch(killed, "resume", str(text), env=env)
    return whole, killed, at_kill


def test_cli_prepares_the_data_once_on_rank_0(cli_runs):
    whole, killed, _ = cli_runs
    assert (whole / "cli" / "prepared").read_text().split() == ["0"]  # one bpe training, on rank 0
    assert not (killed / "cli" / "prepared").exists()  # later launches read its cache
    assert [(whole / "cli" / f"cli{r}.code").read_text() for r in (0, 1)] == ["0", "0"]


def test_a_ddp_run_killed_and_resumed_equals_the_uninterrupted_one(cli_runs):
    whole, killed, at_kill = cli_runs
    assert at_kill == 4  # the last evaluation before the kill
    a = load_checkpoint(whole / "cli" / "run" / "last.pt")
    b = load_checkpoint(killed / "cli" / "run" / "last.pt")
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bit-identical
    assert json.loads(a["metrics"])["train_loss"] == json.loads(b["metrics"])["train_loss"]
    ranks = a["rng_ranks"]  # every rank's random streams, gathered to rank 0
    assert len(ranks) == 2 and not torch.equal(ranks[0]["cpu"], ranks[1]["cpu"])
