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
