"""The in-process caches of immutable versions and small blobs."""

from __future__ import annotations

from registry.cache import BlobBytesCache, CachedVersion, VersionCache


def entry(tag: bytes) -> CachedVersion:
    return CachedVersion(body=tag, files={})


def test_version_cache_evicts_the_least_recently_used():
    cache = VersionCache(capacity=2)
    cache.put("Ada", "Cube", 1, entry(b"1"))
    cache.put("ada", "cube", 2, entry(b"2"))
    assert cache.get("ADA", "CUBE", 1).body == b"1"  # names are folded; 1 is now the newest
    cache.put("ada", "cube", 3, entry(b"3"))
    assert cache.get("ada", "cube", 2) is None
    assert cache.get("ada", "cube", 1).body == b"1"
    assert len(cache) == 2


def test_version_cache_of_size_zero_keeps_nothing():
    cache = VersionCache(capacity=0)
    cache.put("ada", "cube", 1, entry(b"1"))
    assert cache.get("ada", "cube", 1) is None


def test_blob_cache_is_capped_in_bytes_and_skips_large_blobs():
    cache = BlobBytesCache(capacity_bytes=10, max_entry_bytes=6)
    cache.put("a", b"12345")
    cache.put("b", b"1234")
    assert cache.size_bytes == 9
    cache.put("big", b"1234567")
    assert cache.get("big") is None
    cache.get("a")  # a is now the newest
    cache.put("c", b"123")
    assert cache.get("b") is None
    assert cache.get("a") == b"12345"
    assert cache.get("c") == b"123"
    assert cache.size_bytes == 8


def test_cached_and_uncached_reads_agree(client, alice):
    client.post(
        "/api/v1/designs",
        json={"name": "cube", "title": "Cube", "license": "MIT"},
        headers=alice.headers,
    )
    url = "/api/v1/designs/alice/cube"
    # Not a model, so the verdict is final at once ("none") and the document cacheable.
    files = [("files", ("cube.scad", b"cube(10);\n"))]
    client.post(url + "/versions", files=files, data={"tag": "first"}, headers=alice.headers)
    first = client.get(url + "/versions/1")
    again = client.get(url + "/versions/1")
    by_tag = client.get(url + "/versions/first")
    assert first.content == again.content == by_tag.content
    assert first.headers["cache-control"].endswith("immutable")
    assert "cache-control" not in by_tag.headers
    # "latest" follows new versions even though version 1 is cached.
    client.post(url + "/versions", files=files, headers=alice.headers)
    assert client.get(url + "/versions/latest").json()["number"] == 2
    # Case-folded names reach the same cached version.
    assert client.get("/api/v1/designs/ALICE/Cube/versions/1").content == first.content
    assert client.get(url + "/versions/1/files/cube.scad").content == b"cube(10);\n"
    assert client.get(url + "/versions/1/files/cube.scad").content == b"cube(10);\n"
