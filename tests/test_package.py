import subprocess
import sys

import pytest


def test_import_is_lazy_and_every_export_resolves():
    # A fresh interpreter: importing lmlib must not import torch or matplotlib.
    code = ("import sys, lmlib; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules;"
            " [getattr(lmlib, n) for n in lmlib.__all__]; assert 'matplotlib' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_make_install_passes_an_extra_pip_option_such_as_pytorchs_cpu_index():
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    extra = "--extra-index-url https://download.pytorch.org/whl/cpu"
    done = subprocess.run(["make", "-n", "install", f"PIP_EXTRA={extra}"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0 and f"-r requirements.txt -e . {extra}" in done.stdout
    lines = (root / "requirements.txt").read_text().splitlines()
    assert not [line for line in lines if line.startswith("--")]  # no index in the file (see its comment)
