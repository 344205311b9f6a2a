"""The committed results of the repository's ``experiments/`` scripts, as chapters read them.

Some sweeps take minutes, more than a chapter may spend, so a script under
``experiments/`` runs them once and commits a JSON file that the chapter loads. Where
that folder is depends on where the chapter runs:

- the folder named by the environment variable ``LMLIB_EXPERIMENTS``, when it is set
  (tried first: an explicit setting wins);
- in a clone of the repository (Jupyter, Binder, the tests): ``../experiments`` from
  ``book/``, or ``experiments`` from the repository root.

A chapter opened alone (as on Colab) relies on the first: its install cell clones the
repository and sets ``LMLIB_EXPERIMENTS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmlib.errors import LmlibError

__all__ = ["load", "path"]


def path(name: str) -> Path:
    """Where ``experiments/<name>`` is (see the module's docstring for the places tried)."""
    places = [Path("..") / "experiments", Path("experiments")]
    if os.environ.get("LMLIB_EXPERIMENTS"):  # an explicit setting wins over whatever sits nearby
        places.insert(0, Path(os.environ["LMLIB_EXPERIMENTS"]))
    for place in places:
        if (place / name).is_file():
            return place / name
    raise LmlibError(f"experiments/{name} was not found (looked in {', '.join(map(str, places))}): open the chapter "
                     "from a clone of the book's repository, or set LMLIB_EXPERIMENTS to its experiments folder")


def load(name: str) -> Any:
    """The JSON file ``experiments/<name>``, parsed."""
    return json.loads(path(name).read_text(encoding="utf-8"))
