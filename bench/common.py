"""Shared pieces of the benchmarks: machine description, matmul peak, results table."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")  # LMLIB_BENCH_RESULTS=path writes elsewhere (tests)
HEADER = "| date | benchmark | machine | torch | command | figures |\n|---|---|---|---|---|---|\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def matmul_peak(n: int = 512, threads: int | None = None, seconds: float = 2.0) -> float:
    """Achieved fp32 FLOP/s of an n x n matmul (median of repeated timings)."""
    return matmul_peaks(n, threads, seconds)[0]


def matmul_peaks(n: int = 512, threads: int | None = None, seconds: float = 2.0) -> tuple[float, float]:
    """fp32 matmul FLOP per second of wall clock and per second of this process's CPU time (medians)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(10):
        a @ b
    rates, cpu_rates, end = [], [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t, c = time.perf_counter(), time.process_time()
        for _ in range(10):
            a @ b
        rates.append(10 * 2 * n**3 / (time.perf_counter() - t))
        cpu_rates.append(10 * 2 * n**3 / max(time.process_time() - c, 1e-9))
    return statistics.median(rates), statistics.median(cpu_rates)


def append_result(benchmark: str, figures: str) -> None:
    """Append one dated row to bench/RESULTS.md (machine, torch, command, figures)."""
    from importlib.metadata import version  # torch's version without importing torch

    results = Path(os.environ.get("LMLIB_BENCH_RESULTS") or RESULTS)
    if not results.exists():
        results.write_text("# Benchmark results\n\nOne row per run, appended by the scripts in bench/.\n\n" + HEADER)
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    row = f"| {dt.date.today()} | {benchmark} | {machine()} | {version('torch')} | `{cmd}` | {figures} |\n"
    with results.open("a") as f:
        f.write(row)
    print(f"appended to {results}")


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), *(fmt.format(*map(str, r)) for r in rows)])
