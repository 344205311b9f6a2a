#!/usr/bin/env python
"""Draw the book's one-page map, ``book/_static/pipeline.svg``:
``python tools/pipeline_figure.py [--check]``.

The training pipeline as a row of boxes (text -> tokens -> batches -> model
-> loss -> gradient -> update, and back to the model), with the chapters
that cover each box underneath. Plain SVG, written by hand: it needs no
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

#: (box, what it is, chapters that cover it). Keep in step with the table in book/intro.md.
BOXES: list[tuple[str, str, str]] = [
    ("text", "the training data", "ch 3, 5"),
    ("tokens", "integers the model reads", "ch 4"),
    ("batches", "many windows at once", "ch 3, 7"),
    ("model", "probabilities for the next token", "ch 2, 6"),
    ("loss", "how wrong, in nats", "ch 8"),
    ("gradient", "which way to change each weight", "ch 6, 16"),
    ("update", "the optimizer's step", "ch 9, 11"),
]

BOX_W, BOX_H, GAP, MARGIN, TOP = 112, 56, 28, 16, 40
WIDTH = 2 * MARGIN + len(BOXES) * BOX_W + (len(BOXES) - 1) * GAP
HEIGHT = 200
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def _x(i: int) -> int:
    return MARGIN + i * (BOX_W + GAP)


def draw() -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title">',
        '<title id="title">The training pipeline: text, tokens, batches, model, loss, gradient, update, '
        "and back to the model; the chapters that cover each box</title>",
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker>',
        "</defs>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{MARGIN}" y="22" {FONT} font-size="13" fill="#444">'
        "Data (chapters 3\u20135)</text>",
        f'<text x="{_x(3)}" y="22" {FONT} font-size="13" fill="#444">'
        "One training step, repeated (chapters 1, 6\u20139, 11)</text>",
    ]
    for i, (name, what, chapters) in enumerate(BOXES):
        x, cx = _x(i), _x(i) + BOX_W // 2
        fill = "#e8f0fb" if i < 3 else "#fdf1e3"
        out += [
            f'<rect x="{x}" y="{TOP}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" '
            'stroke="#555" stroke-width="1.2"/>',
            f'<text x="{cx}" y="{TOP + 34}" text-anchor="middle" {FONT} font-size="16" '
            f'font-weight="bold" fill="#222">{name}</text>',
            f'<text x="{cx}" y="{TOP + BOX_H + 22}" text-anchor="middle" {FONT} font-size="12.5" '
            f'fill="#222">{chapters}</text>',
        ]
        # The explanation, wrapped onto two lines of at most ~18 characters.
        words, lines = what.split(), [""]
        for word in words:
            if len(lines[-1]) + len(word) + 1 > 18 and lines[-1]:
                lines.append("")
            lines[-1] = f"{lines[-1]} {word}".strip()
        for j, line in enumerate(lines):
            out.append(
                f'<text x="{cx}" y="{TOP + BOX_H + 42 + 15 * j}" text-anchor="middle" {FONT} '
                f'font-size="11.5" fill="#666">{line}</text>'
            )
        if i + 1 < len(BOXES):
            y = TOP + BOX_H // 2
            out.append(
                f'<line x1="{x + BOX_W + 2}" y1="{y}" x2="{x + BOX_W + GAP - 2}" y2="{y}" '
                'stroke="#444" stroke-width="1.5" marker-end="url(#arrow)"/>'
            )
    # The loop: from the update back to the model, above the boxes.
    x_update, x_model = _x(6) + BOX_W // 2, _x(3) + BOX_W // 2
    y = TOP - 8
    out += [
        f'<path d="M{x_update},{TOP} L{x_update},{y} L{x_model},{y} L{x_model},{TOP - 1}" fill="none" '
        'stroke="#b35c00" stroke-width="1.5" stroke-dasharray="5 3" marker-end="url(#arrow)"/>',
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
