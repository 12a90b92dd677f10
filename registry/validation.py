"""Every version's model files get a geometry report.

Creating a version posts one outbox message per model file whose bytes have no report yet for
this checker version (:func:`request_validation`, in the version's own transaction). An RQ
worker runs :func:`validate_file`: the checks and previews run in a child process with caps on
time and memory (:mod:`registry.geometry.runner`), and the report is stored once per
``(sha256, reader, checker version)``. Forks, merges and re-pushes of the same bytes therefore
cost nothing, and running a job twice does no harm.

A version's verdict is derived, never stored: ``none`` when it holds no model file, ``pending``
while any of its model files has no report, else the worst of its files' verdicts.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dgml import outbox
from dgml.db import write_session
from dgml.metrics import VALIDATION_SECONDS
from registry.geometry.checks import CHECKER_VERSION
from registry.geometry.runner import Limits, run_checks, run_diff
from registry.models import GeometryDiffRow, GeometryReportRow, Version, VersionFile

log = logging.getLogger("dgml.validation")

READERS = {".stl": "stl", ".obj": "obj", ".ply": "ply", ".3mf": "3mf", ".step": "step"}
READERS[".stp"] = "step"
TOPIC = "geometry.validate"
outbox.register(
    TOPIC,
    outbox.Topic(queue="validate", function="registry.validation.validate_file", timeout_s=3600),
)

# Worst last: a version's verdict is the worst of its files'.
VERDICT_ORDER = ("pass", "warn", "fail", "unreadable")
PENDING, NO_MODELS = "pending", "none"


def reader_for(path: str) -> str | None:
    """The reader a file's extension selects, or None for a file that is not a model."""
    return READERS.get(PurePosixPath(path).suffix.lower())


def job_key(sha256: str, reader: str) -> str:
    """The RQ job id of this file's check (RQ allows letters, digits, '_' and '-')."""
    checker = re.sub(r"[^A-Za-z0-9-]", "-", CHECKER_VERSION)
    return f"validate_{checker}_{reader}_{sha256}"


def _keys(files: Iterable[VersionFile]) -> set[tuple[str, str]]:
    return {(f.sha256, r) for f in files if (r := reader_for(f.path)) is not None}


def reports_for(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], GeometryReportRow]:
    """The stored reports of these ``(sha256, reader)`` pairs under the current checker."""
    if not keys:
        return {}
    rows = session.scalars(
        select(GeometryReportRow).where(
            GeometryReportRow.checker_version == CHECKER_VERSION,
            tuple_(GeometryReportRow.sha256, GeometryReportRow.reader).in_(sorted(keys)),
        )
    ).all()
    return {(row.sha256, row.reader): row for row in rows}


def request_validation(session: Session, version: Version) -> int:
    """Post validation jobs for the version's model files that have no report yet; how many."""
    return request_for_files(session, [(f.path, f.sha256) for f in version.files])


def request_for_files(session: Session, files_by_path: Iterable[tuple[str, str]]) -> int:
    """Post validation jobs for those ``(path, sha256)`` model files without a report yet."""
    files = {}
    for path, sha in files_by_path:
        reader = reader_for(path)
        if reader is not None:
            files.setdefault((sha, reader), path)
    missing = set(files) - set(reports_for(session, set(files)))
    for sha, reader in sorted(missing):
        name = PurePosixPath(files[sha, reader]).name
        outbox.post(
            session, TOPIC, job_key(sha, reader), {"sha256": sha, "reader": reader, "name": name}
        )
    return len(missing)


def verdict_of(files: Sequence[VersionFile], reports: dict[tuple[str, str], GeometryReportRow]):
    keys = _keys(files)
    if not keys:
        return NO_MODELS
    if any(key not in reports for key in keys):
        return PENDING
    return max((reports[key].verdict for key in keys), key=VERDICT_ORDER.index)


def verdicts(session: Session, versions: Sequence[Version]) -> dict[int, str]:
    """Each version's verdict, with one query for all of them."""
    reports = reports_for(session, set().union(*(_keys(v.files) for v in versions)))
    return {v.id: verdict_of(v.files, reports) for v in versions}


def limits_from(settings) -> Limits:
    return Limits(
        seconds=settings.validation_timeout_s,
        memory_bytes=settings.validation_memory_mb * 2**20,
    )


def validate_file(sha256: str, reader: str, name: str) -> str:
    """The RQ job: check one file's bytes and store the report; returns the verdict."""
    from dgml.worker import context

    ctx = context()
    with ctx.sessions() as session:
        known = reports_for(session, {(sha256, reader)}).get((sha256, reader))
        if known is not None:
            return known.verdict
    path = ctx.blobs.path_for(sha256)
    if not path.exists():
        raise FileNotFoundError(f"blob {sha256} is missing from the store")
    if reader_for(name) != reader:
        name = f"{Path(name).stem or 'model'}.{reader}"
    with VALIDATION_SECONDS.labels(reader=reader).time():
        result = run_checks(path, name, limits_from(ctx.settings))
    report = result.report.model_copy(update={"path": None})
    row = GeometryReportRow(
        sha256=sha256,
        reader=reader,
        checker_version=CHECKER_VERSION,
        verdict=report.verdict.value,
        report=report.model_dump(mode="json", exclude_none=True),
        preview_png=ctx.blobs.put(result.png).sha256 if result.png else None,
        preview_glb=ctx.blobs.put(result.glb).sha256 if result.glb else None,
        seconds=round(result.seconds, 3),
    )
    # Another worker may have stored the same report first: the same answer, so that is fine.
    with contextlib.suppress(IntegrityError), write_session(ctx.sessions) as session:
        session.add(row)
    log.info("%s (%s): %s in %.1f s", name, sha256[:12], row.verdict, result.seconds)
    return row.verdict


@dataclass(frozen=True)
class DiffSide:
    sha256: str
    path: str
    reader: str


def geometry_diff(sessions, blobs, settings, old: DiffSide, new: DiffSide) -> dict:
    """The diff of two model files, computed once (in a limited child) and then kept.

    No transaction stays open while the child runs, and the result is written in a
    transaction of its own that takes the write lock up front (SQLite cannot turn a reading
    transaction into a writing one while a worker writes reports)."""
    key = dict(
        old_sha256=old.sha256,
        old_reader=old.reader,
        new_sha256=new.sha256,
        new_reader=new.reader,
        checker_version=CHECKER_VERSION,
    )
    with sessions() as session:
        stored = session.scalar(select(GeometryDiffRow).filter_by(**key))
        if stored is not None:
            return stored.diff
    diff = run_diff(
        blobs.path_for(old.sha256),
        f"old.{old.reader}",
        blobs.path_for(new.sha256),
        f"new.{new.reader}",
        limits_from(settings),
    )
    if "error" in diff and diff.get("code") != "UNREADABLE":
        return diff  # a cap or a crash: worth another try later, so not kept
    with contextlib.suppress(IntegrityError), write_session(sessions) as session:
        session.add(GeometryDiffRow(**key, diff=diff))  # a concurrent request may win: same diff
    return diff
