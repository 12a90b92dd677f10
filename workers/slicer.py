"""FDM slicing with the PrusaSlicer command line, headless, with a profile built from the
machine's config.

Each slice runs in a temporary folder (``profile.ini`` and the G-code are written there) with a
wall-clock limit, and the G-code is renamed into place only when the slice succeeded and the part
fits: a killed agent never leaves a half-written G-code where the next run would take it for a
finished one. PrusaSlicer 2.5 stops on a part wider than the bed ("Objects could not fit on the
bed") but slices one taller than ``max_print_height`` without a word, so the height is checked
here, from the last layer's ``;Z:`` mark in the G-code.

The estimate and the filament come from the comments PrusaSlicer writes near the end of the
G-code (``; estimated printing time (normal mode) = 1h 6m 6s``, ``; filament used [mm] = ...``);
only the tail of the file is read, so a long G-code costs no more than a short one.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dgml.errors import DgmlError
from workers.config import Machine
from workers.tools import headless_env

MESH_SUFFIXES = (".stl", ".3mf", ".obj", ".amf")
TAIL_BYTES = 256 * 1024
# PrusaSlicer's own names for the filament types it knows; others are left to its default.
FILAMENT_TYPES = {"pla": "PLA", "petg": "PETG", "abs": "ABS", "tpu": "FLEX"}
_DURATION = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class SliceError(DgmlError):
    """The part could not be sliced for this machine; the detail says why, in one line."""

    status_code = 422
    code = "slice_failed"


@dataclass(frozen=True)
class GcodeSummary:
    """What PrusaSlicer says about a G-code: machine time and filament."""

    estimated_s: float
    filament_mm: float
    filament_cm3: float
    filament_g: float | None
    height_mm: float | None


@dataclass(frozen=True)
class SliceResult:
    gcode: Path
    summary: GcodeSummary
    slicer_s: float


def _fmt(value: float) -> str:
    return f"{value:g}"


def profile_ini(machine: Machine, material: str) -> str:
    """A PrusaSlicer config for this machine and material; options left out keep their default."""
    if machine.process != "fdm" or machine.nozzle_mm is None:
        raise SliceError(f"machine {machine.name!r} is not an fdm machine")
    if not machine.takes(material):
        raise SliceError(f"machine {machine.name!r} does not take {material!r}")
    width, depth, height = machine.build_volume_mm
    settings = machine.slicer_settings
    temps, density = machine.filament(material)
    lines = {
        "bed_shape": f"0x0,{_fmt(width)}x0,{_fmt(width)}x{_fmt(depth)},0x{_fmt(depth)}",
        "max_print_height": _fmt(height),
        "nozzle_diameter": _fmt(machine.nozzle_mm),
        "filament_diameter": _fmt(settings.filament_diameter_mm),
        "temperature": str(temps.nozzle),
        "first_layer_temperature": str(temps.first_layer_nozzle or temps.nozzle),
        "bed_temperature": str(temps.bed),
        "first_layer_bed_temperature": str(temps.first_layer_bed or temps.bed),
        "layer_height": _fmt(settings.layer_height_mm),
        "first_layer_height": _fmt(settings.first_layer_height_mm),
        "perimeters": str(settings.perimeters),
        "fill_density": f"{settings.fill_density_percent}%",
        "support_material": "1" if settings.supports else "0",
        "gcode_flavor": settings.gcode_flavor,
    }
    if material.casefold() in FILAMENT_TYPES:
        lines["filament_type"] = FILAMENT_TYPES[material.casefold()]
    if density is not None:
        lines["filament_density"] = _fmt(density)
    head = f"# machine {machine.name}, material {material}\n"
    return head + "".join(f"{key} = {value}\n" for key, value in lines.items())


def parse_duration(text: str) -> float:
    """Seconds in PrusaSlicer's ``1d 2h 3m 4s`` (any of the parts may be missing)."""
    parts = _DURATION.findall(text)
    if not parts:
        raise ValueError(f"not a duration: {text!r}")
    return float(sum(int(n) * _UNITS[unit] for n, unit in parts))


def _comment(tail: str, name: str) -> str | None:
    found = re.search(rf"^; {re.escape(name)} = (.+)$", tail, re.MULTILINE)
    return found.group(1).strip() if found else None


def _last_layer_z(path: Path) -> float | None:
    """The height of the last layer: the last ``;Z:`` mark, searched from the end."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return None
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.rfind(b"\n;Z:")
            if at < 0:
                return None
            end = data.find(b"\n", at + 1)
            value = data[at + 4 : end if end > 0 else len(data)]
    try:
        return float(value)
    except ValueError:
        return None


def read_summary(path: Path) -> GcodeSummary:
    """Machine time and filament from a PrusaSlicer G-code's closing comments."""
    with open(path, "rb") as file:
        file.seek(max(0, os.fstat(file.fileno()).st_size - TAIL_BYTES))
        data = file.read()
    # The figures stand together just before the config dump: parse those few lines only.
    at = data.rfind(b"; filament used [mm]")
    tail = data[max(0, at - 2048) : at + 2048] if at >= 0 else data
    tail = tail.decode("utf-8", errors="replace")
    estimate = _comment(tail, "estimated printing time (normal mode)")
    length = _comment(tail, "filament used [mm]")
    volume = _comment(tail, "filament used [cm3]")
    if estimate is None or length is None or volume is None:
        raise SliceError(f"{path.name}: no time or filament estimate in the G-code")
    grams = _comment(tail, "total filament used [g]")
    try:
        mass = float(grams) if grams is not None else None
        return GcodeSummary(
            estimated_s=parse_duration(estimate),
            filament_mm=float(length.split(",")[0]),
            filament_cm3=float(volume.split(",")[0]),
            filament_g=mass if mass else None,
            height_mm=_last_layer_z(path),
        )
    except ValueError as exc:
        raise SliceError(f"{path.name}: unreadable estimate in the G-code: {exc}") from None


def _reason(output: str, mesh: Path, machine: Machine) -> str:
    """One line out of PrusaSlicer's output: the part of it that says what went wrong."""
    if "could not fit on the bed" in output:
        width, depth, _ = machine.build_volume_mm
        return (
            f"{mesh.name} does not fit the bed of {machine.name} ({_fmt(width)} x {_fmt(depth)} mm)"
        )
    if "Loading of a model file failed" in output or "No such file" in output:
        return f"the slicer could not read {mesh.name} as a mesh"
    for pattern in (r"what\(\):\s*(.+)", r"\[error\]\s*(.+)"):
        found = re.findall(pattern, output)
        if found:
            return f"slicing {mesh.name} failed: {found[-1].strip()[:300]}"
    lines = [line for line in output.splitlines() if line.strip() and "=>" not in line]
    return f"slicing {mesh.name} failed: {(lines[-1] if lines else 'no output')[:300]}"


def _run(command: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run the slicer in its own process group, so a timeout kills all of it.

    The limit is a timer that kills the group, not ``communicate(timeout=...)``, which polls
    for the exit with sleeps and would add milliseconds to every slice.
    """
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=headless_env(),
        start_new_session=True,
    )
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        out, _ = proc.communicate()
    finally:
        timer.cancel()
    if expired.is_set():
        raise SliceError(f"the slicer took longer than {_fmt(timeout)} s; stopped it")
    return proc.returncode, out.decode("utf-8", errors="replace")


def slice_mesh(
    mesh: Path,
    machine: Machine,
    material: str,
    output: Path,
    *,
    command: str = "prusa-slicer",
    work_dir: Path | None = None,
    timeout_s: float | None = None,
) -> SliceResult:
    """Slice ``mesh`` into ``output`` (G-code) for this machine and material.

    ``work_dir`` holds the temporary folder; put it on the same file system as ``output`` so
    the final rename is atomic.
    """
    if mesh.suffix.lower() not in MESH_SUFFIXES:
        raise SliceError(f"{mesh.name}: the slicer takes {', '.join(MESH_SUFFIXES)} files")
    if not mesh.is_file():
        raise SliceError(f"{mesh.name}: no such file")
    profile = profile_ini(machine, material)
    timeout = timeout_s or machine.slicer_settings.timeout_s
    with tempfile.TemporaryDirectory(prefix="slice-", dir=work_dir) as tmp:
        folder = Path(tmp)
        (folder / "profile.ini").write_text(profile, encoding="utf-8")
        gcode = folder / "out.gcode"
        args = [command, "--export-gcode", "--load", "profile.ini", "--output", str(gcode)]
        started = time.perf_counter()
        status, out = _run([*args, str(mesh.resolve())], folder, timeout)
        took = time.perf_counter() - started
        if status != 0 or not gcode.is_file():
            raise SliceError(_reason(out, mesh, machine))
        summary = read_summary(gcode)
        _check_height(summary, mesh, machine)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(gcode, output)
    return SliceResult(gcode=output, summary=summary, slicer_s=took)


def _check_height(summary: GcodeSummary, mesh: Path, machine: Machine) -> None:
    height = machine.build_volume_mm[2]
    if summary.height_mm is not None and summary.height_mm > height + 1e-6:
        raise SliceError(
            f"{mesh.name} is {summary.height_mm:g} mm tall; {machine.name} prints at most "
            f"{_fmt(height)} mm"
        )
