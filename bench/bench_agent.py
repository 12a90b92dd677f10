"""The job agent's own overhead per job, against the slicer's time for the same job.

Run from the project root:

    .venv/bin/python bench/bench_agent.py                # about 2 to 4 minutes
    .venv/bin/python bench/bench_agent.py --rounds 10 --output /tmp/agent.json

Needs PrusaSlicer (``apt-get install -y prusa-slicer``). The parts are every design's default
STL, built once with ``dgml build designs/<name> -o DIR`` into ``--parts`` (kept between runs;
``--rebuild`` builds them again), and 3DBenchy from ``../shared/testdata/meshes`` when it is
there. Each part is one FDM job on a simulated machine with no machine time (``duration_s =
0``), bed 300 x 300 x 300 mm, so that every part fits whatever its design's own process.

The files are served by a local HTTP server (``http.server`` in a thread) and fetched once
before timing, so every timed job finds them in the cache, as a restarted or repeated job
does. A timed job is a fresh job id through ``workers.runner.Runner``: accept (journal),
download step (cache hit, sha256 re-verified, journal), prepare step (profile, link, slicer,
G-code summary, rename, journal), start step (journal the start, simulator start) and one poll
(done, journal). The slicer's share is the wall time of the ``prusa-slicer`` process alone
(``SliceResult.slicer_s``); the agent's overhead is everything else. Each part runs
``--rounds`` times after one untimed warm-up; the table gives p50 and p99 (with few rounds p99
is close to the maximum) of the overhead, the slicer's median, and overhead / slicer. Goal:
the overhead under 5 % of the slicer's time. Figures go to ``--output`` as JSON. The exit
code is 0 whatever the figures are, 1 if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.config import parse_config  # noqa: E402
from workers.journal import JobSpec  # noqa: E402
from workers.runner import Runner  # noqa: E402

GOAL = 0.05
DEFAULT_PARTS = Path(tempfile.gettempdir()) / "dgml-bench" / "agent-parts"
DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "dgml-bench" / "agent.json"
SHARED_MESHES = ROOT.parent / "shared" / "testdata" / "meshes"
CONFIG = """
[agent]
server = "http://127.0.0.1:1"
state_dir = "{state}"

[[machines]]
name = "bench"
process = "fdm"
materials = ["PLA"]
build_volume_mm = [300, 300, 300]
nozzle_mm = 0.4
driver = "simulator"

[machines.simulator]
duration_s = 0
"""


class BenchError(Exception):
    """The benchmark itself cannot go on."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parts(parts_dir: Path, rebuild: bool) -> list[tuple[str, Path]]:
    """Every design's default STL files, built with ``dgml build`` unless already there."""
    dgml = Path(sys.executable).parent / "dgml"
    found = []
    for folder in sorted((ROOT / "designs").iterdir()):
        if not (folder / "design.py").is_file():
            continue
        out = parts_dir / folder.name
        if rebuild or not list(out.glob("*.stl")):
            shutil.rmtree(out, ignore_errors=True)
            log(f"building {folder.name} ...")
            run = subprocess.run(
                [str(dgml), "build", str(folder), "-o", str(out), "--json"],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                raise BenchError(f"dgml build {folder.name} failed: {run.stderr.strip()[-300:]}")
        found += [(f"{folder.name}/{stl.stem}", stl) for stl in sorted(out.glob("*.stl"))]
    for name in ("3DBenchy.stl", "3DBenchy.3mf"):
        if (SHARED_MESHES / name).is_file():
            found.append(("3DBenchy", SHARED_MESHES / name))
            break
    else:
        log(f"note: no 3DBenchy in {SHARED_MESHES}; left out")
    return found


class FileServer:
    """The parts over HTTP on 127.0.0.1, from memory."""

    def __init__(self, parts: list[tuple[str, Path]]) -> None:
        self.files = {f"/{i}{path.suffix}": path.read_bytes() for i, (_, path) in enumerate(parts)}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def ref(self, index: int, name: str, suffix: str) -> dict:
        body = self.files[f"/{index}{suffix}"]
        return {
            "name": name.replace("/", "-") + suffix,
            "url": f"{self.base}/{index}{suffix}",
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def one_job(runner: Runner, job_id: str, ref: dict) -> dict[str, float]:
    """Time one job's steps; returns seconds per step and the slicer's own seconds."""
    spec = JobSpec(job_id=job_id, machine="bench", process="fdm", material="PLA", files=[ref])
    times: dict[str, float] = {}
    started = time.perf_counter()
    runner.accept(spec)
    times["accept"] = time.perf_counter() - started
    for name in ("download", "prepare", "start"):
        before = time.perf_counter()
        record = runner.step(job_id)
        times[name] = time.perf_counter() - before
        if record.stage == "failed":
            raise BenchError(f"{job_id}: {record.error}")
    before = time.perf_counter()
    status = runner.poll(job_id)
    times["poll"] = time.perf_counter() - before
    if status.state != "done":
        raise BenchError(f"{job_id}: {status.state} {status.message}")
    times["total"] = time.perf_counter() - started
    record = runner.journal.get(job_id)
    times["slicer"] = sum(a.get("slicer_s", 0.0) for a in record.artifacts or [])
    times["overhead"] = times["total"] - times["slicer"]
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(parts: list[tuple[str, Path]], rounds: int, state: Path) -> list[dict]:
    server = FileServer(parts)
    config = parse_config(CONFIG.format(state=state))
    results = []
    try:
        with httpx.Client(timeout=60) as client:
            runner = Runner(config, client=client)
            if not runner.tools.available("fdm"):
                raise BenchError("; ".join(runner.tools.lines()))
            try:
                for index, (name, path) in enumerate(parts):
                    ref = server.ref(index, name, path.suffix)
                    one_job(runner, f"warm-{index}", ref)  # fills the cache, loads the slicer
                    runs = [one_job(runner, f"p{index}-r{r}", ref) for r in range(rounds)]
                    results.append(summarise(name, path, runs))
                    row = results[-1]
                    log(
                        f"{name}: overhead p50 {row['overhead_p50_ms']:.1f} ms, slicer "
                        f"{row['slicer_p50_s']:.2f} s, ratio {row['ratio']:.2%}"
                    )
            finally:
                runner.close()
    finally:
        server.close()
    return results


def summarise(name: str, path: Path, runs: list[dict[str, float]]) -> dict:
    overhead = [r["overhead"] for r in runs]
    slicer = [r["slicer"] for r in runs]
    ratios = [r["overhead"] / r["slicer"] for r in runs]
    steps = {
        step: round(statistics.median(r[step] for r in runs) * 1000, 2)
        for step in ("accept", "download", "prepare", "start", "poll")
    }
    steps["prepare_without_slicer"] = round(
        statistics.median(r["prepare"] - r["slicer"] for r in runs) * 1000, 2
    )
    return {
        "part": name,
        "bytes": path.stat().st_size,
        "rounds": len(runs),
        "overhead_p50_ms": statistics.median(overhead) * 1000,
        "overhead_p99_ms": percentile(overhead, 0.99) * 1000,
        "slicer_p50_s": statistics.median(slicer),
        "ratio": statistics.median(ratios),
        "steps_p50_ms": steps,
    }


def print_table(results: list[dict]) -> None:
    header = (
        f"{'part':<36} {'KiB':>7} {'overhead p50':>13} {'p99':>9} {'slicer p50':>11} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in results:
        print(
            f"{row['part']:<36} {row['bytes'] / 1024:>7.0f} {row['overhead_p50_ms']:>10.1f} ms "
            f"{row['overhead_p99_ms']:>6.1f} ms {row['slicer_p50_s']:>9.3f} s {row['ratio']:>7.2%}"
        )
    total_overhead = sum(r["overhead_p50_ms"] / 1000 for r in results)
    total_slicer = sum(r["slicer_p50_s"] for r in results)
    worst = max(results, key=lambda r: r["ratio"])
    print("-" * len(header))
    print(
        f"all parts: overhead {total_overhead * 1000:.0f} ms for {total_slicer:.2f} s of slicing "
        f"= {total_overhead / total_slicer:.2%} (goal < {GOAL:.0%}); worst part "
        f"{worst['part']} at {worst['ratio']:.2%}: "
        + ("OK" if worst["ratio"] < GOAL else "ABOVE the goal for some parts")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed jobs per part (default 5)")
    parser.add_argument("--parts", type=Path, default=DEFAULT_PARTS, help="where parts are built")
    parser.add_argument("--rebuild", action="store_true", help="build the designs again")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON figures")
    args = parser.parse_args()
    try:
        parts = build_parts(args.parts, args.rebuild)
        with tempfile.TemporaryDirectory(prefix="dgml-agent-bench-") as tmp:
            results = measure(parts, max(1, args.rounds), Path(tmp) / "state")
    except BenchError as exc:
        log(f"bench_agent: {exc}")
        return 1
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "goal_ratio": GOAL,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "parts": results,
            },
            indent=2,
        )
    )
    log(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
