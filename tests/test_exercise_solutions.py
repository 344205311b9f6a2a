"""Every exercise's written solution passes its own checker (tools/check_solutions.py).

Each chapter is executed once more with its exercise cells replaced by the solutions
from the dropdowns, so a solution that drifts from its checker fails here.
"""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import check_solutions  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def _exercise_notebook(solution: str) -> nbformat.NotebookNode:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    return nbformat.v4.new_notebook(cells=[
        code("expected = 6"),
        code("answer = None  # your code here"),
        code('print("not answered yet" if answer is None else "correct" if answer == expected else "not quite")'),
        md(f"````{{dropdown}} Solution\n```python\n{solution}\n```\n````"),
    ])


@pytest.mark.parametrize("solution, ok", [("answer = 2 * 3", True), ("answer = 7", False)])
def test_the_checker_runs_the_written_solution(tmp_path, solution, ok):
    path = tmp_path / "exercise.ipynb"
    nbformat.write(_exercise_notebook(solution), path)
    assert [e[1] for e in check_solutions.exercises(nbformat.read(path, 4))] == [[2]]
    assert (check_solutions.check(path) == []) is ok


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_written_solutions_pass_their_checkers(chapter):
    problems = check_solutions.check(chapter)
    assert not problems, "\n".join(problems)
