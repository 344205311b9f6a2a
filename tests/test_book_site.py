"""The book builds, renders offline and passes the browser checks; the
notebook pipeline (execute -> nbval) is deterministic and catches changes.

* The book is built once per session with ``tools/build_book.py`` (warnings
  are errors) and checked with ``tools/check_book.py`` in Chromium.
* ``pytest --nbval`` is run (in a subprocess) on a copy of the fixture
  chapter tests/fixtures/site/book/good.ipynb and on a copy with one stored
  text output edited by hand: the first must pass (stored figures and
  widgets do not cause spurious failures), the second must fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_BOOK = ROOT / "tests" / "fixtures" / "site" / "book"
HTML = ROOT / "_build" / "html"
sys.path.insert(0, str(ROOT / "tools"))

import build_book  # noqa: E402
import check_book  # noqa: E402

pytestmark = pytest.mark.book

REPOSITORY = "https://github.com/lmlib-book/how-llms-train"


@pytest.fixture(scope="session")
def built_book() -> Path:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_book.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        "python tools/build_book.py failed:\n" + result.stdout[-4000:] + result.stderr[-4000:]
    )
    return HTML


def test_build_produces_index(built_book):
    assert (built_book / "index.html").is_file()
    for docname in check_book.toc_docnames(ROOT / "_toc.yml"):
        assert (built_book / f"{docname}.html").is_file(), docname


def test_built_book_loads_nothing_from_the_internet(built_book):
    assert build_book.find_external_resources(built_book) == []
    offline = built_book / "_static" / "offline"
    for asset in ("mathjax/tex-mml-chtml.js", "require.js", "html-manager/embed-amd.js"):
        assert (offline / asset).is_file(), asset
    assert list((offline / "mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))


def test_repository_is_linked(built_book):
    assert REPOSITORY in (built_book / "book" / "intro.html").read_text()


def test_every_page_passes_the_browser_check(built_book, chromium):
    screenshots = ROOT / "_build" / "screenshots"
    results = check_book.check_site(built_book, ROOT / "_toc.yml", screenshots, chromium=chromium, log=lambda *a: None)
    problems = [str(p) for r in results for p in r.problems]
    assert not problems, "\n".join(problems)
    assert len(results) == 1 + len(check_book.toc_docnames(ROOT / "_toc.yml"))
    for r in results:
        assert r.screenshot is not None and r.screenshot.is_file(), r.page


# ---------------------------------------------------------------------------
# Build script


def test_build_fails_clearly_without_node_modules(tmp_path, monkeypatch):
    monkeypatch.setattr(build_book, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(build_book.BuildError, match="run `npm ci`"):
        build_book.check_node_modules()


def test_external_resources_are_detected(tmp_path):
    (tmp_path / "page.html").write_text(
        '<html><head><script src="https://cdn.example.org/x.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/css">'
        '<link rel="canonical" href="https://example.org/page.html"></head>'
        '<body><a href="https://example.org">a link is fine</a>'
        '<img src="http://example.org/i.png"></body></html>'
    )
    (tmp_path / "style.css").write_text(
        '/* https://example.org in a comment is fine */ @import url("https://x.org/a.css");'
    )
    found = build_book.find_external_resources(tmp_path)
    assert len(found) == 4, found


# ---------------------------------------------------------------------------
# Notebook pipeline: tools/execute_notebooks.py and pytest --nbval


def run_nbval(directory: Path) -> dict[str, str]:
    """Run ``pytest --nbval`` on the notebooks in ``directory``; test id -> outcome."""
    report = directory / "report.xml"
    (directory / "pytest.ini").write_text("[pytest]\n")  # not the repository's config
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            str(ROOT / "nbval.cfg"),
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            ".",
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
        env={**build_env(), "PYTHONPATH": str(ROOT)},
    )
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = "failed" if failed else "passed"
    return outcomes


def build_env() -> dict[str, str]:
    import execute_notebooks

    return execute_notebooks.kernel_environment()


@pytest.fixture(scope="module")
def nbval_outcomes(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("nbval")
    shutil.copy(FIXTURE_BOOK / "good.ipynb", directory / "good.ipynb")
    # Hand-edit one stored text output (a number in the result of cell 2).
    nb = json.loads((FIXTURE_BOOK / "good.ipynb").read_text())
    cell = nb["cells"][2]
    text = "".join(cell["outputs"][0]["data"]["text/plain"])
    assert "0.0244" in text
    cell["outputs"][0]["data"]["text/plain"] = text.replace("0.0244", "0.0245")
    (directory / "tampered.ipynb").write_text(json.dumps(nb, indent=1))
    return run_nbval(directory)


def test_nbval_passes_on_an_executed_notebook(nbval_outcomes):
    good = {k: v for k, v in nbval_outcomes.items() if "good" in k}
    assert len(good) == 6, nbval_outcomes  # every code cell, figures and widgets included
    assert set(good.values()) == {"passed"}, good


def test_nbval_fails_when_a_stored_output_is_edited(nbval_outcomes):
    tampered = {k: v for k, v in nbval_outcomes.items() if "tampered" in k}
    failed = [k for k, v in tampered.items() if v == "failed"]
    assert len(failed) == 1 and failed[0].endswith("Cell 1"), tampered


def test_execute_notebooks_is_deterministic_and_saves_widget_state(tmp_path):
    path = tmp_path / "dead_slider.ipynb"
    shutil.copy(FIXTURE_BOOK / "dead_slider.ipynb", path)
    runs = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "execute_notebooks.py"), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        runs.append(path.read_bytes())
    assert runs[0] == runs[1]
    assert runs[0] == (FIXTURE_BOOK / "dead_slider.ipynb").read_bytes()
    nb = json.loads(runs[0])
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [
        out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        for out in cell["outputs"]
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    ]
    assert views and all(v in state for v in views)


def sanitize(text: str) -> str:
    import re

    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns((ROOT / "nbval.cfg").read_text()):
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 40%|████      | 20/50 [00:01<00:02, 42.10it/s, loss=2.3]\n", " PROGRESS-BAR\n"),
        ("throughput: 1,234 tokens/s", "throughput: RATE"),
        ("Wall time: 1.23 s", "Wall time: TIME"),
        ("elapsed 01:02:03", "elapsed CLOCK"),
        ("<Trainer object at 0x7f3a2b1c4d50>", "<Trainer object at 0xADDRESS>"),
        (
            "/work/venv/lib/python3.11/site-packages/torch/nn/functional.py:12: UserWarning: x",
            ".../functional.py:12: UserWarning: x",
        ),
    ],
)
def test_sanitize_file_removes_volatile_text(text, expected):
    assert sanitize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "step 1000: train loss 2.3456, val loss 2.4012",
        "perplexity 10.13 after 5 steps and 3 epochs",
        "{'lr': 0.0003, 'batch_size': 32, 'n_params': 1_234_567}",
        "vocab of 65 tokens; split 9:1 and 1:10",
        "accuracy 97.5% on 1,000 samples",
        # No rule for durations: it also masked computed ones ("1,500.00 seconds" became
        # "1,DURATION"); a cell that prints a measured time is marked NBVAL_IGNORE_OUTPUT.
        "about 1,500 seconds on such a GPU",
        "a 12.5 s estimate from 6ND",
    ],
)
def test_sanitize_file_keeps_numbers_the_prose_relies_on(text):
    assert sanitize(text) == text
