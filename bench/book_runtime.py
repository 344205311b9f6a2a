"""Seconds to execute each chapter notebook, and the total.

    python bench/book_runtime.py                          # every chapter, in reading order
    python bench/book_runtime.py book/05_more_data.ipynb  # only these (not recorded)

The chapters are the notebooks listed in _toc.yml, in reading order, so a renamed
or added chapter is timed as soon as the TOC lists it. Each chapter runs in a
fresh kernel with the same pinned environment that `tools/execute_notebooks.py`
uses (2 threads, fixed seeds); the stored notebooks are not modified. Kernel
start-up is part of each chapter's time, as it is for a reader. A run of the
whole book appends its total and slowest chapters to bench/RESULTS.md. Exit
status 1 when a chapter takes over 90 s or the whole run over 12 minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import append_result, table  # noqa: E402
from tools.book_site import toc_docnames  # noqa: E402

CHAPTER_LIMIT, BOOK_LIMIT = 90, 720  # seconds (issue 6)


def chapters(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """The chapter notebooks of the TOC, in reading order."""
    return [ROOT / f"{name}.ipynb" for name in toc_docnames(toc) if (ROOT / f"{name}.ipynb").is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter of _toc.yml")
    args = parser.parse_args(argv)
    from tools.execute_notebooks import execute  # jupyter client: imported only to run

    paths = [p.resolve() for p in args.notebooks] or chapters()
    rows, total = [], 0.0
    for path in paths:
        t = time.perf_counter()
        execute(path)  # returns the executed copy; nothing is written
        secs = time.perf_counter() - t
        total += secs
        rows.append((path.stem, f"{secs:.1f}", "ok" if secs <= CHAPTER_LIMIT else f"OVER {CHAPTER_LIMIT} s"))
        print(*rows[-1], flush=True)
    print(table(rows, ("chapter", "seconds", f"<= {CHAPTER_LIMIT} s")))
    over = [r[0] for r in rows if r[2] != "ok"]
    print(f"total {total:.0f} s (target <= {BOOK_LIMIT} s)" + (f"; over {CHAPTER_LIMIT} s: {', '.join(over)}" if over else ""))
    if not args.notebooks:  # only a run of the whole book is recorded
        slowest = sorted(rows, key=lambda r: -float(r[1]))[:3]
        append_result("book-runtime", f"{len(rows)} chapters, total {total:.0f} s; slowest "
                      + ", ".join(f"{n} {s} s" for n, s, _ in slowest)
                      + ("" if not over else "; SOME OVER 90 s"))
    return 1 if over or total > BOOK_LIMIT else 0


if __name__ == "__main__":
    sys.exit(main())
