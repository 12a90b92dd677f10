"""From a job's verified files to what a machine runs, by process.

| process | takes | gives |
|---|---|---|
| fdm | STL, 3MF, OBJ, AMF meshes | one G-code per mesh, sliced for the machine and material |
| laser | DXF | the DXF files, one per part |
| cnc | STEP | the STEP files |
| sla, sls | STL, 3MF, OBJ, AMF meshes | the meshes |

Files of other types in the job are left out (a design often ships a STEP beside its STL); a
job with none of the type its process needs fails with a sentence naming what it had.

The artifacts are built in a ``.partial`` folder beside the final one and renamed into place
at the end, so a folder under its final name is always complete. Inputs come from the cache
(named by hash, read-only) and are linked, not copied, under the job's own file names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dgml.errors import DgmlError
from workers.config import Machine
from workers.slicer import MESH_SUFFIXES, SliceError, slice_mesh

TAKES: dict[str, tuple[str, ...]] = {
    "fdm": MESH_SUFFIXES,
    "laser": (".dxf",),
    "cnc": (".step", ".stp"),
    "sla": MESH_SUFFIXES,
    "sls": MESH_SUFFIXES,
}
WHAT = {
    "fdm": "meshes",
    "laser": "DXF files",
    "cnc": "STEP files",
    "sla": "meshes",
    "sls": "meshes",
}


class PrepareFailed(DgmlError):
    """The job's files cannot be made ready for the machine; the job fails with this reason."""

    status_code = 422
    code = "prepare_failed"


@dataclass(frozen=True)
class InputFile:
    """A verified file of the job: its name on the hub and where the cache keeps it."""

    name: str
    path: Path


@dataclass(frozen=True)
class Artifact:
    """One file for the machine, with the slicer's estimate when there is one."""

    name: str
    kind: str
    source: str
    estimated_s: float | None = None
    filament_mm: float | None = None
    filament_cm3: float | None = None
    filament_g: float | None = None
    slicer_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(**data)


def safe_name(name: str) -> str:
    """A plain file name from a hub file name: last path part, tame characters only."""
    base = re.split(r"[\\/]", name)[-1].strip()
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).lstrip(".- ")
    return base[:120] or "file"


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        stem, suffix = os.path.splitext(name)
        candidate, n = name, 1
        while candidate.casefold() in seen:
            n += 1
            candidate = f"{stem}-{n}{suffix}"
        seen.add(candidate.casefold())
        out.append(candidate)
    return out


def select_inputs(process: str, files: list[InputFile]) -> list[InputFile]:
    """The files this process uses; none of them is a clear failure."""
    takes = TAKES.get(process)
    if takes is None:
        raise PrepareFailed(f"unknown process {process!r}")
    chosen = [f for f in files if Path(f.name).suffix.lower() in takes]
    if not chosen:
        had = ", ".join(f.name for f in files) or "no files"
        raise PrepareFailed(
            f"a {process} job needs {WHAT[process]} ({', '.join(takes)}); this job has: {had}"
        )
    return chosen


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def prepare(
    process: str,
    machine: Machine,
    material: str,
    files: list[InputFile],
    out_dir: Path,
    *,
    slicer_command: str = "prusa-slicer",
) -> list[Artifact]:
    """Build the artifacts of a job into ``out_dir`` (replacing what a killed run left there)."""
    if machine.process != process:
        raise PrepareFailed(f"machine {machine.name!r} does {machine.process}, not {process}")
    if not machine.takes(material):
        raise PrepareFailed(f"machine {machine.name!r} does not take {material!r}")
    chosen = select_inputs(process, files)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "inputs").mkdir(parents=True)
    try:
        names = _unique([safe_name(f.name) for f in chosen])
        linked = []
        for file, name in zip(chosen, names, strict=True):
            _link(file.path, partial / "inputs" / name)
            linked.append((file.name, partial / "inputs" / name))
        if process == "fdm":
            artifacts = _slice_all(linked, machine, material, partial, slicer_command)
        else:
            artifacts = _pass_through(linked, partial, process)
        shutil.rmtree(partial / "inputs")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return artifacts


def _slice_all(
    linked: list[tuple[str, Path]], machine: Machine, material: str, folder: Path, command: str
) -> list[Artifact]:
    artifacts = []
    names = _unique([path.stem + ".gcode" for _, path in linked])
    for (source, mesh), name in zip(linked, names, strict=True):
        try:
            result = slice_mesh(
                mesh, machine, material, folder / name, command=command, work_dir=folder
            )
        except SliceError as exc:
            raise PrepareFailed(exc.detail) from None
        summary = result.summary
        artifacts.append(
            Artifact(
                name=name,
                kind="gcode",
                source=source,
                estimated_s=summary.estimated_s,
                filament_mm=summary.filament_mm,
                filament_cm3=summary.filament_cm3,
                filament_g=summary.filament_g,
                slicer_s=round(result.slicer_s, 4),
            )
        )
    return artifacts


def _pass_through(linked: list[tuple[str, Path]], folder: Path, process: str) -> list[Artifact]:
    kind = {"laser": "dxf", "cnc": "step"}.get(process, "mesh")
    artifacts = []
    for source, path in linked:
        target = folder / path.name
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        os.replace(path, target)
        artifacts.append(Artifact(name=path.name, kind=kind, source=source))
    return artifacts


def totals(artifacts: list[Artifact]) -> dict[str, float]:
    """The job's estimate: machine time and filament summed over its artifacts."""
    out: dict[str, float] = {}
    for field in ("estimated_s", "filament_mm", "filament_cm3", "filament_g"):
        values = [getattr(a, field) for a in artifacts if getattr(a, field) is not None]
        if values:
            out[field] = round(sum(values), 3)
    return out
