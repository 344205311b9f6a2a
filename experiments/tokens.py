"""Characters against byte-level BPE on Tiny Shakespeare, compared in bits per byte.

    python experiments/tokens.py [--data PATH]   # writes experiments/tokens_results.json

The same small GPT (lmlib's ``shakespeare-char-cpu`` preset: 1 layer, width 128, a
64-token context), trained on the same text with two tokenizers: characters, and a
512-token byte-level BPE learned (from scratch) on the training part. Both validate on
the same last 10% of the text, cut at a line break, so their bits per byte are measured
on exactly the same bytes.

1. Equal steps: both tokenizers, the preset's 1,000 steps, 3 seeds.
2. Equal compute time: a BPE step costs a little more (its embedding table and output
   layer are 8 times wider), so BPE is also trained for fewer steps, 1,000 times the
   character model's CPU seconds per step over BPE's (measured in 1), with its own full
   schedule.

The text is read from ``--data`` (default: lmlib's cache, downloaded once by
``lmlib.download``); its sha256 is checked and recorded. One thread; times are CPU
seconds of this process. About 2 minutes of CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lmlib  # noqa: E402
from lmlib import data as D  # noqa: E402
from lmlib.bpe import BPETokenizer  # noqa: E402
from lmlib.download import TINY_SHAKESPEARE_SHA256, download_tiny_shakespeare  # noqa: E402
from lmlib.fsutil import atomic_write_text, sha256_file  # noqa: E402
from lmlib.metrics import bits_per_byte  # noqa: E402
from lmlib.tokenizers import CharTokenizer  # noqa: E402

OUT = ROOT / "experiments" / "tokens_results.json"
PRESET, STEPS, SEEDS, VOCAB = "shakespeare-char-cpu", 1000, [0, 1, 2], 512
RUN = dict(progress=False, save_checkpoints=False, eval_batches=None, eval_interval=250)


def datasets(text: str) -> dict[str, D.TokenData]:
    """The same train/validation text, tokenized by characters and by BPE."""
    cut = text.index("\n", int(0.9 * len(text))) + 1
    train_text, val_text = text[:cut], text[cut:]
    out = {}
    for name, tok in [("char", CharTokenizer.fit(text)), ("bpe", BPETokenizer.train(train_text, VOCAB))]:
        out[name] = D.TokenData(train=tok.encode_array(train_text), val=tok.encode_array(val_text), tokenizer=tok,
                                name=f"tinyshakespeare-{name}")
    return out


def one_run(data: D.TokenData, kind: str, seed: int, steps: int) -> dict:
    start = time.process_time()
    result = lmlib.train(data, preset=PRESET, out_dir=tempfile.mkdtemp(), plots=False, seed=seed,
                         max_steps=steps, **RUN)
    cpu = time.process_time() - start
    m = result.metrics
    loss = [v for v in m["val_loss"] if v is not None][-1]
    bpb = bits_per_byte(loss, D.tokens_per_byte(data))
    print(f"  {kind:>4} seed {seed} steps {steps}: val {loss:.4f} nats/token, {bpb:.4f} bits/byte "
          f"({cpu:.1f} CPU s)", flush=True)
    return {"tokenizer": kind, "seed": seed, "steps": steps, "val_loss": loss, "val_bits_per_byte": bpb,
            "cpu_seconds": cpu, "cpu_per_step": cpu / steps, "n_params": result.model.num_params(),
            "embedding_params": result.model.tok_emb.weight.numel()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a copy of tinyshakespeare.txt (default: lmlib's cache, downloaded once)")
    a = p.parse_args(argv)
    source = Path(a.data) if a.data else download_tiny_shakespeare()
    if sha256_file(source) != TINY_SHAKESPEARE_SHA256:
        raise SystemExit(f"{source} is not Tiny Shakespeare (sha256 differs)")
    torch.set_num_threads(1)
    text = source.read_text(encoding="utf-8")
    data = datasets(text)
    wall, cpu = time.time(), time.process_time()
    runs = [one_run(data[k], k, s, STEPS) for s in SEEDS for k in ("char", "bpe")]
    per_step = {k: float(np.mean([r["cpu_per_step"] for r in runs if r["tokenizer"] == k])) for k in data}
    equal_time = round(STEPS * per_step["char"] / per_step["bpe"])
    runs += [dict(one_run(data["bpe"], "bpe", s, equal_time), equal_time=True) for s in SEEDS]
    meta = {
        "preset": PRESET, "model": {k: v for k, v in lmlib.PRESETS[PRESET].items() if k in lmlib.model.MODEL_KEYS},
        "steps": STEPS, "bpe_steps_equal_time": equal_time, "seeds": SEEDS, "bpe_vocab_size": VOCAB,
        "data_sha256": TINY_SHAKESPEARE_SHA256, "data_bytes": len(text.encode()),
        "val_bytes": len(data["char"].tokenizer.decode(data["char"].val).encode()),
        "val_tokens": {k: len(d.val) for k, d in data.items()},
        "val_tokens_per_byte": {k: D.tokens_per_byte(d) for k, d in data.items()},
        "vocab_size": {k: d.tokenizer.vocab_size for k, d in data.items()},
        "bpe_merges": len(data["bpe"].tokenizer.merges),
        "cpu_seconds": time.process_time() - cpu, "wall_seconds": time.time() - wall,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    atomic_write_text(OUT, json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({meta['cpu_seconds']:.0f} CPU s, {meta['wall_seconds']:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
