"""lmlib.fsutil: the one atomic, durable write, and every writer in lmlib going through it."""

import hashlib
import json
import os
import stat
import sys

import pytest

from lmlib.fsutil import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file


@pytest.fixture
def fsyncs(monkeypatch):
    """Record what each os.fsync call flushed: 'file' or 'dir'."""
    calls = []
    real = os.fsync

    def spy(fd):
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_atomic_write_fsyncs_the_file_then_the_folder(tmp_path, fsyncs):
    path = atomic_write(tmp_path / "sub" / "a.bin", lambda f: f.write(b"abc"))
    assert path.read_bytes() == b"abc"
    assert fsyncs == ["file", "dir"]
    assert os.listdir(path.parent) == ["a.bin"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path, fsyncs):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def half_then_fail(f):
        f.write(b"new, but only half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
    assert fsyncs == []


def test_convenience_writers_and_sha256(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\n".encode()
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "j.json", {"a": [1, 2.5]})
    assert (tmp_path / "j.json").read_text() == '{"a":[1,2.5]}'
    with pytest.raises(ValueError):  # NaN is not JSON: refused, and the old file stays
        atomic_write_json(tmp_path / "j.json", {"a": float("nan")})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2.5]}
    assert sha256_file(tmp_path / "t.txt") == hashlib.sha256("héllo\n".encode()).hexdigest()


def test_fsutil_imports_no_torch_and_nothing_else_from_lmlib():
    import subprocess

    code = ("import sys, lmlib.fsutil; mods = [m for m in sys.modules if m.startswith('lmlib')];"
            " assert 'torch' not in sys.modules, 'torch'; assert set(mods) <= {'lmlib', 'lmlib.fsutil', 'lmlib.errors'}, mods")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- every writer in lmlib goes through atomic_write: file and folder are fsynced ----------------

def _checkpoint(tmp_path):
    import torch

    from lmlib.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "last.pt", {"w": torch.ones(2)})
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(2))


def _metrics(tmp_path):
    from lmlib.metrics import new_metrics, write_metrics

    write_metrics(tmp_path / "training_metrics.json", new_metrics({}))


def _token_file(tmp_path):
    from lmlib.data import tokenize_file

    (tmp_path / "t.txt").write_text("hello world\n")
    tokenize_file(tmp_path / "t.txt", tmp_path / "out" / "t")


def _download(tmp_path):
    from lmlib.download import download_tiny_shakespeare

    (tmp_path / "input.txt").write_bytes(b"To be\n")
    download_tiny_shakespeare(tmp_path / "cache", url=(tmp_path / "input.txt").as_uri(),
                              sha256=hashlib.sha256(b"To be\n").hexdigest())


def _plots(tmp_path):
    from lmlib.metrics import new_metrics
    from lmlib.plots import write_plots

    m = new_metrics({})
    m.update(steps=[1, 2], epochs=[0, 0], train_loss=[2.0, 1.0], val_loss=[None, 1.5], learning_rate=[1e-3, 1e-3])
    write_plots(tmp_path, m)


@pytest.mark.parametrize("write", [_checkpoint, _metrics, _token_file, _download, _plots],
                         ids=lambda f: f.__name__.strip("_"))
def test_every_writer_fsyncs_its_files_and_their_folder(tmp_path, fsyncs, write):
    write(tmp_path)
    assert "file" in fsyncs and "dir" in fsyncs, fsyncs
    assert fsyncs.count("file") == fsyncs.count("dir")  # each file put in place, then its folder
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_written_files_honour_the_umask(tmp_path):
    # mkstemp alone would leave every checkpoint, metrics file and token cache 0600.
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_no_compatibility_reexports():
    import lmlib.checkpoint

    assert not hasattr(lmlib.checkpoint, "atomic_write_bytes") and not hasattr(lmlib.checkpoint, "atomic_write_json")
