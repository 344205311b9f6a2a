"""lmlib.experiments finds the committed results files from a clone (book/ or the root) and,
through LMLIB_EXPERIMENTS, from anywhere; the chapters' install cells set that variable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmlib import experiments
from lmlib.errors import LmlibError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def clone(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "r.json").write_text(json.dumps({"loss": 1.5}))
    return tmp_path


def test_found_from_the_chapters_folder_and_from_the_root(clone, monkeypatch):
    monkeypatch.delenv("LMLIB_EXPERIMENTS", raising=False)
    for where in (clone / "book", clone):
        monkeypatch.chdir(where)
        assert experiments.load("r.json") == {"loss": 1.5}


def test_found_anywhere_through_the_environment_variable(clone, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("colab"))
    monkeypatch.delenv("LMLIB_EXPERIMENTS", raising=False)
    with pytest.raises(LmlibError, match="LMLIB_EXPERIMENTS"):
        experiments.path("r.json")
    monkeypatch.setenv("LMLIB_EXPERIMENTS", str(clone / "experiments"))
    assert experiments.load("r.json") == {"loss": 1.5}


def test_every_file_the_chapters_load_is_committed(monkeypatch):
    names = set()
    for nb in (ROOT / "book").glob("*.ipynb"):
        names |= set(re.findall(r'experiments\.load\(\\"([^\\"]+)\\"\)', nb.read_text(encoding="utf-8")))
    assert {"muon_results.json", "scaling_results.json", "scaling_shakespeare.json", "tokens_results.json"} <= names
    monkeypatch.chdir(ROOT / "book")
    for name in names:
        assert experiments.path(name).is_file()


def test_the_install_cell_points_lmlib_experiments_at_its_clone():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import set_repository
    finally:
        sys.path.remove(str(ROOT / "tools"))
    source = set_repository.install_source("https://example.org/someone/a-book")
    assert '"~/a-book"' in source and "https://example.org/someone/a-book" in source
    assert 'os.environ.setdefault("LMLIB_EXPERIMENTS", os.path.join(repo, "experiments"))' in source


def test_the_environment_variable_wins_over_a_folder_nearby(clone, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("other")
    (other / "r.json").write_text(json.dumps({"loss": 9.0}))
    monkeypatch.chdir(clone)  # ./experiments/r.json is here too
    monkeypatch.setenv("LMLIB_EXPERIMENTS", str(other))
    assert experiments.load("r.json") == {"loss": 9.0}
