"""Content-addressed blob store on the filesystem.

A blob lives at ``<root>/<aa>/<bb>/<sha256>``. Writers stream into a temporary file under
``<root>/tmp`` while hashing, flush it to disk, then rename it into place: a reader never sees a
partial blob, and identical content is stored once (the second writer drops its temporary file).
Blobs are immutable; versions refer to them by hash.

A large upload does not stay in the page cache: as each batch is written its writeback starts,
and what was written :data:`DROP_LAG` bytes before it, on disk by then as a rule, is dropped
from the cache (Linux; nothing waits for the disk), and at commit, after the fsync, the whole
blob is. The upload thus cycles through a few megabytes of cache instead of growing it by its
whole size, which would evict what downloads read (and, on a virtual machine whose memory the
host backs lazily, makes every write land on never-touched, slow pages); the fsync at commit
finds little left to write. Files smaller than the lag stay cached.
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
# An upload's bytes this far behind the newest batch are dropped from the page cache.
DROP_LAG = 8 * 1024 * 1024


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


def _drop_cached(fd: int, offset: int, length: int) -> None:
    """Advise the kernel to drop these bytes' clean pages from the page cache (0: to the end).
    A hint only: a file system that cannot take it leaves the upload as it is."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


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
        self._dropped = 0  # the page cache was told to drop the bytes before this offset
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._tmp_path = Path(name)
        self._done = False

    # Uploads hash and write batches (hash_batch, write_batch), each of the two in order but
    # possibly in two threads at once; hub-made blobs go through count, hash_chunk and
    # store_chunk (put). Size caps are the caller's.

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

    def hash_batch(self, chunks: list[memoryview]) -> None:
        for chunk in chunks:
            self._hash.update(chunk)

    def write_batch(self, chunks: list[memoryview]) -> None:
        """Write a batch in one system call; start its writeback, and drop from the page cache
        what was written more than :data:`DROP_LAG` bytes before it (by then on disk as a rule;
        pages still being written are left for :meth:`commit`)."""
        start = self._written
        fd = self._file.fileno()
        done = os.writev(fd, chunks)
        self._written += done
        if done < sum(len(chunk) for chunk in chunks):  # a short write: the rest one by one
            for chunk in chunks:
                if done >= len(chunk):
                    done -= len(chunk)
                    continue
                self.store_chunk(chunk[done:])
                done = 0
        if _sync_file_range is None or self._written == start:
            return
        _sync_file_range(fd, start, self._written - start, _SYNC_FILE_RANGE_WRITE)
        upto = start - DROP_LAG
        if upto > self._dropped:
            _drop_cached(fd, self._dropped, upto - self._dropped)
            self._dropped = upto

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
        if self._dropped:  # a large upload: none of it stays in the page cache
            _drop_cached(self._file.fileno(), 0, 0)
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
