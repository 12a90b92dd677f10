"""Building a parametric design: values checked, the script run in the sandbox, files kept.

``build_design`` is the one entry point. It reads the parameters (``params.py``), checks the
values before anything runs (``ParameterError``, a 422 on the API and exit status 2 on the
command line), runs the script in the sandbox (``sandbox.py``, ``child.py``) and copies the
parts' files into ``out_dir``. It trusts nothing the child says but its exit status: the
child's ``result.json`` is validated, part names must be file-safe, and only the STL, STEP
and DXF files named after those parts are copied, as regular files, never through a link, each
at most ``Limits.output_bytes``. Every other way a build can go wrong is a ``BuildResult``
with ``ok`` false, a one-line ``error`` and, when a cap was hit, ``limit``: ``time``,
``memory``, ``output`` or ``processes``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from dgml.errors import Invalid
from registry.parametric.export import MAX_PARTS, NAME_RE
from registry.parametric.params import ScriptError, parameter_hash, read_parameters, resolve
from registry.parametric.sandbox import Layers, Limits, Mode, Outcome, Sandbox

PROCESSES = ("fdm", "sla", "sls", "cnc", "laser")
DEFAULT_SOURCE = "design.py"
MAX_MANIFEST_BYTES = 1024 * 1024
LimitName = Literal["time", "memory", "output", "processes"]


class BuiltFile(BaseModel):
    path: str
    sha256: str
    size: int


class BuiltPart(BaseModel):
    name: str
    files: list[BuiltFile]


class BuildResult(BaseModel):
    """What one build gave. ``parameters`` is the complete resolved set, ``parameter_hash``
    its cache key; file paths are relative to the output dir; ``sandbox`` names the layers
    that were in force and ``mode`` whether the build ran in the pre-warmed zygote or in a
    fresh child; ``notes`` says what was left out (a DXF for a part that is not flat)."""

    ok: bool
    parameters: dict[str, Any]
    parameter_hash: str
    parts: list[BuiltPart] = []
    log: str = ""
    error: str | None = None
    limit: LimitName | None = None
    seconds: float = 0.0
    notes: list[str] = []
    sandbox: list[str] = []
    mode: Mode | None = None


class _ChildPart(BaseModel):
    name: str
    files: list[str]


class _ChildResult(BaseModel):
    ok: bool = False
    parts: list[_ChildPart] = []
    error: str | None = None
    limit: LimitName | None = None
    layers: list[str] = []
    notes: list[str] = []


def load_folder(path: Path | str) -> tuple[str, dict | None]:
    """``(script_source, manifest)`` of a design folder (``manifest.json`` and the script it
    names in ``source``, else ``design.py``) or of a lone script (no manifest)."""
    path = Path(path)
    if path.is_file():
        return _read_text(path, "script"), None
    if not path.is_dir():
        raise Invalid(f"no such file or folder: {path}", field="path")
    manifest = None
    manifest_path = path / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(_read_text(manifest_path, "manifest", MAX_MANIFEST_BYTES))
        except ValueError as exc:
            raise Invalid(f"manifest.json is not valid JSON: {exc}", field="manifest") from None
        if not isinstance(manifest, dict):
            raise Invalid("manifest.json must hold a JSON object", field="manifest")
    source = (manifest or {}).get("source") or DEFAULT_SOURCE
    if not isinstance(source, str) or not source.endswith(".py"):
        raise Invalid("the manifest's source must name a .py file", field="manifest.source")
    script = (path / source).resolve()
    if not script.is_relative_to(path.resolve()):
        raise Invalid(f"source {source!r} is outside the design folder", field="manifest.source")
    if not script.is_file():
        raise Invalid(f"the design has no script {source}", field="manifest.source")
    return _read_text(script, "script"), manifest


def _read_text(path: Path, what: str, cap: int = 1024 * 1024) -> str:
    with open(path, "rb") as file:
        data = file.read(cap + 1)
    if len(data) > cap:
        raise Invalid(f"the {what} {path.name} is larger than {cap // 1024} KiB", field=what)
    return data.decode("utf-8", "replace")


def _process(manifest: dict | None) -> str | None:
    process = (manifest or {}).get("process")
    if process is not None and process not in PROCESSES:
        raise Invalid(
            f"process must be one of {', '.join(PROCESSES)}, not {process!r}",
            field="manifest.process",
        )
    return process


def _script_name(manifest: dict | None, given: str | None) -> str:
    source = given or (manifest or {}).get("source") or DEFAULT_SOURCE
    name = Path(str(source)).name
    return name if NAME_RE.match(name) and name.endswith(".py") else DEFAULT_SOURCE


def cap_text(limit: LimitName, limits: Limits) -> str:
    """The cap called ``limit``, in words."""
    return {
        "time": f"the time cap of {limits.seconds:g} s",
        "memory": f"the memory cap of {limits.memory_bytes / 2**20:g} MiB",
        "output": f"the output cap of {limits.output_bytes / 2**20:g} MiB per file",
        "processes": f"the cap of {limits.processes} processes",
    }[limit]


def _stopped(outcome: Outcome, limits: Limits) -> tuple[str, LimitName | None]:
    """Why a child gave no result of its own, in one line, and the cap it hit."""
    if outcome.timed_out:
        return f"stopped by {cap_text('time', limits)}", "time"
    if outcome.signal == signal.SIGXCPU:
        return "stopped: the build used up its CPU time", "time"
    if outcome.signal in (signal.SIGKILL, signal.SIGABRT) or outcome.status == 3:
        return f"stopped: the build needed more than {cap_text('memory', limits)}", "memory"
    if outcome.signal == signal.SIGXFSZ:
        return f"stopped: the build went over {cap_text('output', limits)}", "output"
    lines = outcome.log.strip().splitlines()
    how = f"signal {outcome.signal}" if outcome.signal else f"status {outcome.status}"
    return f"the build process died ({how}): {lines[-1][:300] if lines else 'no output'}", None


def _collect(box: Sandbox, child: _ChildResult, out_dir: Path, limits: Limits) -> list[BuiltPart]:
    parts: list[BuiltPart] = []
    for part in child.parts[:MAX_PARTS]:
        if not NAME_RE.match(part.name) or any(p.name == part.name for p in parts):
            raise ValueError(f"the build named a part {part.name[:80]!r}")
        files = []
        for suffix in ("stl", "step", "dxf"):
            name = f"{part.name}.{suffix}"
            if name not in part.files:
                continue
            copied = box.copy_output(f"out/{name}", out_dir / name, limits.output_bytes)
            if copied is None:
                raise ValueError(f"the build's file {name} is missing or not a plain file")
            files.append(BuiltFile(path=name, sha256=copied[0], size=copied[1]))
        if not files:
            raise ValueError(f"the build wrote no files for part {part.name!r}")
        parts.append(BuiltPart(name=part.name, files=files))
    return parts


def build_design(
    script_source: str,
    manifest: dict | None,
    values: dict,
    out_dir: Path,
    limits: Limits = Limits(),
    *,
    layers: Layers = Layers(),
    script_name: str | None = None,
    mode: Mode = "warm",
) -> BuildResult:
    """Build the design with ``values`` in the sandbox and write its parts' files to
    ``out_dir``. Raises ``ParameterError`` for bad values or declarations (before anything
    runs); a script that fails, breaks the rules or hits a cap gives ``ok=False``.
    ``script_name`` is the name errors give the script (default: the manifest's ``source``,
    else ``design.py``). ``mode``: ``warm`` (the pre-warmed zygote, a fresh child when it
    cannot be had) or ``cold`` (always a fresh child)."""
    started = time.monotonic()
    process = _process(manifest)
    filename = _script_name(manifest, script_name)
    try:
        parameters = read_parameters(script_source, manifest, filename)
    except ScriptError as exc:
        return BuildResult(
            ok=False, parameters={}, parameter_hash=parameter_hash({}), error=exc.detail
        )
    resolved = resolve(parameters, values)
    result = BuildResult(ok=False, parameters=resolved, parameter_hash=parameter_hash(resolved))
    with Sandbox(limits, layers, mode) as box:
        box.put_script(filename, script_source)
        job = {"source": script_source, "filename": filename, "values": resolved}
        outcome = box.run({**job, "process": process})
        result.log, result.sandbox, result.mode = outcome.log, list(outcome.layers), outcome.mode
        raw = None if outcome.timed_out else box.read_result()
        try:
            child = _ChildResult.model_validate(raw) if raw is not None else None
        except ValidationError:
            child = None
        if child is None:
            result.error, result.limit = _stopped(outcome, limits)
        else:
            result.sandbox += child.layers
            result.notes = [n[:300] for n in child.notes[:MAX_PARTS]]
            result.error = (((child.error or "").strip().splitlines() or [""])[0])[:500] or None
            result.limit = child.limit
            if child.limit and result.error:
                result.error = f"{result.error} (over {cap_text(child.limit, limits)})"
            if child.ok and result.error is None:
                try:
                    result.parts = _collect(box, child, Path(out_dir), limits)
                    result.ok = True
                except ValueError as exc:
                    result.error = str(exc)
            elif result.error is None:
                result.error = "the build failed without saying why"
    result.seconds = round(time.monotonic() - started, 3)
    return result
