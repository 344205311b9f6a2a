"""Repository-wide pytest configuration.

* ``pytest --nbval`` re-executes the chapter notebooks (``book/*.ipynb``) and
  compares their outputs with the stored ones. This file makes that run use
  the repository's sanitize file (``nbval.cfg``, whatever the current
  directory), the Python environment pytest runs in, and the same kernel
  environment as ``tools/execute_notebooks.py`` (``PYTHONHASHSEED=0``,
  2 threads, the working tree's ``lmlib`` first on the path), so that a
  notebook executed with that tool passes.
* Generated and fixture directories are never collected.
* The ``chromium`` fixture gives the browser for the book checks: it skips
  when Chromium is missing, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SANITIZE_FILE = ROOT / "nbval.cfg"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

collect_ignore_glob = [
    "_build/*",
    "node_modules/*",
    "tests/fixtures/*",
    "book/_static/*",
    ".venv/*",
    "venv/*",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "book: builds the book or drives a browser (deselect with -m 'not book')")
    config.addinivalue_line("markers", "bench: runs the benchmark scripts at tiny settings (deselect with -m 'not bench')")
    config.addinivalue_line("markers", "slow: a slower CPU test, e.g. torch.compile (deselect with -m 'not slow')")
    option = config.option
    if not (getattr(option, "nbval", False) or getattr(option, "nbval_lax", False)):
        return
    # The sanitize file: default to the repository's; resolve a relative path
    # (e.g. from addopts) against the repository root, not the current dir.
    sanitize = getattr(option, "nbval_sanitize_with", None)
    if sanitize is None:
        option.nbval_sanitize_with = str(SANITIZE_FILE)
    elif not Path(sanitize).is_absolute() and not Path(sanitize).exists():
        option.nbval_sanitize_with = str(ROOT / sanitize)
    # Run the notebooks with the Python that runs pytest.
    if not getattr(option, "nbval_kernel_name", None):
        option.nbval_current_env = True
    # The kernels inherit this environment (same as tools/execute_notebooks.py).
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from execute_notebooks import kernel_environment
    finally:
        sys.path.remove(str(ROOT / "tools"))
    os.environ.update(kernel_environment())


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the Chromium binary; skip without it (fail when CI=true)."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} not found (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright Python package is not installed"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; browser tests are required when CI=true", pytrace=False)
        pytest.skip(problem)
    return CHROMIUM
