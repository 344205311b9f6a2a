"""Loss against data on real text: Tiny Shakespeare, characters, a fixed small model.

    python experiments/scaling_shakespeare.py                  # the text from lmlib's cache
    python experiments/scaling_shakespeare.py --text PATH      # or a copy of it anywhere

writes experiments/scaling_shakespeare.json. The same data sweep as experiments/scaling.py
runs on the synthetic corpus, on a text whose irreducible loss nobody knows:

- the text is split as lmlib does for Tiny Shakespeare (nanoGPT's split: the last 10% of
  the characters validate), and every run is measured on that whole validation split;
- the model and recipe are those of the synthetic data sweep (2 layers, width 32, 2 heads,
  a context of 16, batches of 16 windows), so that only the corpus changes, except the
  learning rate: half the synthetic sweep's (0.3 / 32 instead of 0.6 / 32), the best of
  a small probe on this text (0.0047 ... 0.019 at 125,000 and 1,000,000 characters);
  half and twice it, at those two sizes (seed 0), are run again and stored as group
  "lr", so that the choice can be checked;
- it is trained on 15,625 ... 1,000,000 characters (doubling), 5 seeds: the seed-to-seed
  spread on this text is large, and the chapter fits the seeds and resamples them. Each
  run reads one contiguous stretch of the training split, starting at an offset drawn
  from its seed and size (so the seed sets the initial weights, the batch order *and*
  which part of the plays it reads), once (one epoch), with its own complete warm-up +
  cosine schedule.

One thread. About 4 minutes of CPU time (the committed file: 233 s of CPU, 304 s of wall
time on a shared 2-core machine); wall time depends on how busy the machine is.
If the text is not cached, lmlib downloads it (once) and checks its sha256.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lmlib  # noqa: E402
from lmlib.data import TokenData, tokens_per_byte  # noqa: E402
from lmlib.download import TINY_SHAKESPEARE_SHA256, download_tiny_shakespeare  # noqa: E402
from lmlib.fsutil import sha256_file  # noqa: E402
from lmlib.scaling import run_sweep  # noqa: E402

OUT = ROOT / "experiments" / "scaling_shakespeare.json"
VAL_FRACTION = 0.1
# the data sweep's model and recipe in experiments/scaling.py (width 32), at half its learning rate
MODEL = dict(n_layer=2, n_head=2, n_embd=32, block_size=16)
TRAIN = dict(batch_size=16, lr=0.3 / 32)
DATA_CHARS, SEEDS = [15_625 * 2**k for k in range(7)], [0, 1, 2, 3, 4]
PROBE_LRS, PROBE_CHARS = [TRAIN["lr"] / 2, TRAIN["lr"] * 2], [125_000, 1_000_000]


def points() -> list[dict]:
    pts = [{"group": "data", "seed": s, "train_chars": d, "lr": TRAIN["lr"], "settings": {"seed": s}}
           for s in SEEDS for d in DATA_CHARS]
    pts += [{"group": "lr", "seed": 0, "train_chars": d, "lr": lr, "settings": {"seed": 0, "lr": lr}}
            for d in PROBE_CHARS for lr in PROBE_LRS]
    return pts


def offset(seed: int, chars: int, n_train: int) -> int:
    """Where a run's stretch of text starts: drawn from (seed, size), the same on every machine."""
    return int(np.random.default_rng([seed, chars]).integers(0, n_train - chars + 1))


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Nats per character of the best context-free guess: the training split's character
    frequencies (add-one smoothed), scored on the validation split. A reference line."""
    p = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
    return float(-np.mean(np.log(p[val])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", help="the Tiny Shakespeare text (default: lmlib's cached copy, "
                                   "downloaded once if missing)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    torch.set_num_threads(1)
    text = Path(a.text) if a.text else download_tiny_shakespeare()
    sha = sha256_file(text)
    if sha != TINY_SHAKESPEARE_SHA256:
        print(f"warning: {text} is not Tiny Shakespeare (sha256 {sha}); the sweep runs on it anyway")
    data = lmlib.load_data(str(text), tokenizer="char", val_fraction=VAL_FRACTION)
    train, val = np.asarray(data.train), np.asarray(data.val)
    if max(DATA_CHARS) > len(train):
        raise SystemExit(f"the training split holds {len(train):,} characters, fewer than {max(DATA_CHARS):,}")

    def data_for(point: dict) -> TokenData:
        start = offset(point["seed"], point["train_chars"], len(train))
        return TokenData(train=train[start:start + point["train_chars"]], val=val, tokenizer=data.tokenizer,
                         name=data.name, meta={})

    common = dict(**MODEL, **TRAIN, epochs=1, max_steps=None, eval_batches=None, eval_interval=10**9,
                  log_interval=50, out_dir="/tmp/lmlib-scaling-shakespeare-run")
    tpb = tokens_per_byte(data)
    meta = {
        "what": "validation loss against training characters on Tiny Shakespeare, a fixed small model",
        "text_sha256": sha, "text_bytes": text.stat().st_size, "tiny_shakespeare": sha == TINY_SHAKESPEARE_SHA256,
        "tokenizer": "char", "vocab_size": data.vocab_size, "val_fraction": VAL_FRACTION,
        "train_split_chars": len(train), "val_chars": len(val), "val_tokens_per_byte": tpb,
        "unigram_val_loss": unigram_loss(train, val, data.vocab_size),
        "offsets": "numpy.random.default_rng([seed, train_chars]).integers(0, train_split_chars - train_chars + 1)",
        "nats_to_bits_per_byte": tpb / math.log(2) if tpb else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    pts = points()
    for p in pts:  # the stretch each run read, in the file
        p["offset"] = offset(p["seed"], p["train_chars"], len(train))
    result = run_sweep(pts, data_for, out=a.out, common=common, meta=meta)
    print(f"{len(result['runs'])} runs, {result['meta']['wall_s']:.0f} s wall, {result['meta']['cpu_s']:.0f} s CPU -> {a.out}")


if __name__ == "__main__":
    main()
