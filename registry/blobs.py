"""Content-addressed blob store on the filesystem.

A blob lives at ``<root>/<aa>/<bb>/<sha256>``. Writers stream into a temporary file under
``<root>/tmp`` while hashing, flush it to disk, then rename it into place: a reader never sees a
partial blob, and identical content is stored once (the second writer drops its temporary file).
Blobs are immutable; versions refer to them by hash.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# sync_file_range(2) flag: start writing dirty pages back now, without waiting for them.
_SYNC_FILE_RANGE_WRITE = 2


def _writeback_starter():
    """Linux's sync_file_range, to start writeback while an upload goes on, so that the fsync
    at commit finds most pages already on disk; None where the C library has no such call."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_sync_file_range = _writeback_starter()


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int


class BlobWriter:
    """One blob being written: feed it chunks, then :meth:`commit` or :meth:`abort`."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._hash = hashlib.sha256()
        self.size = 0
        self._written = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._tmp_path = Path(name)
        self._done = False

    # A write comes in three parts, so that callers may hash and store in parallel threads:
    # each of hash_chunk and store_chunk must see the chunks in order, but they need not wait
    # for each other (both release the GIL on large chunks). Size caps are the caller's.

    def count(self, size: int) -> None:
        self.size += size

    def hash_chunk(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)

    def store_chunk(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            written = self._file.write(view)
            self._written += written
            view = view[written:]

    def hash_chunks(self, chunks: list[memoryview]) -> None:
        for chunk in chunks:
            self._hash.update(chunk)

    def store_chunks(self, chunks: list[memoryview]) -> None:
        """Write a batch, then start its writeback (the thread does not wait for the disk)."""
        start = self._written
        for chunk in chunks:
            self.store_chunk(chunk)
        if _sync_file_range is not None and self._written > start:
            _sync_file_range(
                self._file.fileno(), start, self._written - start, _SYNC_FILE_RANGE_WRITE
            )

    def read_back(self, limit: int) -> bytes:
        """What was written so far, up to ``limit`` bytes (before commit: from the temp file)."""
        with self._tmp_path.open("rb") as file:
            return file.read(limit)

    @property
    def sha256(self) -> str:
        """The digest of what was written so far."""
        return self._hash.hexdigest()

    def commit(self) -> StoredBlob:
        sha = self._hash.hexdigest()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.path_for(sha)
        if final.exists():
            self._tmp_path.unlink(missing_ok=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp_path, final)
        self._done = True
        return StoredBlob(sha, self.size)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        self._tmp_path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> StoredBlob:
        """Store ``data`` whole (made by the hub itself, such as previews)."""
        writer = self.writer()
        try:
            writer.count(len(data))
            writer.hash_chunk(data)
            writer.store_chunk(data)
            return writer.commit()
        finally:
            writer.abort()

    def clean_tmp(self, older_than_seconds: float = 3600) -> int:
        """Remove temporary files left by writers that died; returns how many were removed.

        Only files untouched for ``older_than_seconds`` go, so that uploads in progress in
        other processes sharing the store are left alone.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
