#!/usr/bin/env python
"""Re-execute chapter notebooks in place: ``python tools/execute_notebooks.py [paths...]``.

This is the one command authors use to refresh a chapter's stored outputs
(the book build never executes notebooks). With no paths, every
``book/*.ipynb`` is executed, in name order.

Each notebook is executed top to bottom in a fresh ``python3`` kernel, with
its directory as the working directory and a fixed environment
(``PYTHONHASHSEED=0``, 2 OpenMP/MKL threads, the repository first on
``PYTHONPATH`` so the working tree's ``lmlib`` is used), and with the widget
state saved into the notebook metadata
(``metadata.widgets["application/vnd.jupyter.widget-state+json"]``), so the
built HTML shows live widgets. Cell metadata and tags are kept; execution
timing metadata is dropped. Widget model ids, which are random, are
renumbered deterministically so that re-executing an unchanged chapter gives
a byte-identical file.

A notebook whose execution fails is left unchanged on disk; the command then
exits with status 1 after trying the others.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
KERNEL_NAME = "python3"
#: Seconds one cell may run before the execution is aborted.
CELL_TIMEOUT = 1800
STARTUP_TIMEOUT = 120
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

#: Environment of the kernel: everything that changes numbers is pinned.
KERNEL_ENV = {
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    # Idle threads sleep instead of spinning: on a busy machine a spinning
    # thread burns a core for nothing (results are the same either way).
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_NUM_THREADS": "2",
    "TOKENIZERS_PARALLELISM": "false",
    "SOURCE_DATE_EPOCH": "0",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # no debugger warning on stderr
}


def kernel_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(KERNEL_ENV)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend must be used
    paths = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def renumber_widget_ids(nb: nbformat.NotebookNode, salt: str) -> nbformat.NotebookNode:
    """Replace the random widget model ids by ids derived from their order."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    if not state:
        return nb
    text = nbformat.writes(nb)
    for n, old in enumerate(list(state)):
        new = hashlib.sha256(f"{salt}:{n}".encode()).hexdigest()[:32]
        text = text.replace(old, new)
    return nbformat.reads(text, as_version=4)


def execute(path: Path, timeout: int = CELL_TIMEOUT) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # stale state from an earlier run
    nb.metadata.setdefault(
        "kernelspec",
        {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"},
    )
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps: noise in diffs
    client = NotebookClient(
        nb,
        timeout=timeout,
        startup_timeout=STARTUP_TIMEOUT,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
        record_timing=False,
        shutdown_kernel="immediate",
        allow_errors=False,
    )
    client.execute(env=kernel_environment())
    nb = renumber_widget_ids(nb, salt=path.name)
    nbformat.validate(nb)
    return nb


def default_paths() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: book/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="write the executed notebooks here instead of in place (e.g. to compare CPUs with tools/compare_outputs.py)",
    )
    args = parser.parse_args(argv)
    paths = args.paths or default_paths()
    if not paths:
        print("execute_notebooks: no notebooks found in book/", file=sys.stderr)
        return 0
    failed = []
    for path in paths:
        if path.suffix != ".ipynb" or not path.is_file():
            print(f"execute_notebooks: {path}: not a notebook file", file=sys.stderr)
            failed.append(path)
            continue
        started = time.monotonic()
        print(f"executing {path} ...", flush=True)
        try:
            nb = execute(path, timeout=args.timeout)
        except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError) as exc:
            print(f"execute_notebooks: {path} FAILED (left unchanged):\n{exc}", file=sys.stderr)
            failed.append(path)
            continue
        target = path
        if args.out_dir is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            target = args.out_dir / path.name
        with open(target, "w", encoding="utf-8", newline="\n") as f:
            nbformat.write(nb, f)
        size = target.stat().st_size
        state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        print(
            f"  wrote {target} in {time.monotonic() - started:.1f}s "
            f"({size / 1024:.0f} KiB, {len(state)} widget models saved)",
            flush=True,
        )
    if failed:
        print(f"execute_notebooks: {len(failed)} notebook(s) failed: " + ", ".join(map(str, failed)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
