"""A printer behind OctoPrint, through its REST API (``X-Api-Key``).

Each G-code of a job is uploaded as ``dgml-<job>-<n>.gcode`` and printed in turn: the first by
``start`` (upload with ``select`` and ``print``), the next ones by ``poll`` once the one before
has printed. OctoPrint prints one file at a time, so a job of several parts is a sequence of
prints, each needing an empty bed (the agent cannot clear it).

Progress is not kept in the handle but read back from OctoPrint, which keeps a print history
for every file (``prints.last.success``): a part whose last print succeeded is done, one whose
last print failed was cancelled or failed at the printer (reported as failed with OctoPrint's
words), the part that is the current job is running. Reading it back is what makes ``resume``
safe: a part that OctoPrint does not have yet, with no print history, was never started.

A 4xx from OctoPrint (a file type it refuses, a printer that is not ready, a wrong API key) is
a :class:`DriverError` with OctoPrint's own message; no answer at all is
:class:`MachineUnreachable`, which leaves the job running until OctoPrint is back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from workers.config import OctoPrintOptions
from workers.drivers.base import (
    Driver,
    DriverError,
    Handle,
    MachineUnreachable,
    Status,
    artifact_paths,
)

# Printer states in which the current job is still going.
ACTIVE = frozenset(
    {"Starting", "Printing", "Pausing", "Paused", "Resuming", "Finishing", "Cancelling"}
)


def _is_error(state: str) -> bool:
    return state.startswith("Error") or "error" in state.casefold()


class OctoPrintDriver(Driver):
    name = "octoprint"

    def __init__(self, options: OctoPrintOptions, api_key: str) -> None:
        self.options = options
        self.client = httpx.Client(
            base_url=options.url, headers={"X-Api-Key": api_key}, timeout=options.timeout_s
        )

    def close(self) -> None:
        self.client.close()

    # --- HTTP -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise MachineUnreachable(
                f"OctoPrint at {self.options.url} did not answer: {exc.__class__.__name__}"
            ) from None
        if response.status_code in (401, 403):
            raise DriverError(f"OctoPrint refused the API key ({response.status_code})")
        return response

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            body = response.json()
            text = body.get("error") or body.get("message") or str(body)
        except ValueError:
            text = response.text.strip().splitlines()[0] if response.text.strip() else ""
        return f"{text[:300]} ({response.status_code})"

    def _job(self) -> dict[str, Any]:
        response = self._call("GET", "/api/job")
        if response.status_code != 200:
            raise DriverError(f"OctoPrint: GET /api/job: {self._message(response)}")
        return response.json()

    def _file(self, name: str) -> dict[str, Any] | None:
        response = self._call("GET", f"/api/files/local/{name}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DriverError(f"OctoPrint: GET file {name}: {self._message(response)}")
        return response.json()

    # --- the interface --------------------------------------------------------------------

    def handle_for(self, job_id: str, artifacts: list[Path]) -> Handle:
        files = [f"dgml-{job_id}-{n}{p.suffix.lower()}" for n, p in enumerate(artifacts, 1)]
        return {
            "driver": self.name,
            "job_id": job_id,
            "artifacts": [str(p) for p in artifacts],
            "files": files,
        }

    def start(self, job_id: str, artifacts: list[Path]) -> Handle:
        if not artifacts:
            raise DriverError("octoprint: the job has nothing to print")
        handle = self.handle_for(job_id, artifacts)
        self._print(handle, 0, uploaded=False, waiting_ok=False)
        return handle

    def poll(self, handle: Handle) -> Status:
        return self._status(handle, may_start_first=False)

    def resume(self, handle: Handle) -> Handle:
        self._status(handle, may_start_first=True)
        return handle

    def cancel(self, handle: Handle) -> None:
        job = self._job()
        current = ((job.get("job") or {}).get("file") or {}).get("name")
        if current in handle["files"] and job.get("state") in ACTIVE:
            response = self._call("POST", "/api/job", json={"command": "cancel"})
            if response.status_code not in (200, 204, 409):
                raise DriverError(f"OctoPrint did not cancel: {self._message(response)}")

    # --- the work -------------------------------------------------------------------------

    def _ready(self) -> tuple[bool, str]:
        job = self._job()
        state = job.get("state", "Unknown")
        if state != "Operational":
            current = ((job.get("job") or {}).get("file") or {}).get("name")
            busy = f" ({current})" if current and state in ACTIVE else ""
            return False, f"the printer is not ready: {state}{busy}"
        return True, ""

    def _print(self, handle: Handle, index: int, *, uploaded: bool, waiting_ok: bool) -> str:
        """Print part ``index``; '' when it started, else why it has to wait."""
        ready, why = self._ready()
        if not ready:
            if waiting_ok:
                return why
            raise DriverError(f"OctoPrint: {why}")
        name = handle["files"][index]
        if uploaded:
            response = self._call(
                "POST", f"/api/files/local/{name}", json={"command": "select", "print": True}
            )
            if response.status_code not in (200, 204):
                raise DriverError(f"OctoPrint did not print {name}: {self._message(response)}")
            return ""
        self._upload(handle, index)
        return ""

    def _upload(self, handle: Handle, index: int) -> None:
        path = artifact_paths(handle)[index]
        name = handle["files"][index]
        try:
            content = path.open("rb")
        except OSError as exc:
            raise DriverError(f"octoprint: cannot read {path.name}: {exc.strerror}") from None
        with content:
            response = self._call(
                "POST",
                "/api/files/local",
                files={"file": (name, content, "application/octet-stream")},
                data={"select": "true", "print": "true"},
            )
        if response.status_code not in (200, 201):
            raise DriverError(f"OctoPrint rejected {path.name}: {self._message(response)}")
        if not response.json().get("effectivePrint", False):
            self._call("DELETE", f"/api/files/local/{name}")
            raise DriverError(f"OctoPrint took {path.name} but did not start printing it")

    def _status(self, handle: Handle, *, may_start_first: bool) -> Status:
        job = self._job()
        state = job.get("state", "Unknown")
        current = ((job.get("job") or {}).get("file") or {}).get("name")
        completion = (job.get("progress") or {}).get("completion") or 0.0
        files: list[str] = handle["files"]
        count = len(files)

        def percent(index: int, part: float) -> float:
            return round(100.0 * (index + min(part, 100.0) / 100.0) / count, 2)

        if current in files and _is_error(state):
            reason = job.get("error") or state
            return Status(
                "failed", percent(files.index(current), completion), f"OctoPrint: {reason}"
            )
        for index, name in enumerate(files):
            part = f"part {index + 1} of {count}" if count > 1 else name
            if name == current and state in ACTIVE:
                return Status("running", percent(index, completion), f"{part}: {state.lower()}")
            info = self._file(name)
            last = ((info or {}).get("prints") or {}).get("last")
            if last is not None and last.get("success"):
                continue
            if last is not None:
                why = "was cancelled or failed at the printer"
                if _is_error(state) and job.get("error"):
                    why = f"failed, the printer is in error: {job['error']}"
                done = percent(index, completion if name == current else 0.0)
                return Status("failed", done, f"{part} {why}")
            if name == current and info is not None and completion >= 100.0:
                return Status("running", percent(index, 100.0), f"{part}: finishing")
            if index == 0 and not may_start_first:
                where = "has it but is not printing it" if info else "no longer has it"
                return Status("failed", 0.0, f"{name}: OctoPrint {where}")
            wait = self._print(handle, index, uploaded=info is not None, waiting_ok=index > 0)
            if wait:
                return Status("running", percent(index, 0.0), f"{part}: waiting, {wait}")
            return Status("running", percent(index, 0.0), f"{part}: starting")
        return Status("done", 100.0, "printed")
