"""Seconds to execute each chapter notebook (a copy; the stored notebook is untouched).

    python bench/book_runtime.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_result, table  # noqa: E402


def main() -> None:
    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    rows, total = [], 0.0
    for path in sorted((root / "book").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        secs = time.perf_counter() - t
        total += secs
        rows.append((path.stem, f"{secs:.1f}", "ok" if secs <= 90 else "OVER 90 s"))
        print(rows[-1], flush=True)
    print(table(rows, ("chapter", "seconds", "<= 90 s")))
    print(f"total {total:.0f} s (target <= 720 s)")
    append_result("book-runtime", f"total {total:.0f} s; slowest " + ", ".join(
        f"{n} {s} s" for n, s, _ in sorted(rows, key=lambda r: -float(r[1]))[:3]))


if __name__ == "__main__":
    main()
