"""Byte-level BPE speed: training and encoding in MB/s, from-scratch vs fast backend, and memory.

    python bench/bpe_speed.py --data ../shared/data/tinyshakespeare.txt [--merges 512] [--big-mb 100] [--crlf]
                              [--baseline DIR]

Each backend runs in a fresh process, one after the other on the same text, so the two
are measured side by side and each one's memory is its own. Times are wall-clock and
CPU (process) seconds: on a shared machine the CPU figure is the steadier one.

- ``--data`` text: both backends train, then encode it (the from-scratch encoder twice:
  cold, then with its cache of pieces warm; the fast one on 1 thread and on all CPUs).
- ``--big-mb N`` adds a text of about N MB made of the file's lines, shuffled again for
  each copy (so it is not one text repeated verbatim, though its words are the file's).
  Both backends train on it and encode it. ``--crlf`` gives it Windows line ends (as in
  Project Gutenberg's books), where chunking once failed to find a place to cut.
- ``--baseline DIR`` runs the same figures first with the lmlib package found in DIR
  (e.g. ``git archive OLD lmlib | tar -x -C DIR``), side by side with this one.

Memory is the peak RSS of the process above what it held once the text was read.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import append_result  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kw):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def big_text(text: str, mb: float, crlf: bool = False) -> list[str]:
    """About ``mb`` MB of the text's lines, reshuffled for each copy, as a list of copies."""
    lines, rng, chunks, size = text.splitlines(keepends=True), random.Random(0), [], 0
    if crlf:
        lines = [line.replace("\n", "\r\n") for line in lines]
    while size < mb * 1e6:
        rng.shuffle(lines)
        chunks.append("".join(lines))
        size += len(chunks[-1].encode("utf-8"))
    return chunks


def one_backend(data: str, backend: str, merges: int, big_mb: float, crlf: bool = False) -> dict:
    """Train and encode with one backend in this process; return the figures."""
    from lmlib import bpe_fast
    from lmlib.bpe import BPETokenizer

    text = Path(data).read_text(encoding="utf-8")
    chunks = big_text(text, big_mb, crlf) if big_mb else [text]
    text = "".join(chunks)
    mb, base = len(text.encode("utf-8")) / 1e6, peak_mb()
    tok, w, c = timed(BPETokenizer.fit_chunks, chunks, vocab_size=256 + merges + 1, backend=backend)
    assert len(tok.merges) == merges, len(tok.merges)
    out = {"backend": backend, "mb": mb, "train_wall": w, "train_cpu": c}
    if backend == "scratch":
        ids, out["encode_wall"], out["encode_cpu"] = timed(tok.encode_array, text)  # cold: no piece known yet
        _, out["warm_wall"], out["warm_cpu"] = timed(tok.encode_array, text)  # every piece cached
    else:
        enc = tok._fast_encoder()
        _, out["one_thread_wall"], out["one_thread_cpu"] = timed(bpe_fast.encode, enc, text, threads=1)
        ids, out["encode_wall"], out["encode_cpu"] = timed(tok.encode_array, text)  # all CPUs
    out.update(bytes_per_token=mb * 1e6 / len(ids), peak_mb=peak_mb() - base, threads=bpe_fast.cpu_threads())
    assert tok.decode(ids) == text  # after the memory figure: decoding is not what is measured
    return out


def describe(r: dict) -> str:
    mb = r["mb"]
    s = (f"{r['backend']}: train {r['train_wall']:.1f} s ({mb / r['train_wall']:.2f} MB/s; "
         f"{mb / r['train_cpu']:.2f} per CPU-s), encode {mb / r['encode_wall']:.1f} MB/s "
         f"({mb / r['encode_cpu']:.1f} per CPU-s)")
    if "warm_wall" in r:
        s += f" cold, {mb / r['warm_wall']:.1f} warm ({mb / r['warm_cpu']:.1f} per CPU-s)"
    else:
        s += (f" on {r['threads']} threads, {mb / r['one_thread_wall']:.1f} on 1 "
              f"({mb / r['one_thread_cpu']:.1f} per CPU-s)")
    return s + f", {r['bytes_per_token']:.2f} bytes/token, +{r['peak_mb']:.0f} MB peak RSS"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--merges", type=int, default=512)
    p.add_argument("--big-mb", type=float, default=0)
    p.add_argument("--crlf", action="store_true", help="the --big-mb text with CRLF line ends")
    p.add_argument("--backends", default="scratch,fast", help="which to measure (default scratch,fast)")
    p.add_argument("--baseline", help="a folder holding an older lmlib package, measured first, side by side")
    p.add_argument("--no-append", action="store_true", help="print only; do not add a row to RESULTS.md")
    p.add_argument("--one", choices=["scratch", "fast"], help=argparse.SUPPRESS)  # the child process
    p.add_argument("--size-mb", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        if a.lib:
            sys.path.insert(0, a.lib)  # the baseline's lmlib, before this repository's
        print(json.dumps(one_backend(a.data, a.one, a.merges, a.size_mb, a.crlf)))
        return 0
    parts = []
    for size in [0.0] + ([a.big_mb] if a.big_mb else []):
        for backend in a.backends.split(","):
            for lib in ([a.baseline] if a.baseline else []) + [None]:
                cmd = [sys.executable, __file__, "--data", a.data, "--merges", str(a.merges), "--one", backend,
                       "--size-mb", str(size)] + (["--crlf"] if a.crlf else []) + (["--lib", lib] if lib else [])
                r = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)
                line = f"{'baseline ' if lib else ''}{r['mb']:.1f} MB{' CRLF' if a.crlf and size else ''}, " + describe(r)
                print(line, flush=True)
                parts.append(line)
    if not a.no_append:
        append_result("bpe", f"{a.merges} merges; " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
