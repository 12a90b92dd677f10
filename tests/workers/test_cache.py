"""The content-addressed download cache, against a real HTTP server: a miss downloads and
verifies, a hit needs no network, a mismatch leaves nothing and says why."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from dgml.errors import Invalid
from workers.cache import Cache, DownloadFailed, FileMismatch


def test_a_miss_downloads_verifies_and_stores_read_only(tmp_path, file_server, http):
    cache = Cache(tmp_path / "cache")
    content = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    ref = file_server.add("part.stl", content)
    path = cache.fetch(ref["url"], ref["sha256"], ref["size"], http)
    assert path.read_bytes() == content
    assert path == tmp_path / "cache" / ref["sha256"][:2] / ref["sha256"]
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert path.stat().st_mode & 0o222 == 0
    assert file_server.gets["/part.stl"] == 1
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_hit_needs_no_network(tmp_path, file_server, http):
    cache = Cache(tmp_path / "cache")
    ref = file_server.add("part.stl", b"solid x\nendsolid x\n")
    first = cache.fetch(ref["url"], ref["sha256"], ref["size"], http)
    file_server.files.clear()  # the server no longer has it: only the cache can answer
    with httpx.Client(transport=httpx.MockTransport(lambda r: pytest.fail("network used"))) as c:
        assert cache.fetch(ref["url"], ref["sha256"], ref["size"], c) == first
    assert file_server.gets["/part.stl"] == 1


def test_a_hash_mismatch_fails_and_leaves_nothing(tmp_path, file_server, http):
    cache = Cache(tmp_path / "cache")
    ref = file_server.add("part.stl", b"the real part")
    file_server.files["/part.stl"] = b"another part!"  # same size, other bytes
    with pytest.raises(FileMismatch, match=r"sha256 is .* expected .*not used"):
        cache.fetch(ref["url"], ref["sha256"], ref["size"], http)
    assert not cache.path_for(ref["sha256"]).exists()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


@pytest.mark.parametrize("served", [b"short", b"much longer than it should be"])
def test_a_size_mismatch_fails_and_leaves_nothing(tmp_path, file_server, http, served):
    cache = Cache(tmp_path / "cache")
    ref = file_server.add("part.stl", b"twelve bytes")
    file_server.files["/part.stl"] = served
    with pytest.raises(FileMismatch, match="bytes"):
        cache.fetch(ref["url"], ref["sha256"], ref["size"], http)
    assert not cache.path_for(ref["sha256"]).exists()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_corrupted_cache_entry_is_downloaded_again(tmp_path, file_server, http):
    cache = Cache(tmp_path / "cache")
    ref = file_server.add("part.stl", b"good bytes")
    path = cache.fetch(ref["url"], ref["sha256"], ref["size"], http)
    path.chmod(0o644)
    path.write_bytes(b"rot bytes!")
    assert cache.lookup(ref["sha256"], ref["size"]) is None
    again = cache.fetch(ref["url"], ref["sha256"], ref["size"], http)
    assert again.read_bytes() == b"good bytes"
    assert file_server.gets["/part.stl"] == 2


def test_missing_files_and_dead_servers(tmp_path, file_server, http):
    cache = Cache(tmp_path / "cache")
    sha = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(DownloadFailed, match="404") as caught:
        cache.fetch(f"{file_server.base}/nothing.stl", sha, 1, http)
    assert caught.value.retry is False
    with pytest.raises(DownloadFailed) as caught:
        cache.fetch("http://127.0.0.1:1/part.stl", sha, 1, http)
    assert caught.value.retry is True


@pytest.mark.parametrize("sha", ["abc", "G" * 64, "A" * 64, "../" + "a" * 61])
def test_bad_hashes_are_refused(tmp_path, http, sha):
    with pytest.raises(Invalid, match="sha256"):
        Cache(tmp_path).fetch("http://127.0.0.1:1/x", sha, 1, http)


def test_leftovers_of_a_killed_download_are_cleaned(tmp_path):
    cache = Cache(tmp_path / "cache")
    cache.tmp.mkdir(parents=True)
    (cache.tmp / "dl-half").write_bytes(b"half a file")
    cache.clean_tmp()
    assert list(cache.tmp.iterdir()) == []
