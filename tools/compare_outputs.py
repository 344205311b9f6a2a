#!/usr/bin/env python
"""Show which stored outputs differ between executions of the chapters.

``python tools/compare_outputs.py DIR_A DIR_B [DIR_C ...]`` compares every
notebook that the folders share, cell by cell, the way ``pytest --nbval``
does: text outputs only (images and widget ids are skipped), after the
sanitize rules of ``nbval.cfg``, and not for cells that opt out with
``# NBVAL_IGNORE_OUTPUT``. A folder may be ``book`` itself.

It is how the chapters are made portable: execute them once per CPU
capability (``tools/execute_notebooks.py --out-dir``, with
``ATEN_CPU_CAPABILITY=default``, ``avx2`` ...), then list every output that
one machine's rounding changed. Exit status 1 when any output differs.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
#: What nbval does not compare (plugin.py, ``skip_compare``).
SKIPPED = {"image/png", "image/jpeg", "application/vnd.jupyter.widget-view+json"}


def sanitize_rules(path: Path = ROOT / "nbval.cfg") -> list[tuple[re.Pattern[str], str]]:
    """The ``regex:``/``replace:`` pairs of an nbval sanitize file, in order."""
    rules, regex = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("regex:"):
            regex = line[len("regex:") :].strip()
        elif line.startswith("replace:") and regex is not None:
            rules.append((re.compile(regex), line[len("replace:") :].strip()))
            regex = None
    return rules


def ignored(cell: nbformat.NotebookNode) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return "NBVAL_IGNORE_OUTPUT" in cell.source or "nbval-ignore-output" in tags or "nbval-skip" in tags


def comparable(cell: nbformat.NotebookNode, rules: list[tuple[re.Pattern[str], str]]) -> str:
    """The text nbval compares for one code cell, as one string."""
    parts: list[str] = []
    previous_stream = None
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            # Consecutive writes to one stream are one output (nbval merges them too).
            if previous_stream == out.name:
                parts[-1] += out.text
            else:
                parts.append(f"[{out.name}] {out.text}")
            previous_stream = out.name
            continue
        previous_stream = None
        if out.output_type in ("display_data", "execute_result"):
            for mime, value in sorted(out.data.items()):
                if mime not in SKIPPED:
                    parts.append(f"[{mime}] {value if isinstance(value, str) else ''.join(value)}")
        elif out.output_type == "error":
            parts.append(f"[error] {out.ename}: {out.evalue}")
    text = "\n".join(parts)
    for regex, replace in rules:
        text = regex.sub(replace, text)
    return text


def compare(folders: list[Path]) -> int:
    rules = sanitize_rules()
    names = sorted(set.intersection(*({p.name for p in f.glob("*.ipynb")} for f in folders)))
    differing = 0
    for name in names:
        books = [nbformat.read(f / name, as_version=4) for f in folders]
        cells = [[c for c in nb.cells if c.cell_type == "code"] for nb in books]
        if len({len(c) for c in cells}) != 1:
            print(f"{name}: the folders hold different versions of this notebook (code cell counts differ)")
            differing += 1
            continue
        for index, versions in enumerate(zip(*cells)):
            if ignored(versions[0]):
                continue
            texts = [comparable(c, rules) for c in versions]
            if len(set(texts)) == 1:
                continue
            differing += 1
            number = books[0].cells.index(versions[0])
            print(f"--- {name} cell {number} (code cell {index}): {versions[0].source.splitlines()[0][:70]!r}")
            for folder, text in zip(folders[1:], texts[1:]):
                if text == texts[0]:
                    continue
                diff = difflib.unified_diff(texts[0].splitlines(), text.splitlines(), str(folders[0]), str(folder), n=0, lineterm="")
                for line in list(diff)[2:]:
                    print("   ", line[:200])
    print(f"{differing} cell(s) differ across {len(names)} notebook(s)")
    return 1 if differing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of executed notebooks (book/ for the stored ones)")
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two folders")
    return compare(args.folders)


if __name__ == "__main__":
    sys.exit(main())
