"""Throughput and MFU of lmlib's trainer on nanoGPT's documented CPU recipe.

    python bench/throughput.py --data ../shared/data/tinyshakespeare.txt

Config: the preset `shakespeare-char-nanogpt` (char-level Tiny Shakespeare, 4 layers,
4 heads, width 128, context 64, batch 12, no dropout, no biases, AdamW (0.9, 0.99),
weight decay 0.1, clip 1.0, lr 1e-3 with 100 warm-up steps, cosine decay to 1e-4). Tokens/s are measured
between logging steps with validation switched off, after the first 50 steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_result, matmul_peak  # noqa: E402

NANOGPT_TOKENS_PER_S = (15_000, 16_300)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare", help="text file (default: download Tiny Shakespeare)")
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    import torch

    import lmlib

    torch.set_num_threads(a.threads)
    data = lmlib.load_data(a.data, tokenizer="char", val_fraction=0.1)
    cfg = {k: v for k, v in lmlib.PRESETS["shakespeare-char-nanogpt"].items() if k != "val_fraction"}
    cfg.update(max_steps=a.iters, eval_interval=10**9, log_interval=25, progress=False, save_checkpoints=False)
    rates = []
    for r in range(a.repeats):
        stamps: list[tuple[int, float]] = []
        def stamp(m, stamps=stamps):
            stamps.append((m["steps"][-1], time.perf_counter()))

        res = lmlib.train(data, out_dir=f"/tmp/lmlib-bench-throughput-{r}", plots=False, callbacks=[stamp], **cfg)
        steady = [(s, t) for s, t in stamps if s >= 50][:-1]  # skip warm-up and the final evaluation
        (s0, t0), (s1, t1) = steady[0], steady[-1]
        rates.append((s1 - s0) * 12 * 64 / (t1 - t0))
        n_params = res.model.num_params() - res.model.pos_emb.weight.numel()
    tok_s = statistics.median(rates)
    L, H, Q, T = 4, 4, 128 // 4, 64
    flops_per_token = 6 * n_params + 12 * L * H * Q * T
    peak = matmul_peak(threads=a.threads)
    mfu = tok_s * flops_per_token / peak
    ms_iter = 1000 * 12 * 64 / tok_s
    print(f"params (nanoGPT count) {n_params / 1e6:.2f}M; runs: {', '.join(f'{x:,.0f}' for x in rates)} tokens/s")
    print(f"median {tok_s:,.0f} tokens/s = {ms_iter:.1f} ms/iter; matmul peak {peak / 1e9:.0f} GFLOP/s; MFU {100 * mfu:.1f}%")
    lo, hi = NANOGPT_TOKENS_PER_S
    print(f"vs nanoGPT {lo:,}-{hi:,} tokens/s: {tok_s / hi:.2f}x-{tok_s / lo:.2f}x (target >= 1.15x, MFU >= 52%)")
    append_result("throughput", f"{tok_s:,.0f} tok/s median of {a.repeats} ({ms_iter:.1f} ms/iter), "
                  f"MFU {100 * mfu:.1f}% of {peak / 1e9:.0f} GFLOP/s, {tok_s / ((lo + hi) / 2):.2f}x nanoGPT")


if __name__ == "__main__":
    main()
