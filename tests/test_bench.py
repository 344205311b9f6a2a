"""The benchmark scripts run (tiny settings) and record a row; their figures are not checked here."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def text(tmp_path):
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "the", "king", "queen", "shall", "speak", "now", "ROMEO:", "\n"]
    path = tmp_path / "text.txt"
    path.write_text(" ".join(rng.choice(words, 20_000)))
    return path


def run_bench(tmp_path, *args):
    env = {**os.environ, "LMLIB_BENCH_RESULTS": str(tmp_path / "results.md"), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| 20")]
    return done.stdout, rows


def test_throughput_and_time_to_quality(tmp_path, text):
    out, rows = run_bench(tmp_path, "bench/throughput.py", "--data", str(text), "--iters", "120", "--repeats", "1")
    assert "MFU" in out and len(rows) == 1 and "| throughput |" in rows[0]
    out, rows = run_bench(tmp_path, "bench/time_to_quality.py", "--data", str(text), "--preset", "tiny",
                          "--target", "10", "--repeats", "1")
    assert len(rows) == 2 and "| time-to-quality |" in rows[1] and "1/1" not in rows[1]  # reached: a median


def test_data_pipeline(tmp_path, text):
    out, rows = run_bench(tmp_path, "bench/data_pipeline.py", "--data", str(text), "--mb", "1", "--big-gb", "0.01")
    assert "MB/s" in out and len(rows) == 1 and "| data-pipeline |" in rows[0]
