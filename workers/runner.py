"""One job's way through the agent, machine side: download, prepare, start, follow.

The hub-facing loop decides which jobs to take and tells the hub what happened; the
:class:`Runner` does everything in between, one journaled step at a time. Each step looks at
the job's stage in the journal, does the one thing that stage needs and writes the next stage,
so after a crash or a SIGKILL the same call simply carries on:

- ``accepted``: fetch every file into the cache (a file already there is not downloaded
  again); a file that does not match its sha256 fails the job;
- ``downloaded``: build the artifacts (slice, or pass the files through);
- ``prepared``: journal the start with the driver's handle, *then* start the machine;
- ``started``: poll the machine; a finished job is journaled done, failed or cancelled.

At start-up :meth:`Runner.resume_all` hands every job at ``started`` to its driver's ``resume``,
which follows the job on the machine and starts it only if the machine never got it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from dgml.errors import Invalid
from workers.cache import Cache, DownloadFailed, FileMismatch
from workers.config import AgentConfig
from workers.drivers import Driver, DriverError, MachineUnreachable, Status, make_driver
from workers.drivers.base import State
from workers.journal import FINISHED, JobRecord, JobSpec, Journal
from workers.pipeline import Artifact, InputFile, PrepareFailed, prepare, totals
from workers.tools import ToolReport, find_tools

log = logging.getLogger(__name__)


class Runner:
    """The machine side of the agent over one state dir."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        client: httpx.Client,
        tools: ToolReport | None = None,
        drivers: dict[str, Driver] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.journal = Journal(config.agent.state_dir)
        self.state_dir = config.agent.state_dir
        self.cache = Cache(self.state_dir / "cache")
        self.cache.clean_tmp()
        self.jobs_dir = self.state_dir / "jobs"
        self.tools = tools if tools is not None else find_tools(config)
        self._drivers: dict[str, Driver] = dict(drivers or {})
        # Started jobs whose driver was started or resumed by this process: others are
        # resumed before their first poll.
        self._live: set[str] = set()
        # Jobs whose files this process has verified (download step): their prepare step
        # trusts the cache's read-only files by size instead of hashing them a second time.
        self._verified: set[str] = set()

    def close(self) -> None:
        for driver in self._drivers.values():
            driver.close()
        self.journal.close()

    def driver(self, machine: str) -> Driver:
        if machine not in self._drivers:
            self._drivers[machine] = make_driver(self.config.machine(machine), self.state_dir)
        return self._drivers[machine]

    def artifacts_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id / "artifacts"

    # --- taking a job ---------------------------------------------------------------------

    def accept(self, spec: JobSpec) -> JobRecord:
        """Journal a job this agent can make; one it cannot is refused before anything runs."""
        machine = self.config.machine(spec.machine)
        if machine.process != spec.process:
            raise Invalid(
                f"{machine.name} does {machine.process}, not {spec.process}", field="process"
            )
        if not machine.takes(spec.material):
            raise Invalid(f"{machine.name} does not take {spec.material!r}", field="material")
        if not self.tools.available(spec.process):
            reason = self.tools.unavailable()[spec.process]
            raise Invalid(f"{spec.process} is not offered here: {reason}", field="process")
        record, _ = self.journal.add(spec)
        return record

    # --- the steps ------------------------------------------------------------------------

    def step(self, job_id: str) -> JobRecord:
        """Do what the job's stage calls for, once; returns the job as it now is.

        A download that may work later (no answer, a 5xx) raises ``DownloadFailed`` with
        ``retry`` true and leaves the job accepted; every other failure fails the job.
        """
        record = self.journal.get(job_id)
        if record.stage == "accepted":
            self.download(record)
        elif record.stage == "downloaded":
            self.build(record)
        elif record.stage == "prepared":
            self.start(record)
        elif record.stage == "started":
            self.poll(job_id)
        return self.journal.get(job_id)

    def run_until_started(self, job_id: str) -> JobRecord:
        """Download, prepare and start; stops early when the job failed."""
        record = self.journal.get(job_id)
        while record.stage in ("accepted", "downloaded", "prepared"):
            before = record.stage
            record = self.step(job_id)
            if record.stage == before:
                break
        return record

    def download(self, record: JobRecord) -> None:
        try:
            for file in record.files:
                self.cache.fetch(file.url, file.sha256, file.size, self.client)
        except FileMismatch as exc:
            self._fail(record.job_id, f"{_name_of(record, exc)}: {exc.detail}")
            return
        except DownloadFailed as exc:
            if exc.retry:
                raise
            self._fail(record.job_id, exc.detail)
            return
        self._verified.add(record.job_id)
        self.journal.advance(record.job_id, "downloaded")
        log.info("job %s: %d file(s) downloaded and verified", record.job_id, len(record.files))

    def _inputs(self, record: JobRecord) -> list[InputFile]:
        """The job's files from the cache, fetched again only if the cache lost them."""
        inputs = []
        trusted = record.job_id in self._verified
        for file in record.files:
            path = self.cache.path_for(file.sha256)
            if not (trusted and _has_size(path, file.size)):
                path = self.cache.lookup(file.sha256, file.size)
            if path is None:
                log.warning("job %s: %s is no longer cached; fetching it", record.job_id, file.name)
                path = self.cache.fetch(file.url, file.sha256, file.size, self.client)
            inputs.append(InputFile(file.name, path))
        return inputs

    def build(self, record: JobRecord) -> None:
        """Prepare the artifacts; a job that cannot be prepared fails with the reason."""
        machine = self.config.machine(record.machine)
        try:
            inputs = self._inputs(record)
            artifacts = prepare(
                record.process,
                machine,
                record.material,
                inputs,
                self.artifacts_dir(record.job_id),
                slicer_command=self.config.agent.prusa_slicer,
            )
        except (PrepareFailed, FileMismatch) as exc:
            self._fail(record.job_id, exc.detail)
            return
        self.journal.advance(
            record.job_id,
            "prepared",
            artifacts=[a.to_dict() for a in artifacts],
            outcome={"estimate": totals(artifacts)},
        )
        log.info("job %s: prepared %d artifact(s)", record.job_id, len(artifacts))

    def _artifact_paths(self, record: JobRecord) -> list[Path] | None:
        """The prepared files; prepared again if they went missing, None if that failed."""
        folder = self.artifacts_dir(record.job_id)
        paths = [folder / Artifact.from_dict(a).name for a in record.artifacts or []]
        if not paths or not all(p.is_file() for p in paths):
            log.warning("job %s: artifacts are missing; preparing them again", record.job_id)
            self.build(record)
            record = self.journal.get(record.job_id)
            if record.stage != "prepared":
                return None
            paths = [folder / Artifact.from_dict(a).name for a in record.artifacts or []]
        return paths

    def start(self, record: JobRecord) -> None:
        """Journal the start, then start the machine; an earlier start is resumed instead."""
        driver = self.driver(record.machine)
        paths = self._artifact_paths(record)
        if paths is None:
            return
        record, new = self.journal.record_start(
            record.job_id, driver.handle_for(record.job_id, paths)
        )
        if record.stage != "started" or record.handle is None:
            return  # finished meanwhile (cancelled, failed): nothing to start
        try:
            handle = driver.start(record.job_id, paths) if new else driver.resume(record.handle)
        except MachineUnreachable as exc:
            log.warning("job %s: %s; will resume", record.job_id, exc.detail)
            return
        except DriverError as exc:
            self._fail(record.job_id, exc.detail)
            return
        if handle != record.handle:
            self.journal.update_handle(record.job_id, handle)
        self._live.add(record.job_id)
        log.info("job %s: started on %s", record.job_id, record.machine)

    def poll(self, job_id: str) -> Status:
        """Ask the machine; a finished job is journaled as such."""
        record = self.journal.get(job_id)
        if record.stage in FINISHED or record.stage == "reported":
            return Status(_final_state(record), None, record.error or "")
        if record.stage != "started" or record.handle is None:
            return Status("running", None, record.stage)
        if job_id not in self._live:
            if not self._resume(record):
                return (
                    self.poll(job_id)
                    if self.journal.get(job_id).finished
                    else Status("running", None, "waiting for the machine")
                )
            record = self.journal.get(job_id)
        try:
            status = self.driver(record.machine).poll(record.handle)
        except MachineUnreachable as exc:
            return Status("running", None, exc.detail)
        except DriverError as exc:
            status = Status("failed", None, exc.detail)
        if status.finished:
            error = status.message if status.state == "failed" else None
            self.journal.finish(job_id, status.state, error=error)
            log.info("job %s: %s %s", job_id, status.state, status.message)
        return status

    def cancel(self, job_id: str) -> JobRecord:
        """Stop the job wherever it is; the machine is asked to stop if it was started."""
        record = self.journal.get(job_id)
        if record.stage == "started" and record.handle is not None:
            self.driver(record.machine).cancel(record.handle)
        self.journal.finish(job_id, "cancelled")
        return self.journal.get(job_id)

    def resume_all(self) -> list[JobRecord]:
        """After a restart: resume the started jobs on their machines; returns every job that
        still needs steps."""
        for record in self.journal.unfinished():
            if record.stage == "started" and record.job_id not in self._live:
                self._resume(record)
        return self.journal.unfinished()

    def _resume(self, record: JobRecord) -> bool:
        """Hand a journaled start to the driver's ``resume``; False if it could not be."""
        assert record.handle is not None
        try:
            handle = self.driver(record.machine).resume(record.handle)
        except MachineUnreachable as exc:
            log.warning("job %s: %s; will resume later", record.job_id, exc.detail)
            return False
        except DriverError as exc:
            self._fail(record.job_id, exc.detail)
            return False
        if handle != record.handle:
            self.journal.update_handle(record.job_id, handle)
        self._live.add(record.job_id)
        log.info("job %s: resumed on %s", record.job_id, record.machine)
        return True

    def _fail(self, job_id: str, reason: str) -> None:
        self.journal.finish(job_id, "failed", error=reason)
        log.warning("job %s failed: %s", job_id, reason)


def _final_state(record: JobRecord) -> State:
    """done, failed or cancelled, also for a job already reported."""
    state = record.stage if record.stage in FINISHED else (record.outcome or {}).get("result")
    return state if state in FINISHED else "done"  # type: ignore[return-value]


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _name_of(record: JobRecord, exc: FileMismatch) -> str:
    for file in record.files:
        if file.url in exc.detail:
            return file.name
    return "a file"
