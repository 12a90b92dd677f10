"""The one small interface every machine driver has.

A driver turns a prepared job's artifacts into work on a machine and reports how it goes:

- ``handle_for(job_id, artifacts)`` says, before anything happens, how this job will be found
  on the machine (a remote file name, a folder); the journal stores it as the job's start;
- ``start(job_id, artifacts)`` hands the job to the machine and returns the handle;
- ``poll(handle)`` answers a :class:`Status`: running (with percent), done, failed or
  cancelled, with the machine's message;
- ``cancel(handle)`` asks the machine to stop the job;
- ``resume(handle)`` takes a job up again after a restart. The journal wrote the handle before
  ``start`` was called, so the agent may have died before or after the machine got the job:
  ``resume`` looks at the machine, follows the job when it is there, and starts it only when
  the machine shows no trace of it. That is how a job is never started twice.

Handles are plain JSON-able dicts, kept in the journal.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dgml.errors import DgmlError

State = Literal["running", "done", "failed", "cancelled"]
Handle = dict[str, Any]


class DriverError(DgmlError):
    """The machine refused or failed the job; the job fails with this reason."""

    status_code = 502
    code = "machine_error"


class MachineUnreachable(DriverError):
    """The machine did not answer; the job may still be running, so ask again later."""

    code = "machine_unreachable"


@dataclass(frozen=True)
class Status:
    state: State
    percent: float | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "percent": self.percent, "message": self.message}


class Driver(abc.ABC):
    """A machine behind one interface; see the module docstring for the contract."""

    name: str = "driver"

    @abc.abstractmethod
    def handle_for(self, job_id: str, artifacts: list[Path]) -> Handle:
        """The handle of this job, known before it is started; no side effects."""

    @abc.abstractmethod
    def start(self, job_id: str, artifacts: list[Path]) -> Handle:
        """Give the job to the machine."""

    @abc.abstractmethod
    def poll(self, handle: Handle) -> Status:
        """Where the job is now."""

    @abc.abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Ask the machine to stop the job; poll then answers cancelled."""

    @abc.abstractmethod
    def resume(self, handle: Handle) -> Handle:
        """Follow a job whose start was journaled; start it only if the machine never got it."""

    def close(self) -> None:  # noqa: B027 - a hook most drivers do not need
        """Release connections; the default driver holds none."""


def artifact_paths(handle: Handle) -> list[Path]:
    return [Path(p) for p in handle.get("artifacts", [])]
