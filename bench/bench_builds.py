"""Sandboxed builds of the project's designs against the same builds in process, and the
registry's answer for a build it already has.

Run from the project root:

    .venv/bin/python bench/bench_builds.py             # about 3 to 4 minutes
    .venv/bin/python bench/bench_builds.py --rounds 5 --requests 100 --output /tmp/b.json

For every ``designs/<name>/`` folder with a ``design.py`` (read with
``registry.parametric.build.load_folder``, default parameters) it measures, in one run:

1. cold: ``build_design(..., mode="cold")``, a fresh sandboxed child per build;
2. warm: ``build_design(..., mode="warm")``, a process forked by the pre-warmed zygote;
3. in process: the same script run in this process (which has imported CadQuery) with
   ``child.run_script`` and its parts written with ``export.write_parts``, the very functions
   the sandboxed child calls, so the work is the same but for the sandbox;
4. cached: a registry app (``dgml.app.create_app`` under uvicorn, in a child process, on a
   free port) with a temporary data dir and a redis-server of its own on another free port;
   each design is pushed as version 1, ``dgml worker --burst`` runs the default builds, then
   ``POST .../versions/1/builds`` with the default parameters (the build the registry already
   has) is timed ``--requests`` times over one keep-alive connection.

Cold, warm and in-process builds take turns, design by design, for ``--rounds`` rounds after
one untimed round (which starts the zygote and lets the in-process builds load what they load
lazily); the figures are medians. Goals: warm / in process below 1.5, cached p99 below 50 ms.
A table goes to stdout, the figures as JSON to ``--output``; the exit code is 0 whatever the
figures are, 1 when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# The sandbox runs builds with one thread; so does the in-process baseline.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
RATIO_GOAL = 1.5
CACHED_GOAL_MS = 50.0
DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "dgml-bench" / "builds.json"
SCRUBBED_ENV = ("DGML_DATABASE_URL", "DGML_REDIS_URL", "DGML_BLOB_DIR", "DGML_HOST", "DGML_PORT")


class BenchError(Exception):
    """The benchmark itself cannot go on."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def load_designs(only: list[str] | None) -> list[tuple[str, str, dict | None]]:
    from registry.parametric.build import load_folder

    found = []
    for folder in sorted((ROOT / "designs").iterdir()):
        if (folder / "design.py").is_file() and (not only or folder.name in only):
            source, manifest = load_folder(folder)
            found.append((folder.name, source, manifest))
    if not found:
        raise BenchError("no designs/<name>/design.py found")
    return found


# --- building ---------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_stdout():
    """OpenCascade prints its STEP statistics to stdout; keep them out of the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def build_in_process(source: str, manifest: dict | None, workdir: Path) -> float:
    """What the sandboxed child does with the script, here: seconds taken."""
    from registry.parametric import child, export
    from registry.parametric.params import parse_script, read_parameters, resolve, substitute

    started = time.perf_counter()
    values = resolve(read_parameters(source, manifest, "design.py"), {})
    tree = parse_script(source, "design.py")
    code = compile(substitute(tree, values), "design.py", "exec")
    workdir.mkdir(parents=True)
    here = os.getcwd()
    os.chdir(workdir)
    try:
        shown, error, _ = child.run_script(code, "design.py", child.uses_cad(tree))
        if error:
            raise BenchError(f"the in-process build failed: {error}")
        parts: list = []
        export.write_parts(shown, (manifest or {}).get("process") == "laser", parts, [])
    finally:
        os.chdir(here)
    return time.perf_counter() - started


def build_sandboxed(source: str, manifest: dict | None, out: Path, mode: str) -> float:
    from registry.parametric.build import build_design

    started = time.perf_counter()
    result = build_design(source, manifest, {}, out, mode=mode)
    took = time.perf_counter() - started
    if not result.ok or result.mode != mode:
        raise BenchError(f"the {mode} build failed ({result.mode}): {result.error}")
    return took


def measure_builds(
    designs, rounds: int, cold_rounds: int, scratch: Path
) -> dict[str, dict[str, list[float]]]:
    from registry.parametric import child

    os.chdir(scratch)
    with quiet_stdout():
        child.preload(cad=True, laser=True)  # as the zygote and the cold child do
    runs = {name: {"cold": [], "warm": [], "in_process": []} for name, _, _ in designs}
    for number in range(rounds + 1):
        log(f"round {number}/{rounds}" + (" (untimed)" if number == 0 else ""))
        for name, source, manifest in designs:
            place = scratch / f"{name}-{number}"
            with quiet_stdout():
                took = {
                    "in_process": build_in_process(source, manifest, place / "in-process"),
                    "warm": build_sandboxed(source, manifest, place / "warm", "warm"),
                }
            if number:
                if number <= cold_rounds:
                    took["cold"] = build_sandboxed(source, manifest, place / "cold", "cold")
                for kind, seconds in took.items():
                    runs[name][kind].append(seconds)
            shutil.rmtree(place, ignore_errors=True)
    return runs


# --- the registry ----------------------------------------------------------------------


def serve_app(port: int, gc_freeze: bool) -> None:
    """Child process: the registry app under uvicorn, configured from DGML_* variables. With
    ``gc_freeze``, what is loaded at start is moved out of the collector's reach first (not
    what ``dgml up`` does today: a "what if" for the cached figures)."""
    import gc

    import uvicorn

    from dgml.app import create_app
    from dgml.settings import Settings

    app = create_app(Settings())
    if gc_freeze:
        gc.collect()
        gc.freeze()
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def request(conn, method: str, path: str, token: str, body: bytes = b"", kind: str = ""):
    headers = {"Authorization": f"Bearer {token}"}
    if kind:
        headers["Content-Type"] = kind
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[str, bytes]:
    boundary = "bench-" + uuid.uuid4().hex
    parts = [
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
        for name, value in fields.items()
    ]
    parts += [
        f'Content-Disposition: form-data; name="files"; filename="{path}"\r\n'.encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + data
        for path, data in files
    ]
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


class Registry:
    """redis-server and the app, each on a free port, in a temporary data dir."""

    def __init__(self, tmp: Path, gc_freeze: bool) -> None:
        self.tmp, self.processes, self.gc_freeze = tmp, [], gc_freeze
        self.env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}

    def start(self) -> None:
        from dgml.embedded import find_redis_server

        redis_port, self.port = free_port(), free_port()
        (self.tmp / "redis").mkdir()
        redis = [find_redis_server(), "--port", str(redis_port), "--bind", HOST, "--save", ""]
        self._spawn([*redis, "--appendonly", "no", "--dir", str(self.tmp / "redis")], "redis")
        self.env.update(
            DGML_DATA_DIR=str(self.tmp / "data"), DGML_REDIS_URL=f"redis://{HOST}:{redis_port}/0"
        )
        serve = [sys.executable, __file__, "--serve-app", str(self.port)]
        self._spawn(serve + ["--app-gc-freeze"] * self.gc_freeze, "app")
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                if request(conn, "GET", "/readyz", "")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"the app was not ready in 90 s: see {self.tmp / 'app.log'}")
            time.sleep(0.2)
        created = self.dgml("user", "create", "bench", timeout=60)
        self.token = created.stdout.strip().splitlines()[-1]

    def _spawn(self, args: list[str], name: str) -> None:
        with open(self.tmp / f"{name}.log", "wb") as out:
            self.processes.append(
                subprocess.Popen(
                    args, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip

    def dgml(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "dgml"), *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"dgml {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
        return done

    def push(self, name: str, source: str, manifest: dict | None) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        license = (manifest or {}).get("license", "CC-BY-4.0")
        body = json.dumps({"name": name, "title": name, "license": license}).encode()
        status, answer = request(
            conn, "POST", "/api/v1/designs", self.token, body, "application/json"
        )
        if status != 201:
            raise BenchError(f"creating {name} answered {status}: {answer[:300]!r}")
        fields = {"manifest": json.dumps(manifest)} if manifest else {}
        kind, body = multipart([("design.py", source.encode())], fields)
        status, answer = request(
            conn, "POST", f"/api/v1/designs/bench/{name}/versions", self.token, body, kind
        )
        if status != 201:
            raise BenchError(f"pushing {name} answered {status}: {answer[:300]!r}")

    def time_cached(self, name: str, count: int) -> list[float]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        path, body = f"/api/v1/designs/bench/{name}/versions/1/builds", b'{"params": {}}'
        seconds = []
        for number in range(count + 3):  # three to open the connection and warm up
            started = time.perf_counter()
            status, answer = request(conn, "POST", path, self.token, body, "application/json")
            took = time.perf_counter() - started
            if status != 200 or json.loads(answer)["state"] != "done":
                raise BenchError(f"the build of {name} is not cached: {status} {answer[:300]!r}")
            if number >= 3:
                seconds.append(took)
        return seconds

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def measure_cached(
    designs, count: int, tmp: Path, gc_freeze: bool = False
) -> tuple[dict[str, list[float]], float]:
    registry = Registry(tmp, gc_freeze)
    try:
        log("starting redis-server and the app")
        registry.start()
        for name, source, manifest in designs:
            registry.push(name, source, manifest)
        log("building the defaults with dgml worker --burst")
        started = time.monotonic()
        registry.dgml("worker", "--burst", timeout=900)
        worker_seconds = time.monotonic() - started
        log(f"timing {count} cached build requests per design")
        return {name: registry.time_cached(name, count) for name, _, _ in designs}, worker_seconds
    finally:
        registry.stop()


# --- the report ------------------------------------------------------------------------


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(designs, runs, cached, args, worker_seconds: float) -> dict:
    rows = []
    for name, _, _ in designs:
        medians = {kind: statistics.median(values) for kind, values in runs[name].items()}
        ms = [s * 1000 for s in cached[name]]
        rows.append(
            {
                "design": name,
                **{f"{kind}_s": round(value, 4) for kind, value in medians.items()},
                "ratio_warm_in_process": round(medians["warm"] / medians["in_process"], 3),
                "cached_p50_ms": round(percentile(ms, 50), 2),
                "cached_p99_ms": round(percentile(ms, 99), 2),
                "cached_ms": [round(v, 2) for v in ms],
                "runs": {
                    kind: [round(v, 4) for v in values] for kind, values in runs[name].items()
                },
            }
        )
    ratios = [r["ratio_warm_in_process"] for r in rows]
    summary = {
        "ratio_goal": RATIO_GOAL,
        "cached_goal_ms": CACHED_GOAL_MS,
        "designs_within_ratio": sum(r < RATIO_GOAL for r in ratios),
        "designs_within_cached": sum(r["cached_p99_ms"] < CACHED_GOAL_MS for r in rows),
        "designs": len(rows),
        "worst_ratio": max(ratios),
        "median_cold_over_warm": round(
            statistics.median(r["cold_s"] / r["warm_s"] for r in rows), 1
        ),
        "worker_burst_s": round(worker_seconds, 1),
    }
    return {
        "rounds": args.rounds,
        "cold_rounds": min(args.cold_rounds, args.rounds),
        "requests": args.requests,
        "app_gc_freeze": args.app_gc_freeze,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "designs": rows,
        "summary": summary,
    }


def print_table(result: dict) -> None:
    print(
        f"{'design':<22} {'cold s':>7} {'warm s':>7} {'in-proc s':>9} {'warm/in':>7} "
        f"{'':4} {'cached p50':>10} {'p99 ms':>7}"
    )
    for row in result["designs"]:
        ratio_ok = "OK" if row["ratio_warm_in_process"] < RATIO_GOAL else "OVER"
        cached_ok = "OK" if row["cached_p99_ms"] < CACHED_GOAL_MS else "OVER"
        print(
            f"{row['design']:<22} {row['cold_s']:>7.3f} {row['warm_s']:>7.3f} "
            f"{row['in_process_s']:>9.3f} {row['ratio_warm_in_process']:>7.2f} {ratio_ok:4} "
            f"{row['cached_p50_ms']:>10.1f} {row['cached_p99_ms']:>7.1f} {cached_ok}"
        )
    s = result["summary"]
    print(
        f"summary: warm/in-process < {s['ratio_goal']} for {s['designs_within_ratio']}/"
        f"{s['designs']} designs (worst {s['worst_ratio']:.2f}); cached p99 < "
        f"{s['cached_goal_ms']:g} ms for {s['designs_within_cached']}/{s['designs']}; warm is "
        f"{s['median_cold_over_warm']}x faster than cold (median); load average "
        f"{result['machine']['load_average'][0]:.1f} on {result['machine']['cpus']} CPUs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of builds")
    parser.add_argument("--cold-rounds", type=int, default=3, help="of which with a cold build")
    parser.add_argument("--requests", type=int, default=50, help="cached requests per design")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--design", action="append", help="only this design (repeatable)")
    parser.add_argument(
        "--app-gc-freeze",
        action="store_true",
        help="call gc.freeze() in the app after start-up (dgml up does not): a what-if",
    )
    parser.add_argument("--serve-app", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_app:
        serve_app(args.serve_app, args.app_gc_freeze)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmp = Path(tempfile.mkdtemp(prefix="dgml-bench-builds-"))
    here = os.getcwd()
    try:
        designs = load_designs(args.design)
        log(f"{len(designs)} designs: {', '.join(name for name, _, _ in designs)}")
        (tmp / "builds").mkdir()
        runs = measure_builds(
            designs, args.rounds, min(args.cold_rounds, args.rounds), tmp / "builds"
        )
        os.chdir(here)
        cached, worker_seconds = measure_cached(designs, args.requests, tmp, args.app_gc_freeze)
        result = report(designs, runs, cached, args, worker_seconds)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        os.chdir(here)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    log(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
