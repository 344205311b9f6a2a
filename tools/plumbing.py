#!/usr/bin/env python
"""Share of the visible code lines that are test plumbing, per chapter:
``python tools/plumbing.py [--max 0.05] [--lines] [book/NN_x.ipynb ...]``.

The code a reader sees should read like teaching code. A line is plumbing
when it serves the book's tests rather than the lesson:

* ``glue``: part of a ``glue(...)`` call (every line of a call that spans
  several), or an import of nothing but ``glue``/``show``/``fmt``;
* ``tolerance``: part of a ``show(...)``/``fmt(...)`` call given a tolerance
  (``rel=``, ``atol=``, ``rtol=``), a line passing ``rel=``/``atol=``/``rtol=``
  to any other call, or an assignment to a tolerance constant (``REL``,
  ``ATOL_LOSS``, ``TOL`` ...);
* ``comment``: a block of comment lines of which one is about CPU kernels,
  tolerances or the output checks (kernel, AVX, ATEN_CPU_CAPABILITY, nbval,
  tolerance, rounding, another CPU ...).

Visible lines are the non-blank source lines of the code cells the HTML
shows: cells tagged ``remove-input``, ``remove-cell``, ``hide-input`` or
``hide-cell`` are collapsed or absent, and do not count (plumbing belongs
there). Exit status 1 when a chapter's share exceeds ``--max``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIDDEN_TAGS = {"remove-input", "remove-cell", "hide-input", "hide-cell"}
PLUMBING_NAMES = {"glue", "show", "fmt"}
TOLERANCE_KEYWORDS = {"rel", "atol", "rtol"}
TOLERANCE_CONSTANT = re.compile(r"^_?(REL|ATOL|RTOL|TOL)(_[A-Z0-9_]*)?$")
PLUMBING_COMMENT = re.compile(
    r"kernel(?!s? launch)|\bAVX|ATEN_CPU|\bnbval|NBVAL|toleran|\brel=|\batol|rounding|round the same|"
    r"(other|another|any|every|different) (CPU|processor|machine)s?\b|(across|between) (CPUs|processors|machines)",
    re.IGNORECASE,
)


@dataclass
class Count:
    """Visible and plumbing code lines of one chapter (or of the whole book)."""

    name: str
    visible: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: {"glue": 0, "tolerance": 0, "comment": 0})
    lines: list[str] = field(default_factory=list)

    @property
    def plumbing(self) -> int:
        return sum(self.kinds.values())

    @property
    def share(self) -> float:
        return self.plumbing / self.visible if self.visible else 0.0


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _code_plumbing(source: str) -> dict[int, str]:
    """Line number (1-based) -> kind, for the glue and tolerance lines of a cell."""
    # IPython magics and shell escapes are not Python: blank them, keeping line numbers.
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return {}
    found: dict[int, str] = {}

    def mark(node: ast.AST, kind: str) -> None:
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
            found.setdefault(line, kind)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            tolerances = [k for k in node.keywords if k.arg in TOLERANCE_KEYWORDS]
            if name == "glue":
                mark(node, "glue")
            elif name in PLUMBING_NAMES and tolerances:
                mark(node, "tolerance")
            else:
                for keyword in tolerances:
                    mark(keyword.value, "tolerance")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if all(alias.name.split(".")[-1] in PLUMBING_NAMES for alias in node.names):
                mark(node, "glue")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names and all(TOLERANCE_CONSTANT.match(n) for n in names):
                mark(node, "tolerance")
    return found


def _comment_plumbing(lines: list[str]) -> set[int]:
    """Line numbers (1-based) of comment blocks about kernels, tolerances or the checks."""
    found: set[int] = set()
    block: list[int] = []
    for number, line in enumerate([*lines, ""], start=1):
        if line.lstrip().startswith("#"):
            block.append(number)
            continue
        if block and any(PLUMBING_COMMENT.search(lines[n - 1]) for n in block):
            found.update(block)
        block = []
    return found


def count_notebook(path: Path) -> Count:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    count = Count(path.stem)
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code" or HIDDEN_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = source.splitlines()
        kinds = _code_plumbing(source)
        for number in _comment_plumbing(lines):
            kinds.setdefault(number, "comment")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            count.visible += 1
            if number in kinds:
                count.kinds[kinds[number]] += 1
                count.lines.append(f"  c{index}:{number} [{kinds[number]}] {line.strip()}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: the chapters book/NN_*.ipynb")
    parser.add_argument("--max", type=float, default=0.05, help="largest share allowed per chapter (default 0.05)")
    parser.add_argument("--lines", action="store_true", help="print every plumbing line")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print("plumbing: error: no notebooks", file=sys.stderr)
        return 2
    counts = [count_notebook(path) for path in paths]
    total = Count("total")
    for c in counts:
        total.visible += c.visible
        for kind, n in c.kinds.items():
            total.kinds[kind] += n
    width = max(len(c.name) for c in [*counts, total])
    print(f"{'chapter':<{width}}  visible  plumbing  share   glue  tolerance  comment")
    over = []
    for c in [*counts, total]:
        flag = ""
        if c is not total and c.share > args.max:
            over.append(c.name)
            flag = f"  OVER {args.max:.0%}"
        print(
            f"{c.name:<{width}}  {c.visible:7d}  {c.plumbing:8d}  {c.share:5.1%}  {c.kinds['glue']:5d}  "
            f"{c.kinds['tolerance']:9d}  {c.kinds['comment']:7d}{flag}"
        )
        if args.lines and c.lines:
            print("\n".join(c.lines))
    if over:
        print(f"{len(over)} chapter(s) over {args.max:.0%}: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
