"""How loss scales on the synthetic corpus, whose irreducible loss is known exactly.

    python experiments/scaling.py            # writes experiments/scaling_results.json

Three sweeps, every run with its own complete warm-up + cosine schedule, one pass
over freshly sampled training tokens (no token is seen twice), and the validation
loss measured on one fixed held-out sample of 50,000 tokens:

- data:    a fixed model (width 32), 10k ... 320k training tokens, 3 seeds;
- size:    320k training tokens, widths 4 ... 64 (2 layers), 1 seed;
- compute: four budgets of training FLOPs (lmlib.scaling.flops_per_token), for each
           the widths whose run is 30 ... 9,000 steps long, tokens = budget / FLOPs per token
           (widths down to 4, so that each IsoFLOP curve can turn up on both sides).

The learning rate follows width (min(0.03, 0.6 / width), from a small sweep at 40k
tokens): a fixed rate would make the small models look worse than they are.
Runs in one thread: these models are so small that a second thread mostly waits.
About 4 to 5 minutes of CPU time; wall time depends on how busy the machine is.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lmlib  # noqa: E402
from lmlib.data import TokenData  # noqa: E402
from lmlib.model import GPTConfig  # noqa: E402
from lmlib.scaling import flops_per_token, run_sweep  # noqa: E402

OUT = ROOT / "experiments" / "scaling_results.json"
BLOCK, LAYERS, HEADS, BATCH = 16, 2, 2, 16
VAL_TOKENS, VAL_SEED = 50_000, 10_000
DATA_WIDTH, DATA_TOKENS, DATA_SEEDS = 32, [10_000 * 2**k for k in range(6)], [0, 1, 2]
SIZE_TOKENS, WIDTHS = 320_000, [4, 6, 8, 12, 16, 24, 32, 48, 64]
BUDGETS, MIN_STEPS, MAX_STEPS = [1e9, 3e9, 1e10, 3e10], 30, 9000


def lr_for(width: int) -> float:
    return min(0.03, 0.6 / width)


def settings(width: int) -> dict:
    return {"n_embd": width, "lr": lr_for(width)}


def points() -> list[dict]:
    pts = []
    for seed in DATA_SEEDS:
        for d in DATA_TOKENS:
            pts.append({"group": "data", "seed": seed, "train_tokens": d, "width": DATA_WIDTH,
                        "settings": {**settings(DATA_WIDTH), "seed": seed}})
    for w in WIDTHS:
        pts.append({"group": "size", "seed": 0, "train_tokens": SIZE_TOKENS, "width": w,
                    "settings": {**settings(w), "seed": 0}})
    for budget in BUDGETS:
        for w in WIDTHS:
            fpt = flops_per_token(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=LAYERS, n_head=HEADS, n_embd=w))
            steps = round(budget / fpt / (BATCH * BLOCK))
            if MIN_STEPS <= steps <= MAX_STEPS:
                # one pass over exactly steps * batch windows (+1 token for the last target)
                pts.append({"group": "compute", "seed": 0, "budget": budget, "width": w,
                            "train_tokens": steps * BATCH * BLOCK + 1, "settings": {**settings(w), "seed": 0}})
    return pts


CORPUS = lmlib.load_data("synthetic", n_tokens=10_000).corpus
VOCAB = CORPUS.tokenizer().vocab_size
VAL = np.asarray(CORPUS.sample_tokens(VAL_TOKENS, VAL_SEED))


def data_for(point: dict) -> TokenData:
    # seed 1000*k + tokens: each run its own fresh sample, disjoint in seed from the validation
    train = np.asarray(CORPUS.sample_tokens(point["train_tokens"], 1000 * (point["seed"] + 1) + point["train_tokens"]))
    return TokenData(train=train, val=VAL, tokenizer=CORPUS.tokenizer(), name="synthetic", meta={}, corpus=CORPUS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--only", choices=["data", "size", "compute"], help="run one sweep only")
    a = ap.parse_args()
    torch.set_num_threads(1)
    pts = [p for p in points() if a.only is None or p["group"] == a.only]
    common = dict(block_size=BLOCK, n_layer=LAYERS, n_head=HEADS, batch_size=BATCH, epochs=1, max_steps=None,
                  eval_batches=None, eval_interval=10**9, log_interval=50, out_dir="/tmp/lmlib-scaling-run")
    meta = {
        "what": "loss vs data, model size and compute on lmlib's synthetic corpus",
        "floor": CORPUS.expected_optimal_loss(BLOCK),
        "entropy_per_token": CORPUS.entropy_per_token(),
        "block_size": BLOCK, "vocab_size": VOCAB, "val_tokens": VAL_TOKENS, "val_seed": VAL_SEED,
        "lr_rule": "min(0.03, 0.6 / n_embd)", "flops": "lmlib.scaling.flops_per_token (6N + attention, Kaplan)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    result = run_sweep(pts, data_for, out=a.out, common=common, meta=meta)
    print(f"{len(result['runs'])} runs, {result['meta']['wall_s']:.0f} s wall, {result['meta']['cpu_s']:.0f} s CPU -> {a.out}")


if __name__ == "__main__":
    main()
