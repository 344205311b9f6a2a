"""The benchmark scripts run at tiny settings, append a row, and report figures that a
broken run would get wrong (a model that does not learn, a baseline that trains
something else, a token file read into memory)."""

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.bench  # still inside `make test`; the fast suite deselects it with -m "not bench"


@pytest.fixture()
def text(tmp_path):
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "the", "king", "queen", "shall", "speak", "now", "ROMEO:", "\n"]
    path = tmp_path / "text.txt"
    path.write_text(" ".join(rng.choice(words, 20_000)))
    return path


def run_bench(tmp_path, *args):
    env = {**os.environ, "LMLIB_BENCH_RESULTS": str(tmp_path / "results.md"), "LMLIB_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    # its own process group, so that a timeout also ends the benchmark's child processes
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| 20")]
    return stdout, rows


def test_throughput_lmlib_against_plain_loop(tmp_path, text):
    out, rows = run_bench(tmp_path, "bench/throughput.py", "--data", text, "--preset", "tiny", "--iters", "30",
                          "--warmup", "10", "--log-interval", "5", "--repeats", "1", "--threads", "1",
                          "--peak-seconds", "0.2")
    assert len(rows) == 1 and "| throughput |" in rows[0] and "lmlib/plain" in rows[0]
    rate = {k: float(v.replace(",", "")) for k, v in re.findall(r"^ ?(lmlib|plain): median ([\d,]+) tokens/s", out, re.M)}
    mfu = dict(re.findall(r"^ ?(lmlib|plain): median .* MFU ([\d.]+)%", out, re.M))
    ratio = float(re.search(r"^lmlib/plain: ([\d.]+)", out, re.M).group(1))
    assert rate["lmlib"] > 0 and rate["plain"] > 0
    assert ratio == pytest.approx(rate["lmlib"] / rate["plain"], rel=2e-3)
    assert float(re.search(r"^lmlib/plain per CPU-second: ([\d.]+)", out, re.M).group(1)) > 0
    assert all(0 < float(m) <= 100 for m in mfu.values()) and set(mfu) == {"lmlib", "plain"}
    # both sides train the same model the same way: both learn, to about the same loss
    loss = {k: float(v) for k, v in re.findall(r"^pair 0 +(lmlib|plain): .*final train loss ([\d.]+)", out, re.M)}
    chance = math.log(len(set(text.read_text())))  # an untrained model's loss
    assert max(loss.values()) < chance - 0.5, (loss, chance)
    assert abs(loss["lmlib"] - loss["plain"]) < 0.25, loss


def test_time_to_quality_needs_learning(tmp_path, text):
    target = 2.5  # well below an untrained model's loss (ln of the vocabulary size, ~3.2), so it must train
    assert target < math.log(len(set(text.read_text()))) - 0.5
    out, rows = run_bench(tmp_path, "bench/time_to_quality.py", "--data", text, "--preset", "tiny",
                          "--target", target, "--eval-every", "1", "--budget", "60", "--repeats", "1",
                          "--threads", "1")
    assert len(rows) == 1 and "| time-to-quality |" in rows[0]
    assert f"to whole-split val <= {target}" in rows[0], rows[0]  # reached: a median time, not "0/1 runs"
    best = float(re.search(r"best val per run ([\d.]+)", rows[0]).group(1))
    assert best <= target


def test_data_pipeline_memory_does_not_grow_with_the_token_file(tmp_path, text):
    out, rows = run_bench(tmp_path, "bench/data_pipeline.py", "--data", text, "--mb", "1", "--big-gb", "0.05",
                          "--train-steps", "10", "--threads", "1")
    assert "MB/s" in out and len(rows) == 1 and "| data-pipeline |" in rows[0]
    # the 50 MB token file is read through a map, window by window: not loaded whole
    difference = float(re.search(r"^difference ([-+\d]+) MB", out, re.M).group(1))
    assert difference < 25, out


def test_bpe_speed_runs_both_backends_on_the_file_and_the_big_text(tmp_path, text):
    out, rows = run_bench(tmp_path, "bench/bpe_speed.py", "--data", text, "--merges", "30", "--big-mb", "0.5")
    lines = [ln for ln in out.splitlines() if " MB, " in ln]
    assert [ln.split(",")[1].split(":")[0].strip() for ln in lines] == ["scratch", "fast"] * 2
    assert float(lines[2].split(" MB")[0]) >= 0.5  # the big text is as big as asked
    bpt = [float(re.search(r"([\d.]+) bytes/token", ln).group(1)) for ln in lines]
    assert all(b > 1.5 for b in bpt)  # 30 merges of a 12-word text compress it
    assert len(rows) == 1 and "| bpe |" in rows[0]
