#!/usr/bin/env python
"""Draw the book's one-page map, ``book/_static/pipeline.svg``:
``python tools/pipeline_figure.py [--check]``.

The training pipeline as boxes (text -> tokens -> batches on a first row, the
data; model -> loss -> gradient -> update on a second, one training step,
with an arrow from the update back to the model), each naming the chapters
that cover it. Plain SVG, written by hand: it needs no
JavaScript, no font download and no plotting library, so it renders offline
in the built book and on GitHub. ``--check`` exits 1 when the committed file
differs from what this script draws (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "book" / "_static" / "pipeline.svg"

#: (box, chapters that cover it). Keep in step with the table in book/intro.md.
BOXES: list[tuple[str, str]] = [
    ("text", "ch 3, 5"),
    ("tokens", "ch 4"),
    ("batches", "ch 3, 7"),
    ("model", "ch 2, 6"),
    ("loss", "ch 8"),
    ("gradient", "ch 6, 16"),
    ("update", "ch 9, 11"),
]

BOX_W, BOX_H, GAP, MARGIN = 136, 64, 32, 12
ROW1, ROW2 = 40, 176  # top of each row of boxes: the data, then one training step
WIDTH = 2 * MARGIN + 4 * BOX_W + 3 * GAP
HEIGHT = 296
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def _box(i: int) -> tuple[int, int]:
    """Top-left corner of box ``i``: the first three on the first row, the rest below."""
    row, col = (ROW1, i) if i < 3 else (ROW2, i - 3)
    return MARGIN + col * (BOX_W + GAP), row


def _arrow(path: str, colour: str = "#444", dashed: bool = False) -> str:
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash} marker-end="url(#arrow)"/>'


def draw() -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title">',
        '<title id="title">The training pipeline: text, tokens, batches, model, loss, gradient, update, '
        "and back to the model; the chapters that cover each box</title>",
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker>',
        "</defs>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{MARGIN}" y="{ROW1 - 14}" {FONT} font-size="17" fill="#444">The data (chapters 3\u20135)</text>',
        f'<text x="{WIDTH - MARGIN}" y="{ROW2 - 14}" text-anchor="end" {FONT} font-size="17" fill="#444">'
        "One training step, repeated (chapters 1, 6\u20139, 11)</text>",
    ]
    for i, (name, chapters) in enumerate(BOXES):
        x, y = _box(i)
        cx = x + BOX_W // 2
        fill = "#e8f0fb" if i < 3 else "#fdf1e3"
        out += [
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="10" fill="{fill}" '
            'stroke="#555" stroke-width="1.5"/>',
            f'<text x="{cx}" y="{y + 28}" text-anchor="middle" {FONT} font-size="21" '
            f'font-weight="bold" fill="#222">{name}</text>',
            f'<text x="{cx}" y="{y + 52}" text-anchor="middle" {FONT} font-size="16" fill="#444">{chapters}</text>',
        ]
        if i not in (2, len(BOXES) - 1):  # arrows along a row
            out.append(_arrow(f"M{x + BOX_W + 2},{y + BOX_H // 2} L{x + BOX_W + GAP - 3},{y + BOX_H // 2}"))
    # From the batches (end of row 1) down to the model (start of row 2).
    (bx, by), (mx, my) = _box(2), _box(3)
    mid = (by + BOX_H + my) // 2 - 14
    out.append(_arrow(f"M{bx + BOX_W // 2},{by + BOX_H + 2} L{bx + BOX_W // 2},{mid} "
                      f"L{mx + BOX_W // 2},{mid} L{mx + BOX_W // 2},{my - 3}"))
    # The loop: from the update back to the model, under the second row.
    ux, uy = _box(len(BOXES) - 1)
    below = uy + BOX_H + 22
    out += [
        _arrow(f"M{ux + BOX_W // 2},{uy + BOX_H + 2} L{ux + BOX_W // 2},{below} "
               f"L{mx + BOX_W // 2},{below} L{mx + BOX_W // 2},{my + BOX_H + 3}", "#b35c00", dashed=True),
        f'<text x="{(ux + mx + BOX_W) // 2}" y="{below + 20}" text-anchor="middle" {FONT} font-size="15" '
        'fill="#b35c00">next batch, new weights</text>',
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed figure is out of date")
    args = parser.parse_args(argv)
    svg = draw()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != svg:
            print(f"{OUTPUT} is out of date: run python tools/pipeline_figure.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(svg, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
