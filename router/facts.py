"""What the router reads of the registry, cached: versions and geometry reports do not change.

A version is immutable once pushed (its number, licence, manifest and files), and a design's
owner and name never change either; a geometry report row, keyed by (sha256, reader, checker
version), is written once. So the router, which reads the same few versions and reports for
every order, keeps them per process after one small query instead of loading the registry's
ORM objects (a version loads its design, owner, tags, maintainers, parents and files).

Nothing here is a source of truth: a miss reads the database, and what is not there yet (a
report still being computed) is never cached.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from registry.models import Design, GeometryReportRow, User, Version, VersionFile
from registry.validation import CHECKER_VERSION

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(frozen=True)
class FileFacts:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class VersionFacts:
    """A version as the router needs it (attribute names as on :class:`Version`)."""

    id: int
    design_id: int
    owner: str
    name: str
    number: int
    license: str
    manifest: dict[str, Any]
    files: tuple[FileFacts, ...]

    @property
    def label(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class ReportFacts:
    """A stored geometry report: its verdict and document."""

    verdict: str
    report: dict[str, Any]


@dataclass
class _Caches:
    versions: Lru[int, VersionFacts]
    reports: Lru[tuple[str, str], ReportFacts]


# One cache per engine (a database): ids mean nothing across databases.
_by_engine: weakref.WeakKeyDictionary[Any, _Caches] = weakref.WeakKeyDictionary()
_by_engine_lock = threading.Lock()


def _caches(session: Session) -> _Caches:
    engine = session.get_bind()
    caches = _by_engine.get(engine)
    if caches is None:
        with _by_engine_lock:
            caches = _by_engine.setdefault(engine, _Caches(Lru(4096), Lru(8192)))
    return caches


def version(session: Session, version_id: int) -> VersionFacts | None:
    """The version's facts, or None when there is no such version."""
    cache = _caches(session).versions
    cached = cache.get(version_id)
    if cached is not None:
        return cached
    row = session.execute(
        select(
            Version.id,
            Version.design_id,
            User.name,
            Design.name,
            Version.number,
            Version.license,
            Version.manifest,
        )
        .join(Design, Design.id == Version.design_id)
        .join(User, User.id == Design.owner_id)
        .where(Version.id == version_id)
    ).first()
    if row is None:
        return None
    files = session.execute(
        select(VersionFile.path, VersionFile.sha256, VersionFile.size)
        .where(VersionFile.version_id == version_id)
        .order_by(VersionFile.path)
    ).all()
    facts = VersionFacts(
        id=row[0],
        design_id=row[1],
        owner=row[2],
        name=row[3],
        number=row[4],
        license=row[5],
        manifest=dict(row[6] or {}),
        files=tuple(FileFacts(path, sha, int(size)) for path, sha, size in files),
    )
    cache.put(version_id, facts)
    return facts


def reports(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ReportFacts]:
    """The stored reports of these ``(sha256, reader)`` pairs under the current checker; pairs
    without a report yet are left out."""
    cache = _caches(session).reports
    found: dict[tuple[str, str], ReportFacts] = {}
    missing: list[tuple[str, str]] = []
    for key in dict.fromkeys(keys):
        cached = cache.get(key)
        if cached is not None:
            found[key] = cached
        else:
            missing.append(key)
    if missing:
        rows = session.execute(
            select(
                GeometryReportRow.sha256,
                GeometryReportRow.reader,
                GeometryReportRow.verdict,
                GeometryReportRow.report,
            ).where(
                GeometryReportRow.checker_version == CHECKER_VERSION,
                tuple_(GeometryReportRow.sha256, GeometryReportRow.reader).in_(sorted(missing)),
            )
        ).all()
        for sha, reader, verdict, report in rows:
            facts = ReportFacts(verdict, report or {})
            cache.put((sha, reader), facts)
            found[sha, reader] = facts
    return found


def forget() -> None:
    """Drop every cached fact (for a database emptied under a running engine)."""
    with _by_engine_lock:
        _by_engine.clear()
