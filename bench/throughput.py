"""Training throughput of lmlib's trainer against a plain PyTorch loop, side by side, and MFU.

    python bench/throughput.py --data ../shared/data/tinyshakespeare.txt

Both sides train the same model (`lmlib.model.GPT`, a preset's settings; default the
preset `shakespeare-char-nanogpt`: char-level Tiny Shakespeare, 4 layers, 4 heads, width
128, context 64, batch 12, AdamW (0.9, 0.99), weight decay 0.1, clip 1.0, lr 1e-3 with
100 warm-up steps, cosine decay to 1e-4) on the same data, in fp32, on the same number of
threads:

- lmlib: `lmlib.train` with validation switched off (it still writes the metrics file at
  every logging step, as a run does);
- plain: bench/plain_loop.py, the loop a user would write with torch alone (nanoGPT's
  batches, `torch.optim.AdamW` with torch's default implementation).

Each measurement runs in a fresh process, alternating lmlib, plain, lmlib, plain, ...,
so the host's drifting speed (other tenants) hits both sides alike and neither inherits
the other's process state. Both processes get the same allocator setting: glibc tuned
by `lmlib.runtime.keep_freed_memory` as `lmlib train` does (`--allocator tuned`, the
default), or left alone (`--allocator default`, as a plain script runs). Tokens/s are
timed between logging steps after `--warmup` steps; each process measures the fp32
matmul peak just before training, and MFU is its rate against that peak (nanoGPT's
FLOP count). The ratio lmlib/plain is the median of the pairs' ratios. Tokens per
CPU-second (the process's CPU time, all threads) are reported too: on a host shared
with other work they move less than the wall clock, which counts the time the process
waited for a core (but they leave out time spent waiting on the disk); "MFU in CPU
time" divides them by the matmul's FLOP per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_result, matmul_peaks, table  # noqa: E402

KINDS = ("lmlib", "plain")


def flops_per_token(model, cfg: dict) -> tuple[int, int]:
    """nanoGPT's count: parameters without the position embedding, plus attention."""
    L, H, C, T = (cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size"))
    n_params = model.num_params() - model.pos_emb.weight.numel()
    return n_params, 6 * n_params + 12 * L * H * (C // H) * T


def measure(a: argparse.Namespace) -> dict:
    """One timed run, in this (child) process: lmlib's trainer or the plain loop."""
    import torch

    import lmlib
    from lmlib.model import GPTConfig
    from lmlib.run import split_overrides
    from lmlib.trainer import TrainConfig

    torch.set_num_threads(a.threads)
    if a.allocator == "tuned":
        from lmlib.runtime import keep_freed_memory

        keep_freed_memory()
    data = lmlib.load_data(a.data, tokenizer="char", val_fraction=0.1)
    settings = {k: v for k, v in lmlib.PRESETS[a.preset].items() if k != "val_fraction"}
    model_kw, train_kw = split_overrides(settings)
    mcfg = GPTConfig(vocab_size=data.vocab_size, **model_kw)
    tcfg = TrainConfig(**{**train_kw, "max_steps": a.iters}).resolved()
    B, T = tcfg.batch_size, mcfg.block_size
    peak, cpu_peak = matmul_peaks(threads=a.threads, seconds=a.peak_seconds)
    stamps: list[tuple[int, float, float]] = []  # (step, wall clock, this process's CPU time)
    losses: list[float] = []
    t_start = time.perf_counter()
    if a.child == "lmlib":
        def stamp(m):
            stamps.append((m["steps"][-1], time.perf_counter(), time.process_time()))

        with tempfile.TemporaryDirectory() as out:
            res = lmlib.train(data, plots=False, callbacks=[stamp], **{
                **settings, "max_steps": a.iters, "eval_interval": 10**9, "log_interval": a.log_interval,
                "progress": False, "save_checkpoints": False, "device": "cpu", "dtype": "float32", "out_dir": out})
        model, final_loss = res.model, res.metrics["train_loss"][-1]
    else:
        from bench.plain_loop import train

        def on_step(step, loss):
            losses.append(loss.item())
            if step % a.log_interval == 0:
                stamps.append((step, time.perf_counter(), time.process_time()))

        model = train(data.train, mcfg, steps=a.iters, batch_size=B, lr=tcfg.lr, min_lr=tcfg.min_lr,
                      warmup_steps=tcfg.warmup_steps, beta1=tcfg.beta1, beta2=tcfg.beta2,
                      weight_decay=tcfg.weight_decay, grad_clip=tcfg.grad_clip, seed=tcfg.seed, on_step=on_step)
        final_loss = statistics.fmean(losses[-a.log_interval:])
    steady = [st for st in stamps if a.warmup <= st[0] < a.iters]  # not the last step (lmlib validates there)
    if len(steady) < 2:
        raise SystemExit(f"too few logging steps to time: need two multiples of --log-interval {a.log_interval} "
                         f"in [--warmup {a.warmup}, --iters {a.iters})")
    (s0, t0, c0), (s1, t1, c1) = steady[0], steady[-1]
    tok_s = (s1 - s0) * B * T / (t1 - t0)
    n_params, fpt = flops_per_token(model, mcfg.to_dict())
    tok_cpu_s = (s1 - s0) * B * T / (c1 - c0)
    return {"kind": a.child, "tokens_per_s": tok_s, "tokens_per_cpu_s": tok_cpu_s, "peak": peak,
            "mfu": tok_s * fpt / peak, "cpu_mfu": tok_cpu_s * fpt / cpu_peak, "n_params": n_params, "flops_per_token": fpt, "final_loss": final_loss, "vocab_size": data.vocab_size, "steps_timed": s1 - s0,
            "seconds": time.perf_counter() - t_start, "ms_per_iter": 1000 * B * T / tok_s}


def run_child(kind: str, argv: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, *argv, "--child", kind], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare", help="text file (default: download Tiny Shakespeare)")
    p.add_argument("--preset", default="shakespeare-char-nanogpt", help="model and optimizer settings (lmlib.PRESETS)")
    p.add_argument("--iters", type=int, default=600, help="training steps per run")
    p.add_argument("--warmup", type=int, default=50, help="steps before the timing starts")
    p.add_argument("--log-interval", type=int, default=25, help="lmlib's logging interval; also the timing marks")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="pairs of runs (lmlib, plain)")
    p.add_argument("--peak-seconds", type=float, default=1.0, help="time spent measuring the matmul peak")
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                   help="glibc as `lmlib train` sets it (keep_freed_memory), or untouched; the same for both sides")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a)))
        return
    if a.data == "shakespeare":
        from lmlib.download import download_tiny_shakespeare

        a.data = str(download_tiny_shakespeare())
    argv = ["--data", a.data, "--preset", a.preset, "--iters", str(a.iters), "--warmup", str(a.warmup),
            "--log-interval", str(a.log_interval), "--threads", str(a.threads),
            "--peak-seconds", str(a.peak_seconds), "--allocator", a.allocator]
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}
    for r in range(a.repeats):
        for kind in KINDS:  # A B A B ...
            res = run_child(kind, argv, a.threads)
            runs[kind].append(res)
            print(f"pair {r} {kind:>5}: {res['tokens_per_s']:,.0f} tokens/s "
                  f"({res['tokens_per_cpu_s']:,.0f} per CPU-second), MFU {100 * res['mfu']:.1f}% "
                  f"(peak {res['peak'] / 1e9:.0f} GFLOP/s), final train loss {res['final_loss']:.3f}", flush=True)
    first = runs["lmlib"][0]
    print(f"\npreset {a.preset}: params (nanoGPT count) {first['n_params'] / 1e6:.2f}M, "
          f"{first['flops_per_token'] / 1e6:.2f} MFLOP per token; {a.iters} steps, timed {first['steps_timed']}; "
          f"{a.threads} threads, fp32, allocator {a.allocator}")
    rows = [(r, k, f"{x['tokens_per_s']:,.0f}", f"{x['ms_per_iter']:.1f}", f"{x['tokens_per_cpu_s']:,.0f}",
             f"{x['peak'] / 1e9:.0f}", f"{100 * x['mfu']:.1f}%", f"{x['final_loss']:.3f}")
            for r in range(a.repeats) for k in KINDS for x in [runs[k][r]]]
    print(table(rows, ("pair", "loop", "tokens/s", "ms/iter", "tokens/CPU-s", "peak GFLOP/s", "MFU", "final loss")))
    med = {k: statistics.median(x["tokens_per_s"] for x in runs[k]) for k in KINDS}
    cpu = {k: statistics.median(x["tokens_per_cpu_s"] for x in runs[k]) for k in KINDS}
    mfu = {k: statistics.median(x["mfu"] for x in runs[k]) for k in KINDS}
    cpu_mfu = {k: statistics.median(x["cpu_mfu"] for x in runs[k]) for k in KINDS}
    ratios = [lm["tokens_per_s"] / pl["tokens_per_s"] for lm, pl in zip(runs["lmlib"], runs["plain"])]
    cpu_ratios = [lm["tokens_per_cpu_s"] / pl["tokens_per_cpu_s"] for lm, pl in zip(runs["lmlib"], runs["plain"])]
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    for k in KINDS:
        print(f"{k:>5}: median {med[k]:,.0f} tokens/s, MFU {100 * mfu[k]:.1f}%; {cpu[k]:,.0f} tokens per CPU-second, "
              f"MFU in CPU time {100 * cpu_mfu[k]:.1f}%")
    print(f"lmlib/plain: {ratio:.3f} (median of the pairs' ratios: " + ", ".join(f"{x:.3f}" for x in ratios) + ")")
    print(f"lmlib/plain per CPU-second: {cpu_ratio:.3f} (" + ", ".join(f"{x:.3f}" for x in cpu_ratios)
          + "; on a shared host, less disturbed by other tenants than the wall clock)")
    peak = statistics.median(x["peak"] for k in KINDS for x in runs[k])
    append_result("throughput", f"preset {a.preset}, {a.iters} steps, {a.threads} threads, fp32, allocator "
                  f"{a.allocator}, {a.repeats} A/B pairs: lmlib {med['lmlib']:,.0f} tok/s (MFU "
                  f"{100 * mfu['lmlib']:.1f}%), plain PyTorch loop {med['plain']:,.0f} tok/s (MFU "
                  f"{100 * mfu['plain']:.1f}%); lmlib/plain {ratio:.3f} (pairs "
                  + ", ".join(f"{x:.3f}" for x in ratios) + f"), per CPU-second {cpu_ratio:.3f} (pairs "
                  + ", ".join(f"{x:.3f}" for x in cpu_ratios) + f"), MFU in CPU time lmlib {100 * cpu_mfu['lmlib']:.1f}%, "
                  f"plain {100 * cpu_mfu['plain']:.1f}%; matmul peak median {peak / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
