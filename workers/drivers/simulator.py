"""A machine that only pretends, on an accelerated clock: for trying the agent out and for tests.

The simulated machine keeps its own state, as a real one would, in a JSON file per job under
its folder (in the agent's state dir), so it outlives the agent: a killed and restarted agent
finds its job still running there. Every start is also appended to ``starts.log``, and a
second start of the same job is refused loudly, which lets tests prove a job is never started
twice.

Machine time is the config's ``duration_s`` if given, else the slicer's estimate in each
G-code, else 10 minutes per artifact; ``speed`` machine seconds pass per real (wall-clock)
second. With ``fail_at_percent`` every job fails when it reaches that percentage.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.config import SimulatorOptions
from workers.drivers.base import Driver, DriverError, Handle, Status, artifact_paths
from workers.slicer import SliceError, read_summary

DEFAULT_ARTIFACT_S = 600.0


class SimulatorDriver(Driver):
    name = "simulator"

    def __init__(
        self,
        options: SimulatorOptions,
        folder: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.folder = Path(folder)
        self.clock = clock

    def _state_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def handle_for(self, job_id: str, artifacts: list[Path]) -> Handle:
        return {
            "driver": self.name,
            "job_id": job_id,
            "artifacts": [str(p) for p in artifacts],
        }

    def machine_seconds(self, artifacts: list[Path]) -> float:
        if self.options.duration_s is not None:
            return self.options.duration_s
        total = 0.0
        for path in artifacts:
            if path.suffix.lower() == ".gcode":
                with contextlib.suppress(OSError, SliceError):
                    total += read_summary(path).estimated_s
                    continue
            total += DEFAULT_ARTIFACT_S
        return total

    def start(self, job_id: str, artifacts: list[Path]) -> Handle:
        for path in artifacts:
            if not path.is_file():
                raise DriverError(f"simulator: artifact {path.name} is missing")
        state = {
            "job_id": job_id,
            "started_at": self.clock(),
            "duration_s": self.machine_seconds(artifacts),
            "speed": self.options.speed,
            "fail_at_percent": self.options.fail_at_percent,
            "cancelled_at": None,
        }
        self._create(job_id, state)
        with open(self.folder / "starts.log", "a", encoding="utf-8") as log:
            log.write(f"{job_id}\n")
        return self.handle_for(job_id, artifacts)

    def _create(self, job_id: str, state: dict[str, Any]) -> None:
        """Write the job's state file only if there is none: link fails on an existing one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.folder / f".{job_id}.{os.getpid()}.tmp"
        temp.write_text(json.dumps(state), encoding="utf-8")
        try:
            os.link(temp, self._state_path(job_id))
        except FileExistsError:
            raise DriverError(f"simulator: job {job_id} was already started") from None
        finally:
            temp.unlink()

    def _read(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._state_path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def poll(self, handle: Handle) -> Status:
        state = self._read(handle["job_id"])
        if state is None:
            return Status("failed", None, "the simulator has no record of this job")
        now = state["cancelled_at"] if state["cancelled_at"] is not None else self.clock()
        duration = state["duration_s"]
        elapsed = max(0.0, now - state["started_at"]) * state["speed"]
        percent = 100.0 if duration <= 0 else min(100.0, 100.0 * elapsed / duration)
        fail_at = state["fail_at_percent"]
        if fail_at is not None and percent >= fail_at:
            return Status("failed", fail_at, f"simulated failure at {fail_at:g} %")
        if state["cancelled_at"] is not None:
            return Status("cancelled", round(percent, 2), "cancelled")
        if percent >= 100.0:
            return Status("done", 100.0, "finished")
        return Status("running", round(percent, 2), "")

    def cancel(self, handle: Handle) -> None:
        state = self._read(handle["job_id"])
        if state is None or state["cancelled_at"] is not None:
            return
        state["cancelled_at"] = self.clock()
        temp = self.folder / f".{handle['job_id']}.cancel.tmp"
        temp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temp, self._state_path(handle["job_id"]))

    def resume(self, handle: Handle) -> Handle:
        if self._read(handle["job_id"]) is not None:
            return handle
        return self.start(handle["job_id"], artifact_paths(handle))

    def starts(self) -> list[str]:
        """Every start this simulated machine saw, oldest first."""
        with contextlib.suppress(FileNotFoundError):
            return (self.folder / "starts.log").read_text(encoding="utf-8").split()
        return []
