"""Data pipeline: tokenization speed and memory, and training memory from big token files.

    python bench/data_pipeline.py --data ../shared/data/tinyshakespeare.txt

1. Tokenize a ~100 MB text file (the given file repeated) into a token file:
   seconds, MB/s and peak memory (a child process, so its peak RSS is its own).
2. Train 200 steps (`--train-steps`) from a 1 GB token file and from a 1 MB one: peak
   memory of each.
   The token file is read through a memory map, so memory should not grow with it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_result  # noqa: E402

CHILD_TOKENIZE = """
import resource, sys, time
from lmlib.data import tokenize_file
t = time.perf_counter()
tf = tokenize_file(sys.argv[1], sys.argv[2], kind="char")
print(time.perf_counter() - t, tf.n_tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
CHILD_TRAIN = """
import resource, sys, torch
torch.set_num_threads(int(sys.argv[4]))
import lmlib
from lmlib.runtime import keep_freed_memory
keep_freed_memory()  # as `lmlib train` does
data = lmlib.load_data(sys.argv[1], val_fraction=0.001)
steps = int(sys.argv[3])
lmlib.train(data, out_dir=sys.argv[2], max_steps=steps, block_size=64, n_layer=2, n_head=2, n_embd=64,
            batch_size=32, eval_interval=max(1, steps // 2), eval_batches=4, progress=False, save_checkpoints=False,
            plots=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_token_file(path: Path, n_tokens: int, vocab: list[str]) -> None:
    """A random token file of n_tokens (uint16), written in chunks, with its sidecar."""
    import numpy as np

    rng = np.random.default_rng(0)
    with open(path.with_suffix(".bin"), "wb") as f:
        left = n_tokens
        while left:
            n = min(left, 1 << 24)
            rng.integers(0, len(vocab), n, dtype=np.uint16).tofile(f)
            left -= n
    meta = {"format": "lmlib-tokens", "version": 1, "dtype": "uint16", "n_tokens": n_tokens,
            "vocab_size": len(vocab), "tokenizer": {"kind": "char", "vocab": vocab}, "source": "random",
            "source_bytes": 0, "source_sha256": ""}
    path.with_suffix(".json").write_text(json.dumps(meta))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--mb", type=int, default=100, help="size of the text file to tokenize")
    p.add_argument("--big-gb", type=float, default=1.0)
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training runs")
    a = p.parse_args()
    root = Path(__file__).resolve().parents[1]
    env_py = [sys.executable, "-c"]
    if a.data == "shakespeare":
        from lmlib.download import download_tiny_shakespeare

        a.data = str(download_tiny_shakespeare())
    src = Path(a.data).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big_text = tmp / "big.txt"
        with big_text.open("wb") as f:
            for _ in range(max(1, a.mb * 1_000_000 // len(src))):
                f.write(src)
        mb = big_text.stat().st_size / 1e6
        out = subprocess.run([*env_py, CHILD_TOKENIZE, str(big_text), str(tmp / "big")], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
        secs, n_tokens, rss_kb = float(out[0]), int(out[1]), int(out[2])
        print(f"tokenize {mb:.0f} MB: {secs:.2f} s = {mb / secs:.0f} MB/s, {n_tokens:,} tokens, "
              f"peak RSS {rss_kb / 1024:.0f} MB (target >= 50 MB/s)")
        vocab = json.loads((tmp / "big.json").read_text())["tokenizer"]["vocab"]
        big_text.unlink()
        peaks = {}
        for name, n in (("1 MB", 500_000), (f"{a.big_gb:g} GB", int(a.big_gb * 1e9) // 2)):
            tok = tmp / f"tokens-{n}"
            make_token_file(tok, n, vocab)
            r = subprocess.run([*env_py, CHILD_TRAIN, str(tok.with_suffix(".bin")), str(tmp / f"run-{n}"),
                                str(a.train_steps), str(a.threads)],
                               cwd=root, capture_output=True, text=True, check=True)
            peaks[name] = int(r.stdout.split()[-1]) / 1024
            tok.with_suffix(".bin").unlink()
            print(f"train from {name} token file: peak RSS {peaks[name]:.0f} MB")
        small, big = peaks.values()
        print(f"difference {big - small:+.0f} MB (target within 100 MB)")
    append_result("data-pipeline", f"tokenize {mb:.0f} MB at {mb / secs:.0f} MB/s (peak {rss_kb / 1024:.0f} MB); "
                  f"train peak RSS {small:.0f} MB (1 MB file) vs {big:.0f} MB ({a.big_gb:g} GB file)")


if __name__ == "__main__":
    main()
