"""An in-process cache of immutable version documents.

A numbered version never changes, and neither do the names it is reached by (designs and
accounts are never renamed or deleted), so ``owner/name/versions/N`` answers with the same bytes
forever. Keeping the rendered JSON and the file table of recently read versions lets the hottest
reads — version metadata and file downloads — skip the database. Tags and ``latest`` are always
resolved against the database. Each API process has its own cache; they never disagree, because
what they hold cannot go stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from registry.models import Version
from registry.schemas import VersionPublic


@dataclass(frozen=True, slots=True)
class CachedFile:
    sha256: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class CachedVersion:
    body: bytes
    files: dict[str, CachedFile]
    # Whether the document is final: its geometry verdict is no longer pending.
    final: bool = True


def cache_entry(version: Version, public: VersionPublic) -> CachedVersion:
    return CachedVersion(
        body=public.model_dump_json().encode(),
        files={f.path: CachedFile(f.sha256, f.size, f.media_type) for f in version.files},
        final=public.verdict != "pending",
    )


class VersionCache:
    """A bounded, thread-safe LRU keyed by ``(owner, name, number)``, names case-folded."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str, int], CachedVersion] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(owner: str, name: str, number: int) -> tuple[str, str, int]:
        return owner.casefold(), name.casefold(), number

    def get(self, owner: str, name: str, number: int) -> CachedVersion | None:
        key = self.key(owner, name, number)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, owner: str, name: str, number: int, entry: CachedVersion) -> None:
        if self.capacity <= 0:
            return
        key = self.key(owner, name, number)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class BlobBytesCache:
    """A bounded, thread-safe LRU of small blobs' bytes, keyed by sha256 and capped in bytes.

    Blobs never change, so a hit can never be stale; popular small files (a design's STL, its
    README) are then answered from memory instead of a read through the thread pool.
    """

    def __init__(self, capacity_bytes: int, max_entry_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.max_entry_bytes = max_entry_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(sha256)
            if data is not None:
                self._entries.move_to_end(sha256)
            return data

    def put(self, sha256: str, data: bytes) -> None:
        if len(data) > min(self.max_entry_bytes, self.capacity_bytes):
            return
        with self._lock:
            if sha256 in self._entries:
                self._entries.move_to_end(sha256)
                return
            self._entries[sha256] = data
            self._size += len(data)
            while self._size > self.capacity_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)

    @property
    def size_bytes(self) -> int:
        return self._size
