"""Geometry work in a child process with caps on time and memory.

Model files come from anyone, and the readers underneath (OpenCascade for STEP, zip and XML for
3MF) are large native libraries: a hostile or merely huge file must not take the worker down
with it or hold it forever. So every check and every diff runs in a fresh Python process with
an address-space limit and a CPU limit set before it starts, and the parent kills it when the
wall clock runs out. Whatever happens the parent gets an answer: the child's own, or one that
says which cap was hit (``LIMIT_EXCEEDED``) or how the child died (``CHECKER_CRASHED``).

The child is ``python -m registry.geometry.runner check MODEL NAME OUT_DIR`` (writes
``report.json`` and, where the model could be read, ``preview.png`` and ``preview.glb``) or
``... diff OLD OLD_NAME NEW NEW_NAME OUT_DIR`` (writes ``diff.json``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from registry.geometry.checks import CHECKER_VERSION
from registry.geometry.report import Code, GeometryReport, Severity, Verdict

# Exit status of a child that ran out of memory inside Python (numpy's MemoryError).
EXIT_MEMORY = 3
# Exit status of a diff whose models could not be read.
EXIT_UNREADABLE = 4
# Threads that numerical libraries would start, each with its own stack and malloc arena, only
# eat into the address-space cap: one model is checked by one process.
_CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}
_PASSED_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")


@dataclass(frozen=True)
class Limits:
    seconds: float = 300.0
    memory_bytes: int = 4 * 1024**3


@dataclass(frozen=True)
class CheckResult:
    report: GeometryReport
    png: bytes | None
    glb: bytes | None
    seconds: float


@dataclass(frozen=True)
class Stopped:
    """Why a child gave no answer of its own: the cap it hit or how it died, in one line."""

    code: Code
    message: str
    values: dict


def _set_limits(limits: Limits) -> None:
    cpu = int(limits.seconds) + 5
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _run(arguments: list[str], out: Path, limits: Limits) -> int | Stopped:
    """Run the child with ``arguments``; its exit status, or why it was stopped."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
    env.update(_CHILD_ENV)
    command = [sys.executable, "-m", "registry.geometry.runner", *arguments, str(out)]
    try:
        child = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limits.seconds,
            preexec_fn=lambda: _set_limits(limits),
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Stopped(
            Code.LIMIT_EXCEEDED,
            f"stopped after {limits.seconds:g} s, the time cap for one file",
            {"limit": "time", "seconds": limits.seconds},
        )
    status = child.returncode
    if status in (0, EXIT_UNREADABLE):
        return status
    mib = limits.memory_bytes // 2**20
    if status in (EXIT_MEMORY, -signal.SIGKILL, -signal.SIGABRT):
        # SIGABRT: C++ code (OpenCascade) aborts when an allocation fails under the cap.
        return Stopped(
            Code.LIMIT_EXCEEDED,
            f"stopped: it needed more than {mib} MiB, the memory cap for one file",
            {"limit": "memory", "memory_mib": mib},
        )
    if status == -signal.SIGXCPU:
        return Stopped(
            Code.LIMIT_EXCEEDED,
            "stopped: it used up its CPU time",
            {"limit": "time", "seconds": limits.seconds},
        )
    lines = child.stderr.decode(errors="replace").strip().splitlines()
    how = f"signal {-status}" if status < 0 else f"status {status}"
    last = lines[-1][:300] if lines else "no output"
    return Stopped(Code.CHECKER_CRASHED, f"the checker died on this file ({how}): {last}", {})


def run_checks(model: Path, name: str, limits: Limits = Limits()) -> CheckResult:
    """Check ``model`` (a file on disk, called ``name`` in its version) in a limited child."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dgml-check-") as tmp:
        out = Path(tmp)
        outcome = _run(["check", str(model), name], out, limits)
        if outcome == 0 and (out / "report.json").exists():
            report = GeometryReport.model_validate_json((out / "report.json").read_bytes())
            png, glb = out / "preview.png", out / "preview.glb"
            return CheckResult(
                report,
                png.read_bytes() if png.exists() else None,
                glb.read_bytes() if glb.exists() else None,
                time.monotonic() - started,
            )
    if not isinstance(outcome, Stopped):
        outcome = Stopped(Code.CHECKER_CRASHED, "the checker ended without a report", {})
    report = GeometryReport(path=name, verdict=Verdict.FAIL, checker_version=CHECKER_VERSION)
    report.add(outcome.code, Severity.FAIL, f"checking {outcome.message}", **outcome.values)
    return CheckResult(report.decide(), None, None, time.monotonic() - started)


def run_diff(old: Path, old_name: str, new: Path, new_name: str, limits: Limits = Limits()) -> dict:
    """The geometry diff of two model files, as JSON data; ``{"error": ...}`` when it cannot
    be had (a model that cannot be read, a cap that was hit)."""
    with tempfile.TemporaryDirectory(prefix="dgml-diff-") as tmp:
        out = Path(tmp)
        outcome = _run(["diff", str(old), old_name, str(new), new_name], out, limits)
        result = out / "diff.json"
        if outcome in (0, EXIT_UNREADABLE) and result.exists():
            return json.loads(result.read_bytes())
    if isinstance(outcome, Stopped):
        return {"error": f"comparing {outcome.message}", "code": outcome.code.value}
    return {"error": "the comparison ended without a result", "code": "CHECKER_CRASHED"}


def check_file(model: Path, name: str):
    """The report of one file and, where it could be read, its previews."""
    from registry.geometry.preview import render_previews
    from registry.geometry.readers import read_model
    from registry.geometry.validate import validate_model

    report = validate_model(model, name)
    if report.verdict is Verdict.UNREADABLE or not report.metrics.triangles:
        return report, None
    return report, render_previews(read_model(model, name))


def _check(model: Path, name: str, out: Path) -> int:
    report, previews = check_file(model, name)
    (out / "report.json").write_text(report.model_dump_json())
    if previews is not None:
        if previews.png:
            (out / "preview.png").write_bytes(previews.png)
        if previews.glb:
            (out / "preview.glb").write_bytes(previews.glb)
    return 0


def _diff(old: Path, old_name: str, new: Path, new_name: str, out: Path) -> int:
    from registry.geometry.diff import model_diff
    from registry.geometry.mesh import Unreadable
    from registry.geometry.readers import read_model

    try:
        before, after = read_model(old, old_name), read_model(new, new_name)
    except Unreadable as exc:
        (out / "diff.json").write_text(json.dumps({"error": exc.reason, "code": "UNREADABLE"}))
        return EXIT_UNREADABLE
    (out / "diff.json").write_text(model_diff(before, after).model_dump_json())
    return 0


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 4 and argv[0] == "check":
            return _check(Path(argv[1]), argv[2], Path(argv[3]))
        if len(argv) == 6 and argv[0] == "diff":
            return _diff(Path(argv[1]), argv[2], Path(argv[3]), argv[4], Path(argv[5]))
    except MemoryError:
        return EXIT_MEMORY
    print(
        "usage: python -m registry.geometry.runner check MODEL NAME OUT_DIR\n"
        "       python -m registry.geometry.runner diff OLD OLD_NAME NEW NEW_NAME OUT_DIR",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
