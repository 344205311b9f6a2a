"""The chapters' sources: install cells point at the configured repository, and no
result is typed by hand into the prose (tools/check_numbers.py)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import check_numbers  # noqa: E402
import set_repository  # noqa: E402


def test_install_cells_use_the_repository_of_config_yml():
    assert set_repository.main(["--check"]) == 0


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("The loss fell to 1.23 after 300 steps.", ["1.23", "300"]),
        ("It fell to {glue:text}`loss:.2f` after {glue:text}`steps:,d` steps.", []),
        ("See [chapter 7](07_loss.ipynb) and chapters 8 and 9.", []),
        ("**Exercise 2.** Use `lr=3e-4` here.", []),
        ("1. first\n2. second", []),
        ("**2.** In the diverged run, at step 3", ["3"]),
        ("**2. Title.** costs 5", ["5"]),
        ("$\\tfrac{1}{2}x^2 \\approx 4.14$", ["4.14"]),
        ("```python\nx = 12345\n```\nafter", []),
        ("about 85% of it", ["85%"]),
    ],
)
def test_hand_typed_numbers_are_found(markdown, expected):
    assert [n for _, n, _ in check_numbers.hand_typed_numbers(markdown)] == expected


def test_no_hand_typed_numbers_in_the_chapters():
    problems = [p for path in sorted((ROOT / "book").glob("*.ipynb")) for p in check_numbers.check(path)]
    assert not problems, "\n".join(problems)


def _notebook(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    """A notebook of code cells (source, tags), written to ``path``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("# A chapter\n\nglue(\"not code\", 1)")])
    nb.cells += [new_code_cell(source, metadata={"tags": tags}) for source, tags in cells]
    nbformat.write(nb, path)
    return path


def test_plumbing_counts_glue_tolerances_and_kernel_comments_in_visible_code(tmp_path, capsys):
    import plumbing

    path = _notebook(
        tmp_path / "01_x.ipynb",
        [
            (
                "%pip install -q lmlib\n"
                "from lmlib.notebook import glue, show\n"  # glue (an import of plumbing only)
                "import math\n"
                "\n"
                "# Results differ between CPUs in the sixth digit:\n"  # comment block (2 lines)
                "# the numbers below are rounded so that they agree.\n"
                "REL = 2e-5\n"  # tolerance constant
                "loss = math.log(63)  # the loss of a uniform guess\n"
                "print(f\"loss {show(loss, '.2f', rel=REL)}\")\n"  # tolerance
                "print(f\"loss {show(loss, '.2f')}\")\n"  # a show without tolerance reads like print
                "glue(\n"  # glue: three lines
                "    'loss', loss,\n"
                "    '.2f')\n"
                "assert math.isclose(loss, 4.14, rel=1e-2)\n",  # tolerance (rel=)
                [],
            ),
            ("glue('hidden', 1)\nglue('hidden2', 2)", ["remove-input"]),
            ("glue('collapsed', 1)", ["hide-input"]),
            ("glue('gone', 1)", ["remove-cell"]),
            ("x = 1\n# a comment about the model\ny = 2", []),
        ],
    )
    count = plumbing.count_notebook(path)
    assert count.visible == 16  # non-blank lines of the two visible cells, the %pip line included
    assert count.kinds == {"glue": 4, "tolerance": 3, "comment": 2}
    assert count.share == 9 / 16

    assert plumbing.main([str(path), "--max", "0.6"]) == 0
    assert plumbing.main([str(path)]) == 1  # over the default 5%
    out = capsys.readouterr()
    assert "01_x" in out.out and "56.2%" in out.out
    assert "1 chapter(s) over 5%: 01_x" in out.err


#: The kinds of output nbval ignores, as book/intro.md lists them, and words that name each.
IGNORE_REASONS = {
    "a run that diverges or is unstable": ("diverg", "unstable", "chaotic"),
    "text sampled at random": ("sampl",),
    "timings": ("timing",),
    "values near a rounding boundary": ("rounding boundary", "decimal", "digits"),
    "arithmetic in bfloat16": ("bfloat16",),
}


def _ignore_reasons(path: Path) -> list[tuple[str, str]]:
    """(cell, reason) for each code cell of ``path`` whose output nbval ignores: the cell's
    first comment lines, after the ``# NBVAL_IGNORE_OUTPUT`` marker or with the
    ``nbval-ignore-output`` tag."""
    import json

    found = []
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        lines = "".join(cell["source"]).splitlines() if cell["cell_type"] == "code" else []
        marked = bool(lines) and lines[0].strip() == "# NBVAL_IGNORE_OUTPUT"
        if marked or "nbval-ignore-output" in cell.get("metadata", {}).get("tags", []):
            comments = []
            for line in lines[1:] if marked else lines:
                if not line.startswith("#"):
                    break
                comments.append(line.lstrip("# "))
            found.append((f"{path.name} c{index}", " ".join(comments)))
    return found


def test_ignore_reasons_are_read_from_the_marker_or_the_tag(tmp_path):
    path = _notebook(
        tmp_path / "01_x.ipynb",
        [
            ("# NBVAL_IGNORE_OUTPUT\n# (timings differ)\nprint(1)", []),
            ("# sampled text\nprint(2)", ["nbval-ignore-output"]),
            ("# a comment\nprint(3)", []),
        ],
    )
    assert _ignore_reasons(path) == [("01_x.ipynb c1", "(timings differ)"), ("01_x.ipynb c2", "sampled text")]


def test_intro_lists_every_kind_of_ignored_output():
    intro = " ".join((ROOT / "book" / "intro.md").read_text().split())
    for kind in ("diverges", "sampled at random", "timings", "near a rounding boundary", "bfloat16"):
        assert kind in intro, kind


def test_every_ignored_output_gives_a_reason_the_intro_lists():
    unlisted = [
        f"{cell}: {reason or '(no reason given)'}"
        for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
        for cell, reason in _ignore_reasons(path)
        if not any(word in reason for words in IGNORE_REASONS.values() for word in words)
    ]
    assert not unlisted, "\n".join(unlisted)


def test_pipeline_figure_is_up_to_date_and_names_each_box_in_the_intro():
    import pipeline_figure

    assert pipeline_figure.main(["--check"]) == 0
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "_static/pipeline.svg" in intro
    import re

    for box, chapters in pipeline_figure.BOXES:
        (row,) = [line for line in intro.splitlines() if line.startswith(f"| {box} |")]
        linked = {int(n) for n in re.findall(r"\[(\d+)\. ", row)}
        assert linked == {int(n) for n in re.findall(r"\d+", chapters)}, (box, row)
        for target in re.findall(r"\]\(([^)]+)\)", row):
            assert (ROOT / "book" / target).is_file(), target


def test_book_runtime_times_every_chapter_in_reading_order():
    sys.path.insert(0, str(ROOT))
    from bench import book_runtime

    found = book_runtime.chapters()
    on_disk = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(found) == on_disk  # every chapter file is in the TOC, and timed
    assert [p.name[:2] for p in found] == sorted(p.name[:2] for p in found)  # reading order = file order


def test_every_chapter_keeps_its_plumbing_under_five_percent_of_visible_code(capsys):
    # glue/show tolerance arguments and kernel comments stay out of the code a reader sees
    import plumbing

    assert plumbing.main(["--max", "0.05"]) == 0, capsys.readouterr().out
