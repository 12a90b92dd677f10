"""The job agent's loop: take offers from the hub, run the jobs on the lab's machines, report.

Three kinds of threads share one :class:`Agent`:

- the *claimer* long-polls ``claim``; each offer is declined with a reason when no usable
  machine of the lab can make it (:mod:`workers.agent_offers`), accepted when the policy is
  ``auto`` and there is room (``max_parallel_jobs``, one job per machine), else left open for a
  person (``dgml agent accept``, which journals the job it accepted: the loop starts it
  within a second). Every ``adopt_every_s`` it also reads the hub's list of this fablab's
  jobs, to take up jobs accepted elsewhere or forgotten, and to notice jobs the hub ended;
- one *job thread* per job drives the :class:`~workers.runner.Runner` a step at a time
  (download, prepare, start, then poll the machine) and keeps the driver's status;
- the *reporter* (:mod:`workers.agent_reports`) heartbeats, sends progress and reports the
  outcomes, queued in the journal while the hub is away.

Nothing a machine does waits for the hub, and calls are tried again with exponential backoff
and full jitter. A job whose lease was lost before it reached the machine is handed back
(failed with that reason), never started; one already on the machine goes on and its outcome
is reported at the end.

Stopping (SIGTERM): no more claims and no more starts; jobs on machines go on while the grace
period lasts, and whatever is left is in the journal for the next start, which resumes it
without downloading, slicing or starting anything again.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from typing import Any

from dgml.errors import Conflict, DgmlError, Invalid, NotFound, Unauthorized
from workers.agent_offers import machines_for, offer_machines, spec_for
from workers.agent_reports import STATUS_FILE, Live, LiveJobs, LoopOptions, Reporter
from workers.cache import DownloadFailed
from workers.config import AgentConfig, Machine
from workers.hub import HubClient, HubUnavailable
from workers.journal import FINISHED, JobRecord
from workers.runner import Runner
from workers.tools import ToolReport, find_tools

log = logging.getLogger(__name__)

OVER = FINISHED | {"reported"}
STAGE_MESSAGES = {
    "accepted": "downloading the files",
    "downloaded": "preparing the files for the machine",
    "prepared": "starting on {machine}",
}
LOST_BEFORE_START = "the lease was lost before the job reached the machine; handed back"


class Agent:
    """The loop over one config, one hub and one state dir."""

    def __init__(
        self,
        config: AgentConfig,
        hub: HubClient,
        *,
        fablab_id: str = "",
        tools: ToolReport | None = None,
        runner: Runner | None = None,
        options: LoopOptions | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.options = options or LoopOptions()
        self.tools = tools if tools is not None else find_tools(config)
        self.runner = runner or Runner(config, client=hub.http, tools=self.tools)
        self.journal = self.runner.journal
        self.stopping = threading.Event()  # no new claims, no new starts
        self.halt = hub.interrupt  # the grace period is over: every thread ends
        self.fatal: str | None = None
        self.jobs = LiveJobs()
        self.reporter = Reporter(
            hub,
            self.journal,
            self.jobs,
            self.options,
            on_fatal=self._fatal,
            status_path=config.agent.state_dir / STATUS_FILE,
            status_info={"fablab_id": fablab_id, "accept": config.agent.accept},
        )
        self._machine_locks = {m.name: threading.Lock() for m in config.machines}
        self._held: set[int] = set()
        self._warned: set[str] = set()
        self._rng = random.Random()
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []  # job threads, also of jobs dropped since

    # --- running and stopping -----------------------------------------------------------------

    def run(self) -> int:
        """Run until :meth:`stop` (or a fatal error); the exit status."""
        self.start()
        while not self.stopping.wait(1.0):
            self.pick_up()
        return self.shutdown()

    def pick_up(self) -> None:
        """Start the jobs another process journaled (``dgml agent accept``): they run here
        within a second, without waiting for the hub's list of jobs."""
        names = {m.name for m in self.config.machines}
        known = {live.job_id for live in self.jobs.all()}
        for record in self.journal.unfinished():
            if record.job_id not in known and record.machine in names:
                log.info("taking up job %s, accepted by a person", record.job_id)
                self._go(record)

    def start(self) -> None:
        """Resume the journal's jobs, then start claiming and reporting."""
        for line in self.tools.lines():
            log.info("tools: %s", line)
        names = {m.name for m in self.config.machines}
        for record in self.journal.unfinished():
            if record.machine not in names:
                reason = f"its machine {record.machine!r} is no longer in the agent's config"
                self.journal.finish(record.job_id, "failed", error=reason)
                log.warning("job %s failed: %s", record.job_id, reason)
        for record in self.runner.resume_all():
            self._go(record)
        loops = (("claimer", self._claim_loop), ("reporter", lambda: self.reporter.run(self.halt)))
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info(
            "agent started: hub %s, accept %s, %d machine(s), %d job(s) resumed",
            self.hub.server,
            self.config.agent.accept,
            len(self.config.machines),
            len(self.jobs.all()),
        )

    def stop(self) -> None:
        """Stop claiming and starting; :meth:`run` then winds down."""
        self.stopping.set()
        self.reporter.wake.set()

    def shutdown(self) -> int:
        """Let jobs go on for the grace period, send what finished, leave the rest journaled."""
        self.stop()
        deadline = time.monotonic() + self.options.grace_s
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline and self.journal.unreported() and not self.fatal:
            self.reporter.wake.set()
            time.sleep(0.1)
        self.halt.set()
        self.reporter.wake.set()
        for thread in self._threads:
            if thread.name == "reporter":
                thread.join(self.hub.timeout + 5)
        left = ", ".join(f"job {live.job_id}" for live in self.jobs.all())
        log.info("stopped; journaled for the next start: %s", left or "nothing")
        self.reporter.write_status(stopped=True)
        if not any(worker.is_alive() for worker in self._workers):
            self.runner.close()
        return 1 if self.fatal else 0

    def _fatal(self, message: str) -> None:
        self.fatal = message
        log.error("%s", message)
        self.stop()

    # --- machines -----------------------------------------------------------------------------

    def _free_machine(self, machines: list[Machine]) -> Machine | None:
        """A machine with no job, while the lab has room for one more job."""
        active = self.jobs.active()
        if len(active) >= self.config.agent.max_parallel_jobs:
            return None
        busy = {live.machine for live in active}
        return next((m for m in machines if m.name not in busy), None)

    def _least_busy(self, machines: list[Machine]) -> Machine:
        active = [live.machine for live in self.jobs.active()]
        return min(machines, key=lambda m: active.count(m.name))

    # --- offers -------------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        failures = 0
        next_adopt = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_adopt:
                    self.adopt()
                    next_adopt = time.monotonic() + self.options.adopt_every_s
                offers = self.hub.claim(self.options.claim_wait_s, attempts=1)
                failures = 0
                if offers and not self.handle_offers(offers):
                    self.stopping.wait(self.options.idle_s)  # only held offers: do not spin
            except Exception as exc:  # a bug must not end the loop while machines work
                if self.stopping.is_set():
                    break  # cut short by the stop: nothing to tell
                self._claim_failed(exc, failures)
                failures += 1

    def _claim_failed(self, exc: Exception, failures: int) -> None:
        """Wait before the next claim: with backoff while the hub is away, a little otherwise."""
        if isinstance(exc, Unauthorized):
            self._fatal(
                f"the hub refused this agent's token ({exc.detail}): "
                "enrol it again with --enrol TOKEN"
            )
            return
        if isinstance(exc, HubUnavailable):
            delay = self.options.backoff.delay(failures, self._rng)
            level = logging.WARNING if failures == 0 else logging.INFO
            log.log(level, "%s; claiming again in %.1f s (machines go on)", exc.detail, delay)
            self.stopping.wait(delay)
            return
        if isinstance(exc, DgmlError):
            log.error("claiming failed: %s", exc.detail)
        else:
            log.exception("claiming failed: %s", exc)
        self.stopping.wait(self.options.idle_s)

    def handle_offers(self, offers: list[dict[str, Any]]) -> bool:
        """Decline, accept or hold each offer; whether any was decided."""
        decided = False
        self._held &= {int(offer["id"]) for offer in offers}  # forget offers gone elsewhere
        for offer in offers:
            if self.stopping.is_set():
                break
            offer_id = int(offer["id"])
            machines, reason = offer_machines(self.config, self.tools, offer, self.hub.resolve)
            if reason is not None:
                self.hub.decline(offer_id, reason)
                log.info("offer %s declined: %s", offer_id, reason)
                decided = True
                continue
            manual = self.config.agent.accept == "manual"
            machine = None if manual else self._free_machine(machines)
            if machine is not None:
                self._accept(offer_id, machine)
                decided = True
            elif offer_id not in self._held:
                self._held.add(offer_id)
                why = "a person accepts offers" if manual else "no machine is free"
                log.info(
                    "offer %s held (%s): `dgml agent accept %s` takes it", offer_id, why, offer_id
                )
        return decided

    def _accept(self, offer_id: int, machine: Machine) -> None:
        try:
            job = self.hub.accept(offer_id, f"dgml-agent-{uuid.uuid4().hex}")
        except (Conflict, NotFound) as exc:
            log.info("offer %s was not taken: %s", offer_id, exc.detail)
            return
        log.info("offer %s accepted: job %s on %s", offer_id, job["id"], machine.name)
        live = self._take(job, machine)
        if live is not None and job.get("lease_expires_at"):
            self.reporter.renewed(live, job["lease_expires_at"])

    def _take(self, job: dict[str, Any], machine: Machine) -> Live | None:
        """Journal a job the hub gave this fablab and start its thread; one that cannot be
        made here is failed at once with the reason."""
        try:
            spec = spec_for(job, machine, self.hub.resolve)
            self._check_not_stale(spec.job_id, spec.offer_id)
            record = self.runner.accept(spec)
        except (Invalid, Conflict) as exc:
            reason = f"this agent cannot make job {job['id']}: {exc.detail}"
            log.warning("%s", reason)
            self.hub.fail(int(job["id"]), reason)
            return None
        live = self._go(record)
        live.confirmed = True  # the hub has just given it, or listed it as running
        return live

    def _check_not_stale(self, job_id: str, offer_id: str | None) -> None:
        """A journaled job of the same id for another offer comes from an earlier hub (or an
        earlier database of this one): running the new job over it could resume the wrong
        work, so the agent refuses and stops."""
        try:
            known = self.journal.get(job_id)
        except NotFound:
            return
        if known.offer_id != offer_id:
            self._fatal(
                f"the journal in {self.config.agent.state_dir} already holds a job {job_id} of "
                f"another offer: this state dir served another hub or an earlier database of "
                "this one; give the agent a new --state-dir (and enrol it again)"
            )
            raise Conflict(f"job {job_id} clashes with an older job in this agent's journal")

    def adopt(self) -> None:
        """Take up the hub's jobs for this fablab that no thread works on (a person accepted
        them, or the journal lost them), and notice the jobs the hub has ended."""
        at_hub: set[str] = set()
        for job in self.hub.jobs(attempts=1):
            job_id = str(job["id"])
            at_hub.add(job_id)
            lost = job.get("state") == "disconnected"
            live = self.jobs.get(job_id)
            if live is not None:
                live.disconnected = live.disconnected or lost
                live.confirmed = live.confirmed or not lost
                continue
            try:
                record: JobRecord | None = self.journal.get(job_id)
            except NotFound:
                record = None
            if record is None and lost:
                self._warn_once(
                    job_id,
                    "job %s is disconnected at the hub and not in this agent's journal: not "
                    "starting it (an operator resolves it)",
                )
            elif record is None:
                machines, reason = machines_for(
                    self.config,
                    self.tools,
                    str(job["process"]),
                    str(job["material"]),
                    job.get("extents_mm"),
                )
                if reason is not None:
                    self.hub.fail(int(job["id"]), f"this agent cannot make it: {reason}")
                    continue
                log.info("taking up job %s, accepted at the hub", job_id)
                self._take(job, self._least_busy(machines))
            elif record.stage not in OVER:
                live = self._go(record)
                live.disconnected = live.disconnected or lost
                live.confirmed = live.confirmed or not lost
        for live in self.jobs.all():
            if live.job_id not in at_hub and not (live.finished or live.over_at_hub):
                self._check_over(live)

    def _check_over(self, live: Live) -> None:
        """A job the hub no longer lists as running: if it ended there, stop it here unless
        the machine already has it."""
        try:
            state = self.hub.job(live.hub_id, attempts=1).get("state")
        except NotFound:
            state = "unknown to the hub"
        if state in ("in_progress", "disconnected"):
            return
        live.over_at_hub = True
        if self.journal.get(live.job_id).stage in ("accepted", "downloaded", "prepared"):
            self._drop(live, f"is {state} at the hub")
        else:
            log.warning(
                "job %s is %s at the hub; the machine has it and goes on", live.job_id, state
            )

    def _drop(self, live: Live, why: str) -> None:
        """Forget a job the hub has ended before it reached the machine (safe to repeat)."""
        self.runner.cancel(live.job_id)
        self.journal.mark_reported(live.job_id)
        self.jobs.remove(live.job_id)
        log.warning("job %s %s: not starting it", live.job_id, why)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, key)

    # --- jobs ---------------------------------------------------------------------------------

    def _go(self, record: JobRecord) -> Live:
        """The job's live entry, with a thread working on it."""
        with self.jobs.lock:
            live = self.jobs.add(record.job_id, record.machine)
            if live.thread is not None and live.thread.is_alive():
                return live
            live.finished = False
            live.thread = threading.Thread(
                target=self._work, args=(live,), name=f"job-{record.job_id}", daemon=True
            )
            self._workers = [w for w in self._workers if w.is_alive()] + [live.thread]
        live.thread.start()
        return live

    def _work(self, live: Live) -> None:
        """Take the job a step at a time to its end on the machine (or to a stop)."""
        failures = 0
        while not self.halt.is_set():
            try:
                record = self.journal.get(live.job_id)
            except NotFound:
                break
            if record.stage in OVER:
                break
            if record.stage == "started":
                if self._follow(live):
                    break
                continue
            if live.over_at_hub:
                self._drop(live, "was ended at the hub")
                break
            if live.disconnected:
                self.journal.finish(live.job_id, "failed", error=LOST_BEFORE_START)
                break
            if self.stopping.is_set():
                log.info("job %s stops at %s; the next start carries on", live.job_id, record.stage)
                break
            live.message = STAGE_MESSAGES[record.stage].format(machine=live.machine)
            try:
                if record.stage != "prepared":
                    self.runner.step(live.job_id)
                elif not self._start(live):
                    self.halt.wait(self.options.poll_s)
                failures = 0
            except DownloadFailed as exc:
                delay = self.options.backoff.delay(failures, self._rng)
                failures += 1
                log.warning("job %s: %s; trying again in %.1f s", live.job_id, exc.detail, delay)
                self.halt.wait(delay)
            except Exception as exc:
                log.exception("job %s failed at %s", live.job_id, record.stage)
                self.journal.finish(live.job_id, "failed", error=f"{record.stage}: {exc}")
                break
        with contextlib.suppress(NotFound):
            live.finished = self.journal.get(live.job_id).stage in OVER
        self.reporter.wake.set()

    def _follow(self, live: Live) -> bool:
        """Poll the machine once (then wait a little); whether the job has finished."""
        try:
            status = self.runner.poll(live.job_id)
        except Exception as exc:  # the machine goes on; so does following it
            log.exception("job %s: polling the machine failed: %s", live.job_id, exc)
        else:
            live.percent = status.percent if status.percent is not None else live.percent
            live.message = status.message or f"running on {live.machine}"
            if status.finished:
                return True
        self.halt.wait(self.options.poll_s)
        return False

    def _start(self, live: Live) -> bool:
        """Start a prepared job once the hub has confirmed it still runs (a job resumed after
        a restart may have been ended there meanwhile) and its machine has no other job."""
        if not live.confirmed:
            live.message = "waiting for the hub to confirm the job"
            return False
        with self._machine_locks[live.machine]:
            for other in self.jobs.active():
                if other.machine == live.machine and other.job_id != live.job_id:
                    with contextlib.suppress(NotFound):
                        if self.journal.get(other.job_id).stage == "started":
                            live.message = f"waiting for {live.machine}"
                            return False
            self.runner.step(live.job_id)
        return True
