"""What the agent tells the hub about its jobs, and what it tells ``dgml agent status``.

The :class:`Reporter` runs in a thread of its own, so that no machine ever waits for the hub:

- a finished job (``done``, ``failed`` or ``cancelled`` in the journal) is reported with
  ``complete`` or ``fail`` and then marked ``reported``; until the hub has answered, the journal
  is the queue, and an agent restarted meanwhile reports it then. The result is built from the
  journal alone, so a repeated report is the same report (the hub answers a replay unchanged);
- a running job gets ``progress`` when its message changed, or its percentage changed and the
  last progress is ``progress_every_s`` old; otherwise a heartbeat when a third of its lease
  (on the hub's clock, from the last answer) has gone by;
- a 409 on a heartbeat or progress of a ``disconnected`` job means the lease was lost: no more
  heartbeats, the machine goes on and the outcome is still reported at the end;
- while the hub does not answer, a round is skipped for a backoff with full jitter that grows
  with each failed round and is forgotten at the first answer.

Each round also writes ``<state_dir>/status.json`` (pid, hub reachability, last contact, the
jobs' progress) for ``dgml agent status`` to read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dgml.errors import Conflict, Invalid, NotFound, Unauthorized
from workers.hub import HubClient, HubUnavailable, Retry
from workers.journal import JobRecord, Journal

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
ARTIFACTS_IN_RESULT = 30


@dataclass(frozen=True)
class LoopOptions:
    """Timings of the loop; the defaults suit a lab, tests make them shorter."""

    claim_wait_s: float = 25.0
    poll_s: float = 1.0
    tick_s: float = 1.0
    grace_s: float = 10.0
    adopt_every_s: float = 30.0
    idle_s: float = 5.0
    progress_every_s: float = 5.0
    backoff: Retry = field(default_factory=lambda: Retry(attempts=1, base_s=0.5, cap_s=30.0))


@dataclass
class Live:
    """A job this process works on, and what the hub has been told about it."""

    job_id: str
    machine: str
    thread: threading.Thread | None = None
    finished: bool = False
    confirmed: bool = False  # the hub said it runs, since this process started
    disconnected: bool = False  # the hub lost the lease: no heartbeats, report at the end
    over_at_hub: bool = False  # the hub ended the job (an operator resolved it)
    percent: float | None = None
    message: str = ""
    sent: tuple[int | None, str] | None = None
    sent_at: float = 0.0
    next_beat: float = 0.0

    @property
    def hub_id(self) -> int:
        return int(self.job_id)


class LiveJobs:
    """The jobs of this process, shared by the threads under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._jobs: dict[str, Live] = {}

    def get(self, job_id: str) -> Live | None:
        with self.lock:
            return self._jobs.get(job_id)

    def add(self, job_id: str, machine: str) -> Live:
        """The job's entry, made if new (call with :attr:`lock` held)."""
        live = self._jobs.get(job_id)
        if live is None:
            live = self._jobs[job_id] = Live(job_id, machine)
        return live

    def remove(self, job_id: str) -> None:
        with self.lock:
            self._jobs.pop(job_id, None)

    def all(self) -> list[Live]:
        with self.lock:
            return list(self._jobs.values())

    def active(self) -> list[Live]:
        """Jobs not yet finished on their machine."""
        return [live for live in self.all() if not live.finished]


def result_of(record: JobRecord) -> dict[str, Any]:
    """The result sent with ``complete``: the machine, the estimate and the artifacts."""
    artifacts = record.artifacts or []
    keep = ("name", "kind", "source", "estimated_s", "filament_g")
    result: dict[str, Any] = {
        "machine": record.machine,
        "estimate": (record.outcome or {}).get("estimate", {}),
        "artifacts": [{k: a[k] for k in keep if k in a} for a in artifacts[:ARTIFACTS_IN_RESULT]],
    }
    if len(artifacts) > ARTIFACTS_IN_RESULT:
        result["artifacts_total"] = len(artifacts)
    return result


def reason_of(record: JobRecord) -> str:
    if record.stage == "cancelled":
        return "cancelled at the lab" + (f": {record.error}" if record.error else "")
    return record.error or "failed at the lab"


class Reporter:
    """Heartbeats, progress and outcomes of the live jobs, one round at a time."""

    def __init__(
        self,
        hub: HubClient,
        journal: Journal,
        jobs: LiveJobs,
        options: LoopOptions,
        *,
        on_fatal: Callable[[str], None],
        status_path: Path,
        status_info: dict[str, Any],
    ) -> None:
        self.hub = hub
        self.journal = journal
        self.jobs = jobs
        self.options = options
        self.on_fatal = on_fatal
        self.status_path = status_path
        self.status_info = status_info
        self.wake = threading.Event()
        self._rng = random.Random()
        self._after = 0.0
        self._failures = 0

    def run(self, halt: threading.Event) -> None:
        """Rounds until ``halt``; :attr:`wake` brings the next round forward."""
        while not halt.is_set():
            try:
                self.report_once()
            except Exception as exc:  # a bug must not stop the reports of the other jobs
                log.exception("reporting failed: %s", exc)
            self.write_status()
            self.wake.wait(self.options.tick_s)
            self.wake.clear()

    def report_once(self) -> None:
        """Finished jobs first, then progress or heartbeats; backs off while the hub is away."""
        if time.monotonic() < self._after:
            return
        try:
            for record in self.journal.unreported():
                self._report_final(record)
            for live in self.jobs.active():
                self._report_live(live)
        except HubUnavailable as exc:
            delay = self.options.backoff.delay(self._failures, self._rng)
            self._failures += 1
            self._after = time.monotonic() + delay
            level = logging.WARNING if self._failures == 1 else logging.INFO
            log.log(level, "%s; reports wait %.1f s (jobs on machines go on)", exc.detail, delay)
        except Unauthorized as exc:
            self.on_fatal(f"the hub refused this agent's token ({exc.detail}): enrol it again")
        else:
            if self._failures:
                log.info("the hub answers again")
            self._failures = 0

    def renewed(self, live: Live, lease_expires_at: str) -> None:
        """The next heartbeat: a third of what is left of the lease."""
        left = self.hub.lease_left(lease_expires_at)
        live.next_beat = time.monotonic() + min(300.0, max(0.5, left / 3))

    def _report_live(self, live: Live) -> None:
        if live.disconnected or live.over_at_hub:
            return
        now = time.monotonic()
        current = (None if live.percent is None else int(live.percent), live.message)
        last_message = live.sent[1] if live.sent else None
        due = current != live.sent and (
            current[1] != last_message or now - live.sent_at >= self.options.progress_every_s
        )
        try:
            if due:
                job = self.hub.progress(live.hub_id, live.percent or 0.0, live.message, attempts=1)
                live.sent, live.sent_at = current, now
                self.renewed(live, job["lease_expires_at"])
                live.confirmed = True
            elif now >= live.next_beat:
                lease = self.hub.heartbeat(live.hub_id, attempts=1)
                self.renewed(live, lease["lease_expires_at"])
                live.confirmed = True
        except Conflict as exc:
            if exc.data.get("state") == "disconnected":
                live.disconnected = True
                log.warning(
                    "job %s: the hub lost its lease; the machine goes on and the outcome is "
                    "reported at the end (the job is never started again)",
                    live.job_id,
                )
            else:
                live.over_at_hub = True
                log.warning("job %s: %s", live.job_id, exc.detail)
        except NotFound as exc:
            live.over_at_hub = True
            log.error("job %s: %s", live.job_id, exc.detail)

    def _report_final(self, record: JobRecord) -> None:
        """Tell the hub how a finished job ended; the journal forgets it once the hub knows."""
        if not record.job_id.isdigit():
            log.warning("job %s is not a hub job; not reporting it", record.job_id)
        else:
            try:
                self._send_final(record)
            except (Conflict, NotFound) as exc:
                log.warning("job %s: the hub keeps its own record: %s", record.job_id, exc.detail)
        self.journal.mark_reported(record.job_id)
        self.jobs.remove(record.job_id)

    def _send_final(self, record: JobRecord) -> None:
        job_id = int(record.job_id)
        if record.stage == "done":
            try:
                self.hub.complete(job_id, result_of(record), attempts=1)
            except Invalid as exc:  # never expected: the result is small, plain JSON
                log.error("job %s: the hub refused the result (%s)", job_id, exc.detail)
                self.hub.complete(job_id, {"machine": record.machine}, attempts=1)
            log.info("job %s: reported done", job_id)
        else:
            self.hub.fail(job_id, reason_of(record), attempts=1)
            log.info("job %s: reported %s: %s", job_id, record.stage, reason_of(record))

    def write_status(self, *, stopped: bool = False) -> None:
        """``status.json`` in the state dir, for ``dgml agent status``."""
        last = self.hub.last_contact
        contact = None if last is None else datetime.fromtimestamp(last, UTC)
        data = {
            **self.status_info,
            "pid": os.getpid(),
            "server": self.hub.server,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "stopped": stopped,
            "hub": {
                "reachable": self.hub.reachable,
                "last_contact": contact.isoformat(timespec="seconds") if contact else None,
                "last_error": self.hub.last_error,
            },
            "jobs": {
                live.job_id: {
                    "machine": live.machine,
                    "percent": live.percent,
                    "message": live.message,
                    "disconnected": live.disconnected,
                    "over_at_hub": live.over_at_hub,
                }
                for live in self.jobs.all()
            },
        }
        write_json(self.status_path, data)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically (a reader sees the old or the new one)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            temp.unlink()


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """What the running (or last) agent wrote to ``status.json``; None if nothing."""
    try:
        data = json.loads((Path(state_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
