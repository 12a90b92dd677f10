"""A machine a person runs by hand: the job's files land in a folder, the person says when the
job is done or failed.

``start`` copies the artifacts into ``<path>/<job_id>/`` with a ``README.txt`` that says what
the job is and how to confirm it (the folder is built under a temporary name and renamed, so a
person never sees half of it). The person then runs ``dgml agent done JOB`` or ``dgml agent
failed JOB --reason ...``, which write a marker file in that folder (:func:`mark_done`,
:func:`mark_failed`); ``poll`` reads the markers. ``cancel`` writes a ``CANCELLED`` marker, so
the person sees the job was withdrawn. Copies, not links: a person may move or edit the files,
and the agent's cache must stay as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from dgml.errors import Conflict, Invalid, NotFound
from workers.config import AgentConfig, HotfolderOptions
from workers.drivers.base import Driver, DriverError, Handle, Status, artifact_paths
from workers.journal import valid_job_id

MARKERS = {"DONE": "done", "FAILED": "failed", "CANCELLED": "cancelled"}
README = """\
dgml job {job_id}

Files to run on {machine}:
{files}

When the job is finished, confirm it on the agent's machine:

    dgml agent done {job_id}

If it cannot be made, say why:

    dgml agent failed {job_id} --reason "what went wrong"
"""


def _write_marker(folder: Path, marker: str, text: str) -> bool:
    """Create ``folder/marker`` with ``text`` unless some marker is there; True if written.

    A marker that is already there with the same meaning is fine (the command was run
    twice); a different one is a conflict: a job cannot be both done and failed.
    """
    if not folder.is_dir():
        raise NotFound(f"no job folder {folder}")
    for existing, state in MARKERS.items():
        if (folder / existing).exists():
            if existing == marker:
                return False
            raise Conflict(f"job {folder.name} is already marked {state}")
    temp = folder / f".{marker}.{os.getpid()}.tmp"
    temp.write_text(text, encoding="utf-8")
    try:
        os.link(temp, folder / marker)
    except FileExistsError:
        return False
    finally:
        temp.unlink()
    return True


def _check_job_id(job_id: str) -> None:
    if not valid_job_id(job_id):
        raise Invalid(f"not a job id: {job_id!r}", field="job_id")


def mark_done(root: Path, job_id: str) -> bool:
    """A person confirms the job in ``root/<job_id>/`` was made."""
    _check_job_id(job_id)
    return _write_marker(Path(root) / job_id, "DONE", "done\n")


def mark_failed(root: Path, job_id: str, reason: str) -> bool:
    """A person says the job in ``root/<job_id>/`` could not be made, and why."""
    _check_job_id(job_id)
    reason = " ".join(reason.split())
    if not reason:
        raise Invalid("give a reason: what went wrong", field="reason")
    return _write_marker(Path(root) / job_id, "FAILED", reason[:2000] + "\n")


def find_job_folder(config: AgentConfig, job_id: str) -> Path:
    """The hotfolder that holds this job, among the config's hotfolder machines."""
    _check_job_id(job_id)
    for machine in config.machines:
        if machine.hotfolder is not None and (machine.hotfolder.path / job_id).is_dir():
            return machine.hotfolder.path
    raise NotFound(f"no hotfolder holds job {job_id!r}")


class HotfolderDriver(Driver):
    name = "hotfolder"

    def __init__(self, options: HotfolderOptions, machine_name: str = "the machine") -> None:
        self.root = Path(options.path)
        self.machine_name = machine_name

    def handle_for(self, job_id: str, artifacts: list[Path]) -> Handle:
        return {
            "driver": self.name,
            "job_id": job_id,
            "artifacts": [str(p) for p in artifacts],
            "folder": str(self.root / job_id),
        }

    def start(self, job_id: str, artifacts: list[Path]) -> Handle:
        _check_job_id(job_id)
        handle = self.handle_for(job_id, artifacts)
        final = Path(handle["folder"])
        if final.exists():
            raise DriverError(f"hotfolder: {final} already exists; the job was handed over")
        partial = self.root / f".{job_id}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            for path in artifacts:
                shutil.copyfile(path, partial / path.name)
            listing = "\n".join(f"  {p.name}" for p in artifacts)
            text = README.format(job_id=job_id, machine=self.machine_name, files=listing)
            (partial / "README.txt").write_text(text, encoding="utf-8")
            os.rename(partial, final)
        except OSError as exc:
            raise DriverError(f"hotfolder: cannot write the job into {self.root}: {exc}") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return handle

    def poll(self, handle: Handle) -> Status:
        folder = Path(handle["folder"])
        if not folder.is_dir():
            return Status("failed", None, f"the job folder {folder} is gone")
        for marker, state in MARKERS.items():
            with contextlib.suppress(FileNotFoundError):
                text = (folder / marker).read_text(encoding="utf-8").strip()
                if state == "failed":
                    return Status("failed", None, text or "failed by hand")
                return Status(state, 100.0 if state == "done" else None, f"marked {state}")  # type: ignore[arg-type]
        return Status("running", None, f"waiting for a person: files in {folder}")

    def cancel(self, handle: Handle) -> None:
        with contextlib.suppress(Conflict, NotFound):
            _write_marker(Path(handle["folder"]), "CANCELLED", "withdrawn by the agent\n")

    def resume(self, handle: Handle) -> Handle:
        if Path(handle["folder"]).is_dir():
            return handle
        return self.start(handle["job_id"], artifact_paths(handle))
