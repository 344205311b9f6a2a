"""Every exercise's written solution passes its own checker (tools/check_solutions.py).

Each chapter is executed once more with its exercise cells replaced by the solutions
from the dropdowns, so a solution that drifts from its checker fails here. The same
execution runs on other CPU kernels than the machine's own (``ATEN_CPU_CAPABILITY=default``,
unless the environment names one) and compares every other output with the stored one,
as ``pytest --nbval`` does: the stored outputs must hold on any correct CPU.
"""

import os
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
    capability = {"ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", "default")}
    problems = check_solutions.check(chapter, compare=True, env=capability)
    assert not problems, "\n".join(problems)


def test_compare_finds_a_stored_output_that_the_code_does_not_produce(tmp_path):
    nb = _exercise_notebook("answer = 2 * 3")
    cell = nbformat.v4.new_code_cell("print(1 + 1)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]  # stored, but wrong
    nb.cells.insert(0, cell)
    path = tmp_path / "exercise.ipynb"
    nbformat.write(nb, path)
    assert check_solutions.check(path) == []
    assert "output differs" in check_solutions.check(path, compare=True)[0]
