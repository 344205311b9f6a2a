"""Tests of the browser checker (tools/check_book.py) on a fixture book.

The fixture book (tests/fixtures/site) has one good page, equivalent to a
chapter (math, glue, a stored figure, a working slider gallery), and one page
per problem the checker must find. It is built with the real _config.yml and
tools/build_book.py, then checked once in Chromium; each test asserts on that
run. A TOC entry for a page that was never built stands for a missing page.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "site"
sys.path.insert(0, str(ROOT / "tools"))

import check_book  # noqa: E402

pytestmark = pytest.mark.book

#: page -> the exact set of problem kinds the checker must report for it.
EXPECTED = {
    "index.html": set(),
    "book/good.html": set(),
    "book/console_error.html": {"console-error"},
    "book/page_error.html": {"page-error"},
    "book/broken_image.html": {"broken-image"},
    "book/raw_math.html": {"raw-math", "untypeset-math"},
    "book/stray_markup.html": {"stray-dollar", "raw-tex", "unresolved-glue"},
    "book/clean_markup.html": set(),
    "book/broken_link.html": {"broken-link"},
    "book/dead_slider.html": {"dead-slider"},
    "book/missing_state.html": {"widget-not-rendered"},
    "book/not_built.html": {"missing-page"},
}


def write_toc(path: Path, root: str, chapters: list[str]) -> Path:
    lines = ["format: jb-book", f"root: {root}"]
    if chapters:
        lines += ["chapters:"] + [f"  - file: {c}" for c in chapters]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fixture_site(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Path:
    """The fixture book, laid out like the repository and built."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(ROOT / "_config.yml", site / "_config.yml")
    shutil.copy(FIXTURE / "_toc.yml", site / "_toc.yml")
    shutil.copytree(FIXTURE / "book", site / "book")
    shutil.copytree(ROOT / "book" / "_static", site / "book" / "_static", ignore=shutil.ignore_patterns("offline"))
    build = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_book.py"), "--source", str(site)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return site


@pytest.fixture(scope="module")
def results(fixture_site: Path, chromium: str) -> dict[str, check_book.PageResult]:
    toc = write_toc(
        fixture_site / "toc_with_missing_page.yml",
        "book/good",
        [name.removesuffix(".html") for name in EXPECTED if name.startswith("book/") and name != "book/good.html"],
    )
    found = check_book.check_site(
        fixture_site / "_build" / "html",
        toc,
        fixture_site / "screenshots",
        chromium=chromium,
        log=lambda *a: None,
    )
    return {r.page: r for r in found}


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_each_problem_is_detected_and_nothing_else(results, page):
    assert page in results, f"{page} was not checked"
    kinds = {p.kind for p in results[page].problems}
    assert kinds == EXPECTED[page], "\n".join(map(str, results[page].problems))


def test_good_page_really_exercised_math_widgets_and_slider(results):
    good = results["book/good.html"]
    assert good.math >= 2  # display and inline math, typeset
    assert good.widgets >= 1
    assert good.sliders == 1  # the gallery; the live control is hidden in HTML
    assert good.screenshot and good.screenshot.stat().st_size > 10_000


def test_broken_links_are_each_reported(results):
    messages = "\n".join(p.message for p in results["book/broken_link.html"].problems)
    assert "missing_page.html" in messages
    assert "#no-such-anchor does not exist in book/broken_link.html" in messages
    assert "#no-such-anchor does not exist in book/console_error.html" in messages
    assert "console-error" not in messages  # the good link is not reported
    assert len(results["book/broken_link.html"].problems) == 3


def test_stray_markup_is_reported_with_its_text(results):
    problems = results["book/stray_markup.html"].problems
    found = sorted((p.kind, p.message) for p in problems)
    assert [kind for kind, _ in found] == ["raw-tex", "raw-tex", "stray-dollar", "unresolved-glue"], found
    messages = "\n".join(message for _, message in found)
    assert "the loss fell from $3 to 2" in messages
    assert "The loss is -\\ln p" in messages
    assert "\\tfrac{1}{2}" in messages  # inside a collapsed dropdown
    assert "{glue:text}" in messages


def test_clean_markup_page_has_typeset_math(results):
    assert results["book/clean_markup.html"].math >= 3  # so the page did not pass by typesetting nothing


def test_dead_slider_message_names_the_slider(results):
    (problem,) = results["book/dead_slider.html"].problems
    assert "nothing else on the page changed" in problem.message


def test_command_line_reports_problems_and_exit_status(fixture_site):
    toc = write_toc(fixture_site / "toc_cli.yml", "book/good", ["book/page_error"])
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "check_book.py"),
            "--html-dir",
            str(fixture_site / "_build" / "html"),
            "--toc",
            str(toc),
            "--screenshots",
            str(fixture_site / "shots_cli"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "book/good.html: ok" in result.stdout
    assert "book/page_error.html: [page-error]" in result.stderr
    assert "book/good.html:" not in result.stderr
    assert (fixture_site / "shots_cli" / "book__good.png").is_file()


def test_missing_build_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_book.py"), "--html-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "build the book first" in result.stderr


def test_toc_docnames_reads_nested_tocs(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: One\n    chapters:\n      - file: book/01_a\n"
        "        sections:\n          - file: book/01_b.ipynb\n"
        "      - url: https://example.org\n"
    )
    assert check_book.toc_docnames(toc) == ["book/intro", "book/01_a", "book/01_b"]
