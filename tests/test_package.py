import subprocess
import sys


def test_import_is_lazy_and_every_export_resolves():
    # A fresh interpreter: importing lmlib must not import torch or matplotlib.
    code = ("import sys, lmlib; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules;"
            " [getattr(lmlib, n) for n in lmlib.__all__]; assert 'matplotlib' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
