import hashlib

import pytest

from lmlib.download import FILENAME, download_tiny_shakespeare
from lmlib.errors import LmlibError
from lmlib.fsutil import default_cache_dir

CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
OFFLINE_URL = "http://127.0.0.1:9/x"  # the discard port: nothing listens there


@pytest.fixture
def source(tmp_path):
    p = tmp_path / "remote" / "input.txt"
    p.parent.mkdir()
    p.write_bytes(CONTENT)
    return p.as_uri()  # a file:// URL: urllib "downloads" it without any network


def test_downloads_verifies_and_then_uses_the_cache(tmp_path, source):
    cache = tmp_path / "cache"
    path = download_tiny_shakespeare(cache, url=source, sha256=SHA)
    assert path == cache / FILENAME and path.read_bytes() == CONTENT
    # Cached with the right sha256: no network needed, even for an unreachable URL.
    assert download_tiny_shakespeare(cache, url=OFFLINE_URL, sha256=SHA, timeout=2) == path
    assert [p.name for p in cache.iterdir()] == [FILENAME]  # no temporary files left


def test_sha_mismatch_leaves_nothing_behind(tmp_path, source):
    cache = tmp_path / "cache"
    with pytest.raises(LmlibError, match=f"has sha256 {SHA}, expected 0000"):
        download_tiny_shakespeare(cache, url=source, sha256="0000")
    assert list(cache.iterdir()) == []


def test_a_stale_cached_file_is_replaced(tmp_path, source):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FILENAME).write_bytes(b"truncated")
    assert download_tiny_shakespeare(cache, url=source, sha256=SHA).read_bytes() == CONTENT


def test_offline_gives_a_helpful_error(tmp_path):
    with pytest.raises(LmlibError, match="could not download Tiny Shakespeare from http://127.0.0.1:9/x .*offline"):
        download_tiny_shakespeare(tmp_path / "cache", url=OFFLINE_URL, sha256=SHA, timeout=2)
    with pytest.raises(LmlibError, match="could not download"):
        download_tiny_shakespeare(tmp_path / "cache", url=(tmp_path / "missing.txt").as_uri(), sha256=SHA)
    assert list((tmp_path / "cache").iterdir()) == []


def test_default_cache_dir_follows_lmlib_cache(tmp_path, monkeypatch, source):
    monkeypatch.setenv("LMLIB_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    assert download_tiny_shakespeare(url=source, sha256=SHA) == tmp_path / "env-cache" / FILENAME
    monkeypatch.delenv("LMLIB_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "lmlib")
