"""Seconds to execute each chapter notebook, and the total.

    python bench/book_runtime.py

Each chapter runs in a fresh kernel with the same pinned environment that
`tools/execute_notebooks.py` uses (2 threads, fixed seeds); the stored notebooks are
not modified. Kernel start-up is part of each chapter's time, as it is for a reader.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import append_result, table  # noqa: E402
from tools.execute_notebooks import execute  # noqa: E402

CHAPTER_LIMIT, BOOK_LIMIT = 90, 720  # seconds (issue 6)


def main() -> None:
    rows, total = [], 0.0
    for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        t = time.perf_counter()
        execute(path)  # returns the executed copy; nothing is written
        secs = time.perf_counter() - t
        total += secs
        rows.append((path.stem, f"{secs:.1f}", "ok" if secs <= CHAPTER_LIMIT else f"OVER {CHAPTER_LIMIT} s"))
        print(*rows[-1], flush=True)
    print(table(rows, ("chapter", "seconds", f"<= {CHAPTER_LIMIT} s")))
    print(f"total {total:.0f} s (target <= {BOOK_LIMIT} s)")
    slowest = sorted(rows, key=lambda r: -float(r[1]))[:3]
    append_result("book-runtime", f"{len(rows)} chapters, total {total:.0f} s; slowest "
                  + ", ".join(f"{n} {s} s" for n, s, _ in slowest)
                  + ("" if all(r[2] == "ok" for r in rows) else "; SOME OVER 90 s"))


if __name__ == "__main__":
    main()
