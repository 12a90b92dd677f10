"""Registry throughput against a bare FastAPI floor and the raw disk.

Run from the project root:

    .venv/bin/python bench/bench_registry.py

It starts ``dgml up`` as a subprocess in a fresh temporary data dir on a free port, creates an
account with ``dgml user create``, a design, and a version holding a 1 MiB and a 50 MiB file of
random bytes. Beside it, on another free port, it starts a bare FastAPI app under uvicorn with
the same server settings as ``dgml up`` (one process, default loop and HTTP implementation,
access log off) whose routes answer the very same bytes from memory: the version's metadata JSON
and both files, at the same paths.

Downloads are measured from a separate process with ``wrk`` when it is installed (else with httpx
in several threads in a child process): the same concurrency and duration against dgml and the
bare app, alternately, for several rounds; the medians give a ratio dgml / bare. Uploads push a
fresh 50 MiB file several times (new content each time, so deduplication cannot help) and are
compared with writing the same bytes to a file in the same data dir with flush and fsync, as the
blob store does; beside them, two routes of the bare app that only read the body, or read and
hash it, show the floor of the HTTP stack (``registry_uploads.py``). ``--uploads-only`` skips
the downloads.

A table goes to stdout and the figures to ``bench/results/registry.json``. The goals are printed
with each figure (OK or BELOW); the exit code is 0 whatever the figures are, and non-zero only
when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import registry_uploads as uploads

HOST = "127.0.0.1"
MIB = 1024 * 1024
# The registry answers files in chunks of this size (registry/api.py, get_file).
CHUNK = MIB
DOWNLOAD_GOAL = 0.6
UPLOAD_GOAL = 0.5
OWNER = "bench"
DESIGN = "bench-part"
SMALL_FILE = "parts/part-1mib.bin"
LARGE_FILE = "parts/part-50mib.bin"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "registry.json"
# Settings that must point at the embedded default, whatever the caller's environment says.
SCRUBBED_ENV = ("DGML_DATABASE_URL", "DGML_REDIS_URL", "DGML_BLOB_DIR", "DGML_HOST", "DGML_PORT")


class BenchError(Exception):
    """The benchmark itself cannot go on (a server did not start, a request failed)."""


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Should this script be killed outright (no finally), the children get SIGTERM from the
    # kernel instead of running on.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every child process started here, so that all of them are stopped on the way out."""

    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, args: list[str], *, log_path: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as out:
            # A session of its own: a Ctrl-C at the terminal reaches only this script, which
            # then stops the children in order (dgml up stops its Redis on SIGTERM).
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        self.running.append((name, proc))
        return proc

    def run(
        self, name: str, args: list[str], *, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        self.running.append((name, proc))
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} did not finish within {timeout:.0f} s") from None
        finally:
            self.stop(proc)
        return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.running)):
            self.stop(proc)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server on port {port} exited early:\n{tail(log_path)}")
        try:
            status, _, _ = request("GET", port, path, timeout=2)
            if status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise BenchError(f"server on port {port} was not ready within 90 s:\n{tail(log_path)}")


# --- plain HTTP -------------------------------------------------------------------------------


def request(
    method: str,
    port: int,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def multipart(files: list[tuple[str, bytes]]) -> tuple[str, list[bytes]]:
    """A multipart/form-data body as a list of parts, so the file bytes are never copied."""
    boundary = "bench-" + uuid.uuid4().hex
    parts: list[bytes] = []
    for path, data in files:
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{path}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", parts


def push(port: int, token: str, files: list[tuple[str, bytes]]) -> tuple[float, dict]:
    """Push a version; returns the wall time of the request and the version's JSON."""
    content_type, parts = multipart(files)
    length = sum(len(p) for p in parts)
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        started = time.perf_counter()
        conn.putrequest("POST", f"/api/v1/designs/{OWNER}/{DESIGN}/versions")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        for part in parts:
            conn.send(part)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(f"push answered {response.status}: {data[:300]!r}")
    return elapsed, json.loads(data)


# --- the bare app (runs in a child process) -------------------------------------------------


def serve_bare(spec_path: Path, port: int) -> None:
    """A bare FastAPI app that answers fixed bytes from memory at the registry's paths."""
    import uvicorn
    from fastapi import FastAPI, Response

    class MemoryResponse(Response):
        """Answers ``body`` in chunks of ``CHUNK`` bytes, as Starlette's FileResponse does with
        the registry's chunk size. One 50 MiB write would measure a weakness of the event loop
        (on Python 3.11 asyncio keeps what a socket did not take in one bytearray and deletes
        each sent piece from its front) instead of the floor of serving bytes."""

        async def __call__(self, scope, receive, send) -> None:
            body = self.body
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            for start in range(0, max(len(body), 1), CHUNK):
                await send(
                    {
                        "type": "http.response.body",
                        "body": body[start : start + CHUNK],
                        "more_body": start + CHUNK < len(body),
                    }
                )

    spec = json.loads(spec_path.read_text())
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    def endpoint_for(body: bytes, media_type: str):
        async def endpoint() -> Response:
            return MemoryResponse(content=body, media_type=media_type)

        return endpoint

    for route in spec["routes"]:
        body = Path(route["file"]).read_bytes()
        app.add_api_route(route["path"], endpoint_for(body, route["media_type"]), methods=["GET"])
    app.add_api_route("/healthz", endpoint_for(b'{"status":"ok"}', "application/json"))
    uploads.add_floor_routes(app)
    # The same server settings as ``dgml up`` (dgml/stack.py).
    config = uvicorn.Config(app, host=HOST, port=port, log_level="info", access_log=False)
    uvicorn.Server(config).run()


# --- load generators --------------------------------------------------------------------------


@dataclass
class LoadResult:
    rate: float  # completed responses per second
    p50_ms: float | None
    errors: int
    mib_per_s: float


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_SIZE = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB, "TB": 1024 * 1024 * MIB}


def _wrk_duration_ms(text: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


def parse_wrk(output: str) -> LoadResult:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    socket_errors = re.search(r"Socket errors:.*", output)
    errors = 0
    if socket_errors:
        errors = sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output)
    mib = float(transfer.group(1)) * _SIZE.get(transfer.group(2), 1) / MIB if transfer else 0.0
    return LoadResult(
        rate=float(rate.group(1)),
        p50_ms=_wrk_duration_ms(p50.group(1)) if p50 else None,
        errors=errors,
        mib_per_s=mib,
    )


def httpx_load(url: str, duration: float, connections: int) -> dict:
    """Child process body of the fallback client: one thread per connection, bodies discarded."""
    import httpx

    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"done": 0, "errors": 0, "bytes": 0}
    start_at = time.perf_counter() + 0.2
    stop_at = start_at + duration

    def worker() -> None:
        mine: list[float] = []
        done = errors = size = 0
        with httpx.Client(timeout=60) as client:
            while time.perf_counter() < start_at:
                time.sleep(0.001)
            while (began := time.perf_counter()) < stop_at:
                try:
                    with client.stream("GET", url) as response:
                        for chunk in response.iter_raw(MIB):
                            size += len(chunk)
                        ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    done += 1
                    mine.append(time.perf_counter() - began)
                else:
                    errors += 1
        with lock:
            latencies.extend(mine)
            totals["done"] += done
            totals["errors"] += errors
            totals["bytes"] += size

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start_at
    return {
        "rate": totals["done"] / elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "errors": totals["errors"],
        "mib_per_s": totals["bytes"] / elapsed / MIB,
    }


@dataclass
class Client:
    kind: str  # "wrk" or "httpx"
    version: str
    processes: Processes
    threads: int
    connections: int

    def load(self, url: str, duration: float) -> LoadResult:
        timeout = duration + 60
        if self.kind == "wrk":
            args = [
                "wrk",
                f"-t{self.threads}",
                f"-c{self.connections}",
                f"-d{duration:g}s",
                "--timeout",
                "30s",
                "--latency",
                url,
            ]
            done = self.processes.run("wrk", args, timeout=timeout)
            if done.returncode != 0:
                raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
            return parse_wrk(done.stdout)
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_httpx-client",
            "--url",
            url,
            "--duration",
            str(duration),
            "--connections",
            str(self.connections),
        ]
        done = self.processes.run("httpx client", args, timeout=timeout)
        if done.returncode != 0:
            raise BenchError(f"httpx client failed: {done.stderr.strip()[-500:]}")
        return LoadResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def pick_client(choice: str, processes: Processes, threads: int, connections: int) -> Client:
    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise BenchError("wrk is not installed (Debian: apt-get install -y wrk)")
    if wrk and choice in ("auto", "wrk"):
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr).strip().splitlines()
        version = first[0].split(" Copyright")[0].strip() if first else "wrk"
        return Client("wrk", version, processes, threads, connections)
    import httpx

    version = f"httpx {httpx.__version__} (one thread per connection)"
    return Client("httpx", version, processes, threads, connections)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    unit: str
    dgml: list[float]
    base: list[float]
    goal: float
    baseline: str
    extra: dict = field(default_factory=dict)

    @property
    def dgml_median(self) -> float:
        return statistics.median(self.dgml)

    @property
    def base_median(self) -> float:
        return statistics.median(self.base)

    @property
    def ratio(self) -> float:
        return self.dgml_median / self.base_median if self.base_median else 0.0

    @property
    def status(self) -> str:
        return "OK" if self.ratio >= self.goal else "BELOW"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "unit": self.unit,
            "baseline": self.baseline,
            "dgml": {
                "median": round(self.dgml_median, 2),
                "runs": [round(v, 2) for v in self.dgml],
            },
            "baseline_figures": {
                "median": round(self.base_median, 2),
                "runs": [round(v, 2) for v in self.base],
            },
            "ratio": round(self.ratio, 3),
            "goal": self.goal,
            "status": self.status,
            **{key: value for key, value in self.extra.items() if key != "summary"},
        }


def dgml_command() -> list[str]:
    beside = Path(sys.executable).parent / "dgml"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dgml")
    if found:
        return [found]
    raise BenchError("no dgml command found: install the project (pip install -e .)")


def measure_downloads(
    client: Client, dgml_port: int, bare_port: int, args: argparse.Namespace
) -> list[Figure]:
    base_path = f"/api/v1/designs/{OWNER}/{DESIGN}/versions/1"
    targets = [
        ("version metadata GET", base_path),
        ("1 MiB download", f"{base_path}/files/{SMALL_FILE}"),
        ("50 MiB download", f"{base_path}/files/{LARGE_FILE}"),
    ]
    servers = {"dgml": dgml_port, "bare": bare_port}
    runs: dict[tuple[str, str], list[LoadResult]] = {}
    for label, path in targets:
        for server, port in servers.items():
            client.load(f"http://{HOST}:{port}{path}", args.warmup)
            log(f"  warmed up {label} on {server}")
    for round_no in range(args.rounds):
        order = list(servers.items()) if round_no % 2 == 0 else list(servers.items())[::-1]
        for label, path in targets:
            for server, port in order:
                result = client.load(f"http://{HOST}:{port}{path}", args.duration)
                runs.setdefault((label, server), []).append(result)
                log(
                    f"  round {round_no + 1}/{args.rounds} {label:<21} {server:<4} "
                    f"{result.rate:9.1f} /s  p50 {fmt_ms(result.p50_ms)}  errors {result.errors}"
                )
    figures = []
    for label, _path in targets:
        dgml_runs, bare_runs = runs[(label, "dgml")], runs[(label, "bare")]
        errors = sum(r.errors for r in dgml_runs + bare_runs)
        figures.append(
            Figure(
                name=label,
                unit="req/s",
                dgml=[r.rate for r in dgml_runs],
                base=[r.rate for r in bare_runs],
                goal=DOWNLOAD_GOAL,
                baseline="bare FastAPI route serving the same bytes from memory",
                extra={
                    "p50_ms": {
                        "dgml": median_or_none([r.p50_ms for r in dgml_runs]),
                        "baseline": median_or_none([r.p50_ms for r in bare_runs]),
                    },
                    "mib_per_s": {
                        "dgml": round(statistics.median(r.mib_per_s for r in dgml_runs), 1),
                        "baseline": round(statistics.median(r.mib_per_s for r in bare_runs), 1),
                    },
                    "errors": errors,
                },
            )
        )
    return figures


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def fmt_ms(value: float | None) -> str:
    return f"{value:7.2f} ms" if value is not None else "      ? ms"


def post_body(port: int, path: str, data: bytes) -> float:
    """POST ``data`` as the whole body; returns the wall time until the answer was read."""
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        started = time.perf_counter()
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        conn.send(data)
        response = conn.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(f"POST {path} answered {response.status}: {answer[:300]!r}")
    return elapsed


def measure_uploads(
    port: int, token: str, data_dir: Path, args: argparse.Namespace, hub_pid: int, bare_port: int
) -> Figure:
    def push_fresh(data: bytes) -> float:
        elapsed, version = push(port, token, [(f"upload/{uuid.uuid4().hex}.bin", data)])
        if version["files"][0]["sha256"] != hashlib.sha256(data).hexdigest():
            raise BenchError("the registry stored other bytes than those pushed")
        return elapsed

    runs = uploads.measure(
        push_fresh,
        lambda path, data: post_body(bare_port, path, data),
        data_dir / "bench-disk",
        args.upload_reps,
        hub_pid,
        log,
    )
    shutil.rmtree(data_dir / "bench-disk", ignore_errors=True)
    return Figure(
        name="50 MiB upload (push)",
        unit="MiB/s",
        dgml=runs.rates["upload"],
        base=runs.rates["disk"],
        goal=UPLOAD_GOAL,
        baseline="write + flush + fsync of the same bytes in the same data dir",
        extra={
            "hub_cpu_ms_per_push": round(statistics.mean(runs.hub_cpu_ms), 1),
            "floors": runs.floors(),
            "summary": uploads.summary(runs, UPLOAD_GOAL),
        },
    )


def print_table(
    figures: list[Figure], client: Client, args: argparse.Namespace, load: tuple[float, float]
) -> None:
    header = (
        f"{'figure':<22} {'unit':>6} {'dgml':>10} {'baseline':>10} {'ratio':>6} {'goal':>6}  status"
    )
    print()
    threads = f", {args.threads} threads" if client.kind == "wrk" else ""
    if args.uploads_only:
        print(f"dgml registry benchmark, uploads only: {args.upload_reps} x 50 MiB (medians)")
    else:
        print(
            f"dgml registry benchmark: {client.version}, {args.connections} connections{threads}, "
            f"{args.duration:g} s x {args.rounds} rounds per figure (medians); "
            f"uploads: {args.upload_reps} x 50 MiB"
        )
    print(
        f"goals: metadata and downloads >= {DOWNLOAD_GOAL} of the bare FastAPI route; "
        f"uploads >= {UPLOAD_GOAL} of write+fsync to disk"
    )
    print()
    print(header)
    print("-" * len(header))
    for fig in figures:
        print(
            f"{fig.name:<22} {fig.unit:>6} {fig.dgml_median:>10.1f} {fig.base_median:>10.1f} "
            f"{fig.ratio:>6.2f} {'>=' + str(fig.goal):>6}  {fig.status}"
        )
    print()
    for fig in figures:
        for line in fig.extra.get("summary", []):
            print(line)
    print()
    print("baselines: downloads - a bare FastAPI app under the same uvicorn settings answering")
    print("the same bytes from memory; upload - writing the same bytes to a file in the data")
    print("dir with flush and fsync; floors - routes of that bare app reading the body.")
    cpus = os.cpu_count() or 1
    print(f"load average (1 min) before/after: {load[0]:.2f}/{load[1]:.2f} on {cpus} CPUs")
    if client.kind == "httpx" and not args.uploads_only:
        print("note: without wrk the Python client may saturate before either server does, which")
        print("pulls every download ratio towards 1; install wrk for figures that can be trusted")
    if load[0] > cpus / 2:
        print("note: the machine was busy before the run: absolute figures are noisy")
    for fig in figures:
        if fig.extra.get("errors"):
            print(f"warning: {fig.name}: {fig.extra['errors']} failed requests in the runs")


def run(args: argparse.Namespace) -> int:
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="dgml-bench-"))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    load_before = round(os.getloadavg()[0], 2)
    try:
        client = pick_client(args.client, processes, args.threads, args.connections)
        data_dir = tmp / "data"
        data_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env["DGML_DATA_DIR"] = str(data_dir)
        dgml = dgml_command()

        dgml_port = free_port()
        log(f"starting dgml up on port {dgml_port} (data: {data_dir})")
        dgml_log = tmp / "dgml-up.log"
        hub = processes.start(
            "dgml up",
            [*dgml, "up", "--host", HOST, "--port", str(dgml_port)],
            log_path=dgml_log,
            env=env,
        )
        wait_ready(hub, dgml_port, "/readyz", dgml_log)

        created = processes.run(
            "dgml user create", [*dgml, "user", "create", OWNER], timeout=60, env=env
        )
        if created.returncode != 0 or not created.stdout.strip():
            raise BenchError(f"dgml user create failed: {created.stderr.strip()}")
        token = created.stdout.strip().splitlines()[-1]
        status, _, body = request(
            "POST",
            dgml_port,
            "/api/v1/designs",
            body=json.dumps(
                {"name": DESIGN, "title": "Bench part", "license": "CC-BY-4.0"}
            ).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        if status != 201:
            raise BenchError(f"creating the design answered {status}: {body[:300]!r}")

        log("pushing a version with a 1 MiB and a 50 MiB file")
        small, large = os.urandom(MIB), os.urandom(50 * MIB)
        _, version = push(dgml_port, token, [(SMALL_FILE, small), (LARGE_FILE, large)])
        if version["number"] != 1:
            raise BenchError(f"expected version 1, got {version['number']}")

        # The bare app gets byte-for-byte what dgml answers, at the same paths.
        base_path = f"/api/v1/designs/{OWNER}/{DESIGN}/versions/1"
        status, headers, meta = request("GET", dgml_port, base_path)
        if status != 200:
            raise BenchError(f"version metadata answered {status}")
        routes = [{"path": base_path, "media_type": headers["content-type"], "body": meta}]
        for path, data in ((SMALL_FILE, small), (LARGE_FILE, large)):
            status, headers, got = request("GET", dgml_port, f"{base_path}/files/{path}")
            if status != 200 or got != data:
                raise BenchError(f"downloading {path} gave other bytes (status {status})")
            media = headers["content-type"]
            routes.append({"path": f"{base_path}/files/{path}", "media_type": media, "body": data})
        bare_dir = tmp / "bare"
        bare_dir.mkdir()
        for i, route in enumerate(routes):
            target = bare_dir / f"body-{i}"
            target.write_bytes(route.pop("body"))
            route["file"] = str(target)
        spec = bare_dir / "routes.json"
        spec.write_text(json.dumps({"routes": routes}))
        del small, large

        bare_port = free_port()
        log(f"starting the bare FastAPI app on port {bare_port}")
        bare_log = tmp / "bare.log"
        bare = processes.start(
            "bare app",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_bare-server",
                str(spec),
                str(bare_port),
            ],
            log_path=bare_log,
        )
        wait_ready(bare, bare_port, "/healthz", bare_log)

        figures = []
        if not args.uploads_only:
            log(f"downloads with {client.version}")
            figures = measure_downloads(client, dgml_port, bare_port, args)
        log("uploads")
        figures.append(measure_uploads(dgml_port, token, data_dir, args, hub.pid, bare_port))

        load_after = round(os.getloadavg()[0], 2)
        print_table(figures, client, args, (load_before, load_after))
        result = {
            "benchmark": "registry",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "client": client.version,
            "settings": {
                "connections": args.connections,
                "threads": args.threads,
                "duration_s": args.duration,
                "rounds": args.rounds,
                "upload_reps": args.upload_reps,
                "upload_size_bytes": uploads.UPLOAD_SIZE,
            },
            "goals": {"downloads_vs_bare": DOWNLOAD_GOAL, "uploads_vs_disk": UPLOAD_GOAL},
            "figures": [fig.as_dict() for fig in figures],
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {args.output}")
        return 0
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            processes.stop_all()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per target")
    parser.add_argument("--connections", type=int, default=4, help="open connections (4)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--rounds", type=int, default=3, help="dgml/bare rounds per figure (3)")
    parser.add_argument("--upload-reps", type=int, default=7, help="50 MiB pushes (7)")
    parser.add_argument(
        "--uploads-only", action="store_true", help="skip the downloads (about 20 seconds)"
    )
    parser.add_argument(
        "--client", choices=["auto", "wrk", "httpx"], default="auto", help="load generator"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    args = parser.parse_args(argv)
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["_bare-server"]:
        serve_bare(Path(argv[1]), int(argv[2]))
        return 0
    if argv[:1] == ["_httpx-client"]:
        sub = argparse.ArgumentParser()
        sub.add_argument("--url", required=True)
        sub.add_argument("--duration", type=float, required=True)
        sub.add_argument("--connections", type=int, required=True)
        opts = sub.parse_args(argv[1:])
        print(json.dumps(httpx_load(opts.url, opts.duration, opts.connections)))
        return 0
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
