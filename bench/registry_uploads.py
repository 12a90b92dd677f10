"""The upload half of ``bench_registry.py``: 50 MiB pushes against the disk, with the floors
of the HTTP stack beside them.

Each repetition makes fresh random bytes (so deduplication cannot help) and, in an order that
alternates from one repetition to the next, times:

* a push of them to ``dgml up`` (the figure with the goal), and the CPU time the hub's API
  process spent on it, all threads together (``/proc``);
* writing them to a new file in the hub's data dir with flush and fsync, then removing it (the
  baseline: the blob store fsyncs every blob before renaming it into place);
* posting them to two routes of the bare FastAPI app, under the same uvicorn settings: one
  that only reads the request body, one that reads it and hashes it with SHA-256 as it comes.
  They are the floors of receiving a body through this HTTP stack on this machine, and say
  how much of an upload's time is the registry's own (informational, no goal).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
UPLOAD_SIZE = 50 * MIB
FLOOR_ROUTES = {"read": "/upload/read", "read + sha256": "/upload/sha256"}


@dataclass
class UploadRuns:
    """MiB/s of every repetition, by what was timed; CPU milliseconds per push."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    hub_cpu_ms: list[float] = field(default_factory=list)

    def add(self, kind: str, rate: float) -> None:
        self.rates.setdefault(kind, []).append(rate)

    def median(self, kind: str) -> float:
        return statistics.median(self.rates[kind])

    def floors(self) -> dict[str, dict[str, float]]:
        disk = self.median("disk")
        return {
            name: {
                "mib_per_s": round(self.median(name), 1),
                "ratio": round(self.median(name) / disk, 3),
                "runs": [round(rate, 1) for rate in self.rates[name]],
            }
            for name in FLOOR_ROUTES
            if name in self.rates
        }


def add_floor_routes(app) -> None:
    """The bare app's upload routes: read the body, or read it and hash it as it comes (plain
    Starlette routes: the request is all they take)."""
    from starlette.responses import Response

    async def read(request) -> Response:
        async for _chunk in request.stream():
            pass
        return Response(status_code=201)

    async def sha256(request) -> Response:
        digest = hashlib.sha256()
        async for chunk in request.stream():
            digest.update(chunk)
        return Response(digest.hexdigest(), status_code=201)

    app.router.add_route(FLOOR_ROUTES["read"], read, methods=["POST"])
    app.router.add_route(FLOOR_ROUTES["read + sha256"], sha256, methods=["POST"])


def cpu_ms(pid: int) -> float:
    """User + system CPU time of every thread of process ``pid`` so far, in milliseconds."""
    ticks = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def disk_write(directory: Path, data: bytes) -> float:
    path = directory / f"disk-{uuid.uuid4().hex}"
    try:
        started = time.perf_counter()
        with path.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)


def measure(
    push: Callable[[bytes], float],
    post_bare: Callable[[str, bytes], float] | None,
    disk_dir: Path,
    reps: int,
    hub_pid: int | None,
    log: Callable[[str], None],
) -> UploadRuns:
    """``push(data)`` pushes to dgml and answers the seconds it took (it checks the hash);
    ``post_bare(path, data)`` posts to the bare app. ``hub_pid`` is the API process."""
    disk_dir.mkdir(exist_ok=True)
    # Untimed, as the setup push was for the registry: the first write into a new directory
    # is consistently slower than the following ones.
    disk_write(disk_dir, os.urandom(UPLOAD_SIZE))
    runs = UploadRuns()
    for rep in range(reps):
        data = os.urandom(UPLOAD_SIZE)

        def upload(data: bytes = data) -> float:
            before = cpu_ms(hub_pid) if hub_pid else 0.0
            elapsed = push(data)
            if hub_pid:
                runs.hub_cpu_ms.append(cpu_ms(hub_pid) - before)
            return elapsed

        steps: list[tuple[str, Callable[[], float]]] = [
            ("upload", upload),
            ("disk", lambda data=data: disk_write(disk_dir, data)),
        ]
        if post_bare is not None:
            steps += [
                (name, lambda path=path, data=data: post_bare(path, data))
                for name, path in FLOOR_ROUTES.items()
            ]
        for kind, step in steps if rep % 2 == 0 else steps[::-1]:
            rate = UPLOAD_SIZE / MIB / step()
            runs.add(kind, rate)
            log(f"  rep {rep + 1}/{reps} {kind:<14} {rate:8.1f} MiB/s")
    return runs


def summary(runs: UploadRuns, goal: float) -> list[str]:
    """The lines that say how uploads did, for the end of the report."""
    upload, disk = runs.median("upload"), runs.median("disk")
    ratio = upload / disk
    lines = [
        f"upload: a 50 MiB push runs at {upload:.0f} MiB/s, writing the same bytes to disk with "
        f"fsync at {disk:.0f} MiB/s: ratio {ratio:.2f} (goal >= {goal}) "
        + ("OK" if ratio >= goal else "BELOW"),
    ]
    if runs.hub_cpu_ms:
        lines.append(
            f"        the hub's API process spent {statistics.mean(runs.hub_cpu_ms):.0f} ms of "
            "CPU per push (all threads; mean: /proc counts in 10 ms ticks)"
        )
    for name, floor in runs.floors().items():
        lines.append(
            f"        floor, a bare route that does {name}: {floor['mib_per_s']:.0f} MiB/s "
            f"(ratio {floor['ratio']:.2f})"
        )
    return lines
