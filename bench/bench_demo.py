"""How long a newcomer waits: ``dgml up`` until its API is ready, and ``dgml demo`` stage by stage.

Run from the project root:

    .venv/bin/python bench/bench_demo.py                 # about 2 minutes
    .venv/bin/python bench/bench_demo.py --starts 10 --demos 3 --output /tmp/demo.json

1. ``dgml up`` is started ``--starts`` times (5 by default), each on a fresh temporary data dir
   and a free port, as a subprocess; the time is from the start of the process to the first
   200 from ``/readyz`` (polled every 20 ms), which needs the migrations done, the embedded
   Redis answering and the workers started. Each hub is stopped with SIGTERM before the next.
2. ``dgml demo --json`` runs ``--demos`` times (1 by default) on a fresh data dir; the demo
   times its own stages and prints them in its JSON; the wall time of the whole process is
   measured here. PrusaSlicer slices the FDM jobs when it is installed (bootstrap installs it).

Goals: the API ready in under 5 s; the whole demo in under 60 s. The table shows the median
and the worst of each figure against its goal; the figures go to ``--output`` as JSON
(``bench/results/demo.json`` by default). The exit code is 0 whatever the figures are, 1 if
the benchmark could not run (a hub that never got ready, a demo that failed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgml.demo.hub import free_port  # noqa: E402

READY_GOAL_S = 5.0
DEMO_GOAL_S = 60.0


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGML_")}
    env.update(DGML_DATA_DIR=str(data_dir), DGML_LOG_LEVEL="warning")
    return env


def time_to_ready(timeout: float = 120.0) -> float:
    """Seconds from starting ``dgml up`` on a fresh data dir to its first ready answer."""
    with tempfile.TemporaryDirectory(prefix="dgml-bench-up-") as folder:
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "dgml", "up", "--port", str(port)],
            env=_env(Path(folder) / "data"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(timeout=1.0) as http:
                while True:
                    try:
                        if http.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            return time.perf_counter() - started
                    except httpx.HTTPError:
                        pass
                    if process.poll() is not None or time.perf_counter() - started > timeout:
                        raise SystemExit(f"dgml up did not get ready (exit {process.poll()})")
                    time.sleep(0.02)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)


def run_demo() -> tuple[float, dict[str, float]]:
    """The demo's wall time and its own stage times."""
    with tempfile.TemporaryDirectory(prefix="dgml-bench-demo-") as folder:
        data_dir = Path(folder) / "data"
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "dgml", "demo", "--json", "--data-dir", str(data_dir)],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        took = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"dgml demo failed: {result.stderr.strip()[-500:]}")
        return took, json.loads(result.stdout)["stages_s"]


def _row(name: str, values: list[float], goal: float | None) -> str:
    median, worst = statistics.median(values), max(values)
    verdict = "" if goal is None else ("OK" if worst < goal else "OVER")
    goal_text = "" if goal is None else f"< {goal:g} s"
    return f"{name:<48} {median:>8.2f} {worst:>8.2f} {goal_text:>8} {verdict:>5}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--starts", type=int, default=5, help="dgml up starts to time")
    parser.add_argument("--demos", type=int, default=1, help="dgml demo runs to time")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "demo.json")
    args = parser.parse_args()

    ready = [time_to_ready() for _ in range(args.starts)]
    demos = [run_demo() for _ in range(args.demos)]
    stages: dict[str, list[float]] = {}
    for _took, times in demos:
        for name, seconds in times.items():
            stages.setdefault(name, []).append(seconds)

    print(f"{'figure (seconds)':<48} {'median':>8} {'worst':>8} {'goal':>8}")
    print(_row("dgml up: start to ready API", ready, READY_GOAL_S))
    print(_row("dgml demo: whole process", [t for t, _ in demos], DEMO_GOAL_S))
    for name, values in stages.items():
        print(_row(f"  stage: {name}", values, None))
    figures = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "ready_s": ready,
        "demo_s": [t for t, _ in demos],
        "stages_s": stages,
        "goals_s": {"ready": READY_GOAL_S, "demo": DEMO_GOAL_S},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"error: {exc.code}", file=sys.stderr)
            sys.exit(1)
        raise
