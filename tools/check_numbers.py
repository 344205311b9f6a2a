#!/usr/bin/env python
"""List every number typed by hand into the chapters' prose.

``python tools/check_numbers.py [book/NN_name.ipynb ...]`` reads the markdown
cells of the chapters and prints each number that is not inserted by a
``{glue:text}`` role (or another glue role) and is not an allowed non-result.
Exit status 1 when there is one: a result stated in the prose must come from
the code that computed it, so that the text cannot drift from the run.

Not checked, because they are not results:

* code (inline and fenced), link targets, HTML tags and comments;
* numbered-list markers (also a bold ``**2.**`` opening a paragraph) and the
  chapter number of a heading;
* references to chapters and exercises ("chapter 7", "chapters 8 and 9",
  "Exercise 2");
* integers up to 10 inside math (exponents, fractions, indices).

Anything else that is not a result (a year, a number the source document
quotes, a constant of a formula) is allowed explicitly, per chapter, in the
notebook's metadata, with the reason::

    "metadata": {"lmlib": {"allowed_numbers": {"85%": "the source's own figure", ...}}}
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent

GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")
FENCED = re.compile(r"^[ \t>]*(```+|~~~+).*?^[ \t>]*\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
URL = re.compile(r"https?://\S+")
HTML = re.compile(r"<!--.*?-->|<[^>\n]+>", re.S)
DIRECTIVE_OPTION = re.compile(r"^:\w[\w-]*:.*$", re.M)  # ":width: 80%" inside a directive
LIST_MARKER = re.compile(r"^(\s*(?:\*\*)?)\d+[.)](?=\s|\*\*)", re.M)  # "1. item", "**2.** Exercise"
HEADING_NUMBER = re.compile(r"^(#+\s+)\d+(\.\d+)*\.?(?=\s)", re.M)
CHAPTER_REF = re.compile(r"\b([Cc]hapters?|[Ee]xercises?|[Cc]ells?|§)\s+\d+((\s*(,|and|or|to|–|-)\s*)\d+)*(?!\w)")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
NUMBER = re.compile(r"(?<![\w.])[-−+]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[eE][-+]?\d+)?%?(?![\w])")


def _blank(match: re.Match[str]) -> str:
    """Replace a match by spaces and newlines, so line numbers stay right."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + " " * (len(match.group(0)) - len(match.group(1)))


def hand_typed_numbers(markdown: str) -> list[tuple[int, str, str]]:
    """(line, number, line text) for each number in ``markdown`` that is checked."""
    original = markdown
    for pattern in (FENCED, GLUE_ROLE, INLINE_CODE, LINK_TARGET, URL, HTML, DIRECTIVE_OPTION, CHAPTER_REF):
        markdown = pattern.sub(_blank, markdown)
    markdown = LIST_MARKER.sub(_keep_prefix, markdown)
    markdown = HEADING_NUMBER.sub(_keep_prefix, markdown)

    # Small integers inside math are structure (x^2, \frac{1}{2}, w_1), not results.
    def small_integers_out(match: re.Match[str]) -> str:
        return NUMBER.sub(lambda m: _blank(m) if re.fullmatch(r"[-−]?\d+", m.group(0)) and abs(int(m.group(0).replace("−", "-"))) <= 10 else m.group(0), match.group(0))

    markdown = MATH.sub(small_integers_out, markdown)
    lines = original.splitlines()
    found = []
    for match in NUMBER.finditer(markdown):
        line = markdown.count("\n", 0, match.start())
        found.append((line + 1, match.group(0).lstrip("+"), lines[line].strip()))
    return found


def check(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    allowed = nb.metadata.get("lmlib", {}).get("allowed_numbers", {})
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for line, number, text in hand_typed_numbers(cell.source):
            if number not in allowed:
                problems.append(f"{path.name} cell {index} line {line}: {number!r} in: {text[:110]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="chapters (default: book/*.ipynb)")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "book").glob("*.ipynb"))
    problems = [p for path in paths for p in check(path)]
    for problem in problems:
        print(problem)
    print(f"{len(problems)} hand-typed number(s) in {len(paths)} chapter(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
