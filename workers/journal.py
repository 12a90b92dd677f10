"""The agent's journal: one SQLite file in the state dir that says how far each job got.

Stages run ``accepted -> downloaded -> prepared -> started -> done | failed | cancelled ->
reported``; ``failed`` (and ``cancelled``) can also come before ``started``. Every transition
is idempotent: asking for the stage a job is already at, or one it is past, changes nothing and
says so, which is what lets an agent killed at any point run its steps again after a restart.

``started`` is written *before* the driver is asked to start the machine, together with a
handle the driver can resume from (:meth:`Journal.record_start`). A restarted agent that finds
a job at ``started`` therefore resumes it and never starts it a second time.

Writes take SQLite's write lock up front (``BEGIN IMMEDIATE``), so a read-then-write never
has to upgrade. The file is in WAL mode: a transition that returned survives the agent being
killed the next instant (SIGKILL included), since it is in the WAL file, which the operating
system keeps. Only the start is also synced to the disk (``synchronous = FULL`` for that one
transaction, which flushes the ones before it too): a power cut may then lose the last few
stages, which are all redone without harm (a download hits the cache, a prepare rebuilds, a
finished job is polled again), but never a start, which must not be done twice. An fsync on
every transition would cost about as much as the rest of the agent's work on a small part.

A state dir that is gone (deleted between runs) is created again with a warning: the jobs
journaled there are forgotten.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dgml.errors import Conflict, NotFound

log = logging.getLogger(__name__)

JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
STAGES = (
    "accepted",
    "downloaded",
    "prepared",
    "started",
    "done",
    "failed",
    "cancelled",
    "reported",
)
FINISHED = frozenset({"done", "failed", "cancelled"})
_RANK = {"accepted": 0, "downloaded": 1, "prepared": 2, "started": 3, "reported": 5}
_RANK.update(dict.fromkeys(FINISHED, 4))
_NEXT = {"accepted": "downloaded", "downloaded": "prepared", "prepared": "started"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    offer_id TEXT,
    machine TEXT NOT NULL,
    process TEXT NOT NULL,
    material TEXT NOT NULL,
    stage TEXT NOT NULL,
    files TEXT NOT NULL,
    artifacts TEXT,
    handle TEXT,
    outcome TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id);
"""


class FileRef(BaseModel):
    """A file a job needs, as the hub names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class JobSpec(BaseModel):
    """A job the agent has accepted: what to make, on which machine, from which files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(pattern=JOB_ID)
    offer_id: str | None = None
    machine: str
    process: str
    material: str
    files: list[FileRef] = Field(min_length=1)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    offer_id: str | None
    machine: str
    process: str
    material: str
    stage: str
    files: list[FileRef]
    artifacts: list[dict[str, Any]] | None
    handle: dict[str, Any] | None
    outcome: dict[str, Any] | None
    error: str | None
    created_at: str
    updated_at: str

    @property
    def finished(self) -> bool:
        return self.stage in FINISHED

    def spec(self) -> JobSpec:
        return JobSpec(
            job_id=self.job_id,
            offer_id=self.offer_id,
            machine=self.machine,
            process=self.process,
            material=self.material,
            files=self.files,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def ensure_state_dir(state_dir: Path) -> Path:
    """The state dir, created (with a warning when it had to be) and private to this user."""
    if not state_dir.is_dir():
        log.warning(
            "state dir %s does not exist: creating it; jobs journaled before (if any) are "
            "forgotten and must be settled on the hub",
            state_dir,
        )
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return state_dir


class Journal:
    """The jobs of one agent, in ``<state_dir>/journal.sqlite3``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = ensure_state_dir(Path(state_dir)) / "journal.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self, *, synced: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``synced`` waits until it is on the disk itself."""
        with self._lock:
            if synced:
                self._db.execute("PRAGMA synchronous = FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if synced:
                    self._db.execute("PRAGMA synchronous = NORMAL")

    def _row(self, db: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def _event(self, db: sqlite3.Connection, job_id: str, stage: str, detail: Any = None) -> None:
        db.execute(
            "INSERT INTO events (job_id, stage, at, detail) VALUES (?, ?, ?, ?)",
            (job_id, stage, _now(), _dump(detail)),
        )

    # --- reading --------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            record = self._row(self._db, job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r} in the journal")
        return record

    def jobs(self) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]

    def unfinished(self) -> list[JobRecord]:
        """Jobs a (re)started agent must carry on with."""
        return [job for job in self.jobs() if job.stage not in FINISHED | {"reported"}]

    def unreported(self) -> list[JobRecord]:
        """Finished jobs whose outcome the hub has not yet acknowledged."""
        return [job for job in self.jobs() if job.stage in FINISHED]

    def events(self, job_id: str) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT stage, at FROM events WHERE job_id = ? ORDER BY id", (job_id,)
            ).fetchall()
        return [(stage, at) for stage, at in rows]

    # --- transitions ----------------------------------------------------------------------

    def add(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Journal an accepted job; the same job again is a no-op, a different one a conflict."""
        with self._write() as db:
            existing = self._row(db, spec.job_id)
            if existing is not None:
                if existing.spec() != spec:
                    raise Conflict(f"job {spec.job_id!r} is journaled with other details")
                return existing, False
            now = _now()
            files = [f.model_dump() for f in spec.files]
            db.execute(
                "INSERT INTO jobs (job_id, offer_id, machine, process, material, stage, files, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'accepted', ?, ?, ?)",
                (
                    spec.job_id,
                    spec.offer_id,
                    spec.machine,
                    spec.process,
                    spec.material,
                    _dump(files),
                    now,
                    now,
                ),
            )
            self._event(db, spec.job_id, "accepted")
            record = self._row(db, spec.job_id)
        assert record is not None
        return record, True

    def advance(
        self,
        job_id: str,
        stage: str,
        *,
        artifacts: list[dict[str, Any]] | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Move to ``downloaded`` or ``prepared``; True when this call moved it."""
        if stage not in ("downloaded", "prepared"):
            raise ValueError(f"advance() is for downloaded and prepared, not {stage!r}")
        with self._write() as db:
            record = self._existing(db, job_id)
            if _RANK[record.stage] >= _RANK[stage]:
                return record, False
            if _NEXT.get(record.stage) != stage:
                raise Conflict(f"job {job_id!r} is {record.stage}; it cannot become {stage}")
            self._set(db, job_id, stage, artifacts=artifacts, outcome=outcome)
            return self._existing(db, job_id), True

    def record_start(self, job_id: str, handle: dict[str, Any]) -> tuple[JobRecord, bool]:
        """Write ``started`` and the handle before the machine is started.

        False means the start was recorded earlier (by this run or one before it): the caller
        must resume the job from the returned record's handle, not start it.
        """
        with self._write(synced=True) as db:
            record = self._existing(db, job_id)
            if _RANK[record.stage] >= _RANK["started"]:
                return record, False
            if record.stage != "prepared":
                raise Conflict(f"job {job_id!r} is {record.stage}; it cannot be started")
            self._set(db, job_id, "started", handle=handle)
            return self._existing(db, job_id), True

    def update_handle(self, job_id: str, handle: dict[str, Any]) -> JobRecord:
        """Keep what the driver learnt while starting or running (remote ids, progress)."""
        with self._write() as db:
            self._existing(db, job_id)
            db.execute(
                "UPDATE jobs SET handle = ?, updated_at = ? WHERE job_id = ?",
                (_dump(handle), _now(), job_id),
            )
            return self._existing(db, job_id)

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        error: str | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """``done`` (only once started), ``failed`` or ``cancelled``; a finished job stays so."""
        if state not in FINISHED:
            raise ValueError(f"finish() takes done, failed or cancelled, not {state!r}")
        with self._write() as db:
            record = self._existing(db, job_id)
            if record.stage in FINISHED or record.stage == "reported":
                return record, False
            if state == "done" and record.stage != "started":
                raise Conflict(f"job {job_id!r} is {record.stage}; it cannot be done yet")
            merged = {**(record.outcome or {}), **(outcome or {}), "result": state}
            self._set(db, job_id, state, error=error, outcome=merged, detail=error)
            return self._existing(db, job_id), True

    def mark_reported(self, job_id: str) -> tuple[JobRecord, bool]:
        """The hub has the outcome; the job needs nothing more from this agent."""
        with self._write() as db:
            record = self._existing(db, job_id)
            if record.stage == "reported":
                return record, False
            if record.stage not in FINISHED:
                raise Conflict(f"job {job_id!r} is {record.stage}; report it when it is finished")
            self._set(db, job_id, "reported")
            return self._existing(db, job_id), True

    def _existing(self, db: sqlite3.Connection, job_id: str) -> JobRecord:
        record = self._row(db, job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r} in the journal")
        return record

    def _set(self, db: sqlite3.Connection, job_id: str, stage: str, **values: Any) -> None:
        detail = values.pop("detail", None)
        columns = {"stage": stage, "updated_at": _now()}
        for name, value in values.items():
            if value is not None:
                columns[name] = value if name == "error" else _dump(value)
        assignments = ", ".join(f"{name} = ?" for name in columns)
        db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*columns.values(), job_id))
        self._event(db, job_id, stage, detail)


def _record(row: tuple) -> JobRecord:
    (
        job_id,
        offer_id,
        machine,
        process,
        material,
        stage,
        files,
        artifacts,
        handle,
        outcome,
        error,
        created_at,
        updated_at,
    ) = row
    return JobRecord(
        job_id=job_id,
        offer_id=offer_id,
        machine=machine,
        process=process,
        material=material,
        stage=stage,
        files=[FileRef(**f) for f in json.loads(files)],
        artifacts=_load(artifacts),
        handle=_load(handle),
        outcome=_load(outcome),
        error=error,
        created_at=created_at,
        updated_at=updated_at,
    )


def valid_job_id(job_id: str) -> bool:
    return bool(re.match(JOB_ID, job_id))
