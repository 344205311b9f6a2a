#!/usr/bin/env python
"""Run every exercise's written solution through its checker.

``python tools/check_solutions.py [--compare] [book/NN_x.ipynb ...]`` executes each
chapter once, top to bottom, with every exercise cell (a code cell that starts
with ``answer = None``) replaced by the solution written in the ````{dropdown}````
block that follows it (its first fenced ``python`` block), and checks that the
exercise's checker cells (the code cells between the exercise and its solution)
print "correct". Exit status 1 when an exercise has no written solution, or
its solution does not pass.

With ``--compare`` every other cell's output is also compared with the stored
one, as ``pytest --nbval`` does (tools/compare_outputs.py): the same execution
then also checks the stored outputs, e.g. under another ``ATEN_CPU_CAPABILITY``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from compare_outputs import comparable, ignored, sanitize_rules  # noqa: E402
from execute_notebooks import KERNEL_NAME, kernel_environment  # noqa: E402

SOLUTION = re.compile(r"```python\n(.*?)```", re.S)


def exercises(nb: nbformat.NotebookNode) -> list[tuple[int, list[int], str | None]]:
    """(exercise cell, checker cells, solution code or None) for each exercise."""
    starts = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.lstrip().startswith("answer = None")]
    found = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(nb.cells)
        solution, checkers = None, []
        for i in range(start + 1, end):
            cell = nb.cells[i]
            if cell.cell_type == "markdown" and "{dropdown}" in cell.source and SOLUTION.search(cell.source):
                solution = SOLUTION.search(cell.source).group(1)
                break
            if cell.cell_type == "code":
                checkers.append(i)
        found.append((start, checkers, solution))
    return found


def check(path: Path, timeout: int = 600, compare: bool = False, env: dict[str, str] | None = None) -> list[str]:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    stored = nbformat.read(path, as_version=4)
    found = exercises(nb)
    problems = [f"{path.name} cell {start}: no written solution in a dropdown after it"
                for start, _, solution in found if solution is None]
    if problems or not found:
        return problems
    for start, _, solution in found:
        nb.cells[start].source = solution
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**kernel_environment(), **(env or {})})
    if compare:
        rules = sanitize_rules()
        own = {start for start, _, _ in found} | {i for _, checkers, _ in found for i in checkers}
        for i, (new, old) in enumerate(zip(nb.cells, stored.cells)):
            if new.cell_type == "code" and i not in own and not ignored(old) and comparable(new, rules) != comparable(old, rules):
                problems.append(f"{path.name} cell {i}: output differs from the stored one "
                                f"(tools/compare_outputs.py shows how): {comparable(new, rules)[:160]!r}")
    for start, checkers, _ in found:
        printed = "".join(o.get("text", "") for i in checkers for o in nb.cells[i].outputs if o.output_type == "stream")
        if "correct" not in printed.split() or "not quite" in printed or "not answered" in printed:
            problems.append(f"{path.name} cell {start}: the written solution does not pass its checker: {printed.strip()[:200]!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="chapters (default: book/*.ipynb)")
    parser.add_argument("--compare", action="store_true", help="also compare every other output with the stored one")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "book").glob("*.ipynb"))
    problems = [p for path in paths for p in check(path, compare=args.compare)]
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {len(paths)} chapter(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
