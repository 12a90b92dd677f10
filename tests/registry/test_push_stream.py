"""The streamed push: files larger than a batch, bodies cut in awkward places, clients that go
away, and bad bodies that fail after bytes were already hashed and written."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from registry import uploads
from registry.blobs import BlobStore
from registry.upload_sink import AHEAD_BYTES, UploadSink

MIB = 1024 * 1024
DESIGN = "/api/v1/designs/alice/bracket"
BOUNDARY = "dgml-test-boundary"
# Several batches each, so that the sink has hashed and written bytes before anything fails.
BIG = 3 * uploads.BATCH_BYTES + 12345


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"max_upload_bytes": 64 * MIB, "max_files_per_version": 300})


@pytest.fixture
def design(client, alice):
    response = client.post(
        "/api/v1/designs",
        json={"name": "bracket", "title": "Bracket", "license": "MIT"},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    return DESIGN


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
    return head + data + b"\r\n"


def closing() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def post(client, account, body, chunk_size: int | None = None):
    headers = {**account.headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    if chunk_size is None:
        return client.post(DESIGN + "/versions", content=body, headers=headers)

    def chunks():
        for start in range(0, len(body), chunk_size):
            yield body[start : start + chunk_size]

    return client.post(DESIGN + "/versions", content=chunks(), headers=headers)


def tmp_files(settings) -> list[str]:
    return sorted(p.name for p in settings.resolved_blob_dir.joinpath("tmp").iterdir())


def stored_blobs(settings) -> list[str]:
    root = settings.resolved_blob_dir
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp")


def versions(client) -> list[dict]:
    return client.get(DESIGN + "/versions").json()["items"]


def test_large_files_with_boundary_lookalikes_survive_any_chunking(client, alice, design):
    # File bytes that hold the delimiter's first bytes, cut at every awkward place.
    lookalike = f"\r\n--{BOUNDARY}"[:-1].encode()
    first = (os.urandom(BIG // 2) + lookalike) * 2 + b"\r\n--"
    second = lookalike.join(os.urandom(MIB) for _ in range(5))
    body = (
        part("message", b"two big files")
        + part("files", first, "parts/first.bin")
        + part("files", second, "parts/second.bin")
        + part("tag", b"v-big")
        + closing()
    )
    # Chunks of an odd size (1021 x 97 bytes), so that their edges fall anywhere, delimiters too.
    response = post(client, alice, body, chunk_size=1021 * 97)
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["message"] == "two big files" and version["tag"] == "v-big"
    files = {f["path"]: f for f in version["files"]}
    for path, data in (("parts/first.bin", first), ("parts/second.bin", second)):
        assert files[path]["sha256"] == hashlib.sha256(data).hexdigest()
        assert files[path]["size"] == len(data)
        served = client.get(f"{DESIGN}/versions/1/files/{path}")
        assert served.status_code == 200 and served.content == data


def test_a_trickled_upload_in_tiny_chunks_is_stored_whole(client, alice, design, settings):
    data = os.urandom(700 * 1024)  # 700 chunks of 1 KiB: more views than one batch holds
    response = post(client, alice, part("files", data, "slow.bin") + closing(), chunk_size=1024)
    assert response.status_code == 201, response.text
    assert response.json()["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert tmp_files(settings) == []


def test_identical_large_content_is_stored_once(client, alice, design, settings):
    data = os.urandom(BIG)
    body = part("files", data, "a.bin") + part("files", data, "copy/a.bin") + closing()
    assert post(client, alice, body).status_code == 201
    assert post(client, alice, part("files", data, "again.bin") + closing()).status_code == 201
    assert stored_blobs(settings) == [hashlib.sha256(data).hexdigest()]
    assert tmp_files(settings) == []


@pytest.mark.parametrize(
    ("bad_part", "status", "field"),
    [
        (b"--" + BOUNDARY.encode() + b"\r\nno colon in this header line\r\n\r\nx\r\n", 400, None),
        (f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n".encode(), 400, None),
        (part("files", b"x"), 422, "files"),  # a file part without a filename
        (part("files", b"again", "big.bin"), 422, "files"),  # the same path twice
        (part("drawing", b"<svg/>", "d.svg"), 422, "drawing"),
        (part("message", b"one") + part("message", b"two"), 422, "message"),
        (part("message", b"\xff\xfe not utf-8"), 422, "message"),
    ],
)
def test_a_bad_part_after_a_large_file_leaves_nothing(
    client, alice, design, settings, bad_part, status, field
):
    body = part("files", os.urandom(BIG), "big.bin") + bad_part + closing()
    response = post(client, alice, body, chunk_size=256 * 1024)
    assert response.status_code == status, response.text
    if field is not None:
        assert response.json()["field"] == field
    assert versions(client) == []
    assert stored_blobs(settings) == [] and tmp_files(settings) == []


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # the body ends inside the file
        b"\r\n--" + BOUNDARY.encode(),  # ... or inside the closing delimiter
        b"\r\n--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-da",  # ... or a header
    ],
)
def test_a_body_cut_short_after_a_large_file_is_400(client, alice, design, settings, tail):
    head = part("files", b"", "big.bin")[: -len(b"\r\n")]
    body = head + os.urandom(BIG) + tail
    response = post(client, alice, body, chunk_size=512 * 1024)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_form"
    assert versions(client) == []
    assert stored_blobs(settings) == [] and tmp_files(settings) == []


def test_a_file_over_the_cap_after_batches_were_written_is_413(client, alice, design, settings):
    body = part("files", os.urandom(settings.max_upload_bytes + MIB), "huge.bin") + closing()
    response = post(client, alice, body, chunk_size=MIB)  # no Content-Length: counted as read
    assert response.status_code == 413, response.text
    assert versions(client) == []
    assert stored_blobs(settings) == [] and tmp_files(settings) == []


def test_many_tiny_parts_up_to_the_file_limit(client, alice, design, settings):
    limit = settings.max_files_per_version
    files = [part("files", b"%d" % i, f"tiny/{i}.txt") for i in range(limit)]
    response = post(client, alice, b"".join(files) + closing(), chunk_size=4096)
    assert response.status_code == 201, response.text
    assert len(response.json()["files"]) == limit
    over = b"".join(files) + part("files", b"one more", "tiny/more.txt") + closing()
    response = post(client, alice, over, chunk_size=4096)
    assert response.status_code == 422 and response.json()["field"] == "files"
    assert [v["number"] for v in versions(client)] == [1]
    assert tmp_files(settings) == []


def test_a_client_that_goes_away_mid_file_leaves_nothing(live_server, alice, settings):
    created = httpx.post(
        f"{live_server}/api/v1/designs",
        json={"name": "bracket", "title": "Bracket", "license": "MIT"},
        headers=alice.headers,
    )
    assert created.status_code == 201
    url = urlsplit(live_server)
    head = part("files", b"", "big.bin")[: -len(b"\r\n")]
    request = (
        f"POST {DESIGN}/versions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: {alice.headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(head) + 40 * MIB}\r\n\r\n"
    ).encode()
    tmp = settings.resolved_blob_dir / "tmp"
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(request + head)
        sent = 0
        # Send until the server has written a batch to its temporary file, then vanish.
        while not any(p.stat().st_size >= uploads.BATCH_BYTES for p in tmp.iterdir()):
            assert sent < 30 * MIB, "the server wrote nothing of the upload"
            sock.sendall(os.urandom(MIB))
            sent += MIB
    deadline = time.monotonic() + 30
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp.iterdir()) == []
    assert httpx.get(f"{live_server}{DESIGN}/versions").json()["items"] == []
    assert stored_blobs(settings) == []


# --- the sink on its own ----------------------------------------------------------------------


def test_sink_stores_batches_in_order_and_waits_when_behind(tmp_path):
    store = BlobStore(tmp_path)
    data = os.urandom(3 * AHEAD_BYTES)

    async def run() -> str:
        sink = UploadSink()
        writer = store.writer()
        view = memoryview(data)
        for start in range(0, len(data), 300_000):
            chunk = view[start : start + 300_000]
            writer.count(len(chunk))
            sink.put(writer, [chunk[:1000], chunk[1000:]], len(chunk))
            if sink.behind:
                await sink.wait()
            assert not sink.behind
        await sink.wait(drained=True)
        return writer.commit().sha256

    sha = asyncio.run(run())
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path_for(sha).read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []


def test_sink_reports_a_failed_write_and_discard_cleans_up(tmp_path):
    store = BlobStore(tmp_path)

    async def run() -> None:
        sink = UploadSink()
        writer = store.writer()
        writer._file.close()  # the disk write fails: the file is gone from under the writer
        sink.put(writer, [memoryview(b"x" * 4096)], 4096)
        with pytest.raises(ValueError):
            await sink.wait(drained=True)
        with pytest.raises(ValueError):
            sink.put(writer, [memoryview(b"y")], 1)
        await sink.discard(writer.abort)

    asyncio.run(run())
    assert list(store.tmp_dir.iterdir()) == []


def test_sink_discard_waits_for_the_batch_in_hand(tmp_path):
    store = BlobStore(tmp_path)
    data = memoryview(os.urandom(8 * MIB))

    async def run() -> None:
        sink = UploadSink()
        writers = [store.writer() for _ in range(4)]
        for writer in writers:
            sink.put(writer, [data], len(data))

        def cleanup() -> None:
            for writer in writers:
                writer.abort()

        await sink.discard(cleanup)
        # Nothing runs on after the discard: no batch is taken and the files are gone.
        assert list(store.tmp_dir.iterdir()) == []

    asyncio.run(run())
