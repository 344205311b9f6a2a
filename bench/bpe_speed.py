"""Byte-level BPE speed: training and encoding in MB/s, from-scratch vs fast backend, and memory.

    python bench/bpe_speed.py --data ../shared/data/tinyshakespeare.txt [--merges 512] [--big-mb 100]

Times are wall-clock and CPU (process) seconds: on a shared machine the CPU figure is
the steadier one. --big-mb N also encodes (and trains the fast backend on) a text of
about N MB made of the file repeated with its lines shuffled (so it is not one text
repeated verbatim); the from-scratch trainer is timed on the file only.
Peak memory is the process's peak RSS after each stage (it only grows).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import append_result  # noqa: E402
from lmlib.bpe import BPETokenizer  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kw):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--merges", type=int, default=512)
    p.add_argument("--big-mb", type=float, default=0)
    p.add_argument("--no-append", action="store_true", help="print only; do not add a row to RESULTS.md")
    a = p.parse_args(argv)
    text = Path(a.data).read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    vocab = 256 + a.merges + 1
    parts, rows = [], []
    for backend in ("scratch", "fast"):
        tok, w, c = timed(BPETokenizer.train, text, vocab, backend=backend)
        assert len(tok.merges) == a.merges, len(tok.merges)
        rows.append(f"{backend} train {a.merges} merges: {w:.2f} s wall, {c:.2f} s CPU ({mb / w:.2f} MB/s)")
        tok._cache.clear()
        ids, wc, cc = timed(tok.encode_array, text)  # cold: every distinct piece encoded once
        _, ww, cw = timed(tok.encode_array, text)  # warm: the pieces are cached
        assert tok.decode(ids) == text
        rows.append(f"{backend} encode: cold {mb / wc:.1f} MB/s wall ({mb / cc:.1f} per CPU-s), "
                    f"warm {mb / ww:.1f} MB/s wall ({mb / cw:.1f} per CPU-s); {mb / len(ids) * 1e6:.2f} bytes/token")
        parts.append(f"{backend}: train {w:.1f} s ({c:.1f} s CPU), encode {mb / wc:.1f}/{mb / ww:.1f} MB/s "
                     f"cold/warm ({mb / cc:.1f}/{mb / cw:.1f} per CPU-s)")
        rows.append(f"peak RSS so far {peak_mb():.0f} MB")
    if a.big_mb:
        lines = text.splitlines(keepends=True)
        rng = random.Random(0)
        chunks, size = [], 0
        while size < a.big_mb * 1e6:
            rng.shuffle(lines)
            chunk = "".join(lines)
            chunks.append(chunk)
            size += len(chunk.encode("utf-8"))
        big = "".join(chunks)
        bmb = len(big.encode("utf-8")) / 1e6
        fast, w, c = timed(BPETokenizer.fit_chunks, chunks, vocab_size=vocab, backend="fast")
        ids, we, ce = timed(fast.encode_array, big)
        rows.append(f"{bmb:.0f} MB: fast train {bmb / w:.1f} MB/s ({bmb / c:.1f} per CPU-s), encode {bmb / we:.1f} "
                    f"MB/s ({bmb / ce:.1f} per CPU-s); peak RSS {peak_mb():.0f} MB")
        parts.append(rows[-1])
    for r in rows:
        print(r)
    if not a.no_append:
        cmd_note = f"{mb:.1f} MB text, {a.merges} merges; " + "; ".join(parts) + f"; peak RSS {peak_mb():.0f} MB"
        append_result("bpe", cmd_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
