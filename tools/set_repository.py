#!/usr/bin/env python
"""Point every chapter's install cell at the repository named in ``_config.yml``.

The repository's address is set in one place, ``repository.url`` in
``_config.yml``: Jupyter Book derives the Binder, Colab and repository
buttons from it. The first cell of each chapter installs ``lmlib`` from the
same address when the library is missing (as on Colab): it clones the repository,
installs lmlib from the clone and points ``LMLIB_EXPERIMENTS`` at the clone's
``experiments/`` folder (`lmlib.experiments`). So after changing the
setting run ``python tools/set_repository.py``; ``--check`` only reports
chapters that disagree (the test suite runs it).

That cell carries the tags ``lmlib-install`` (how this script finds it) and
``remove-cell`` (the HTML book leaves it out; in Jupyter it still runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
TAG = "lmlib-install"
TEMPLATE = """\
# Installs lmlib where it is missing (e.g. on Colab); the HTML book leaves this cell out.
import os

repo = os.path.expanduser("~/{name}")  # a clone: lmlib, and the results some chapters read
try:
    import lmlib
except ImportError:
    import subprocess

    if not os.path.isdir(repo):
        subprocess.run(["git", "clone", "-q", "--depth", "1", "{url}", repo], check=True)
    %pip install -q $repo
    import importlib

    importlib.invalidate_caches()
    import lmlib
if os.path.isdir(repo):  # where lmlib.experiments finds the results files outside a clone
    os.environ.setdefault("LMLIB_EXPERIMENTS", os.path.join(repo, "experiments"))"""


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    url = yaml.safe_load(config.read_text(encoding="utf-8"))["repository"]["url"]
    return str(url).rstrip("/")


def install_source(url: str) -> str:
    return TEMPLATE.format(url=url, name=url.rsplit("/", 1)[-1])


def install_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    return next((c for c in nb.cells if TAG in c.get("metadata", {}).get("tags", [])), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report chapters that disagree; exit 1 if any")
    args = parser.parse_args(argv)
    expected = install_source(repository_url())
    wrong = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = install_cell(nb)
        if cell is None:
            wrong.append(f"{path.name}: no cell tagged {TAG!r}")
            continue
        if cell.source != expected:
            if args.check:
                wrong.append(f"{path.name}: install cell does not use {repository_url()}")
                continue
            cell.source = expected
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                nbformat.write(nb, f)
            print(f"updated {path.name}")
    for line in wrong:
        print(line, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
