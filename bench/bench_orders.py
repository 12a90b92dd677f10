"""Sustained orders per second, from POST to the offer an agent sees, against a no-op RQ ceiling.

Run from the project root (about 2 minutes):

    .venv/bin/python bench/bench_orders.py
    .venv/bin/python bench/bench_orders.py --seconds 30 --clients 32 --route-workers 2 \\
        --api-workers 2 --db sqlite --output /tmp/orders.json

What runs, all on this machine, started here and stopped at the end:

- a redis-server of its own on a free port (no persistence);
- the database: a fresh PostgreSQL database on DGML_BENCH_POSTGRES_URL's server (default
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped at the end, or ``--db sqlite``;
- the API (``uvicorn dgml.app:create_app --factory --workers N``), ``--route-workers`` processes of
  ``dgml worker --queue route``, and a burst validation worker for the design's report;
- the directory: the 129 French fablabs of tests/data/fablabs-fr.json with plausible machines
  (router.fablabs_seed), each enrolled as an agent through the API;
- one design (a 20 mm cube STL) pushed and validated (its report passes).

**Orders.** ``--clients`` concurrent makers post orders (FDM, PLA, one part, personal use) from
French cities with a few km of jitter, each with its own Idempotency-Key, as fast as answers
come, for ``--seconds``. An agent task per fablab long-polls ``claim`` and accepts what it
gets, as a fablab's agent does. An order's latency is from the start of its POST to the first
claim response that holds its offer; the throughput is the orders whose offer was seen, per
second of the measured window (after ``--warmup`` seconds).

**Ceiling.** The same number of RQ SimpleWorker processes on a queue of their own, with the same
JSON serializer, performing a no-op job (``os.getpid``), while ``--clients`` threads enqueue as
fast as they can for the same time: jobs performed per second and the latency from enqueue to
the job's end. It is what RQ alone does on this machine in the same run, before any HTTP,
database or placement work.

Goals of the router issue: >= 500 orders/s with p99 <= 250 ms, and >= 0.5 of the ceiling. The
table goes to stdout and the figures as JSON to ``--output``; the exit code is 0 whatever the
figures are, 1 when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_registry import BenchError, Processes, free_port, log, tail

ROOT = Path(__file__).resolve().parent.parent
FABLABS = ROOT / "tests" / "data" / "fablabs-fr.json"
CUBE = ROOT / "tests" / "data" / "20mm-xyz-cube.stl"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "orders.json"
POSTGRES = os.environ.get(
    "DGML_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GOAL_RATE, GOAL_P99_MS, GOAL_RATIO = 500.0, 250.0, 0.5
# Makers' cities: (name, lat, lon).
CITIES = (
    ("Paris", 48.8566, 2.3522),
    ("Lyon", 45.7640, 4.8357),
    ("Marseille", 43.2965, 5.3698),
    ("Toulouse", 43.6047, 1.4442),
    ("Lille", 50.6292, 3.0573),
    ("Bordeaux", 44.8378, -0.5792),
    ("Nantes", 47.2184, -1.5536),
    ("Strasbourg", 48.5734, 7.7521),
    ("Rennes", 48.1173, -1.6778),
    ("Grenoble", 45.1885, 5.7245),
)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- set-up -----------------------------------------------------------------------------------


def start_redis(processes: Processes, workdir: Path) -> str:
    from dgml.embedded import find_redis_server

    port = free_port()
    log_path = workdir / "redis.log"
    args = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    processes.start(
        "redis", [*args, "--appendonly", "no", "--dir", str(workdir)], log_path=log_path
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            Redis.from_url(url).ping()
            return url
        except Exception:
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server did not start:\n{tail(log_path)}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def database(kind: str, workdir: Path):
    """A fresh, migrated database URL; a PostgreSQL one is dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from dgml.db import make_engine, migrate

    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'dgml.sqlite3'}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        return
    admin_url = make_url(POSTGRES)
    name = f"dgml_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise BenchError(f"cannot create a database on {POSTGRES}: {exc}") from None
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def prepare_directory(database_url: str, redis_url: str) -> tuple[str, dict[str, str]]:
    """A maker's token and the fablabs' enrolment tokens."""
    from dgml.db import make_engine, make_sessionmaker, write_session
    from registry import accounts
    from router.fablabs_seed import load_listings, seed

    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    try:
        with write_session(sessions) as session:
            user = accounts.create_user(session, "maker")
            token = accounts.issue_token(session, user)
        redis = Redis.from_url(redis_url)
        enrolment = seed(sessions, load_listings(FABLABS), redis=redis)
        redis.close()
    finally:
        engine.dispose()
    return token, enrolment


def push_design(api: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as client:
        created = client.post(
            "/api/v1/designs", json={"name": "cube", "title": "Cube", "license": "CC-BY-4.0"}
        )
        if created.status_code != 201:
            raise BenchError(f"creating the design answered {created.status_code}: {created.text}")
        pushed = client.post(
            "/api/v1/designs/maker/cube/versions",
            files=[("files", ("cube.stl", CUBE.read_bytes()))],
            data={"message": "a cube"},
        )
        if pushed.status_code != 201:
            raise BenchError(f"the push answered {pushed.status_code}: {pushed.text}")


def verdict(api: str) -> str:
    answer = httpx.get(f"{api}/api/v1/designs/maker/cube/versions/1", timeout=30)
    return answer.json()["verdict"]


def enrol(api: str, enrolment: dict[str, str]) -> dict[str, str]:
    agents = {}
    with httpx.Client(base_url=api, timeout=30) as client:
        for fablab_id, token in enrolment.items():
            answer = client.post("/api/v1/agent/enroll", json={"enrolment_token": token})
            if answer.status_code != 200:
                raise BenchError(f"enrolling {fablab_id} answered {answer.status_code}")
            agents[fablab_id] = answer.json()["agent_token"]
    return agents


# --- the order run ----------------------------------------------------------------------------


class OrderRun:
    def __init__(self, api: str, token: str, agents: dict[str, str], clients: int) -> None:
        self.api = api
        self.token = token
        self.agents = agents
        self.clients = clients
        self.posted: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self.errors: list[str] = []
        self.stop = False
        self.rng = random.Random(7)

    def order_body(self) -> dict:
        _, lat, lon = self.rng.choice(CITIES)
        return {
            "design": "maker/cube",
            "version": 1,
            "process": "fdm",
            "material": "pla",
            "quantity": 1,
            "location": {
                "lat": lat + self.rng.uniform(-0.05, 0.05),
                "lon": lon + self.rng.uniform(-0.05, 0.05),
            },
            "purpose": "personal",
        }

    async def maker(self, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self.stop:
            started = time.perf_counter()
            answer = await client.post(
                "/api/v1/orders",
                json=self.order_body(),
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            )
            if answer.status_code != 201:
                self.errors.append(f"POST /orders {answer.status_code}: {answer.text[:200]}")
                await asyncio.sleep(0.05)
                continue
            self.posted[answer.json()["id"]] = started

    async def agent(self, client: httpx.AsyncClient, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while not self.stop:
            try:
                answer = await client.post(
                    "/api/v1/agent/claim", params={"wait": 20}, headers=headers
                )
            except httpx.HTTPError as exc:
                self.errors.append(f"claim: {type(exc).__name__}")
                continue
            if answer.status_code == 204:
                continue
            if answer.status_code != 200:
                self.errors.append(f"claim {answer.status_code}: {answer.text[:200]}")
                await asyncio.sleep(0.5)
                continue
            now = time.perf_counter()
            for offer in answer.json()["offers"]:
                self.seen.setdefault(offer["order_id"], now)
                # Take it, as an agent does, so that the next claim does not list it again.
                await client.post(
                    f"/api/v1/agent/offers/{offer['id']}/accept",
                    headers={**headers, "Idempotency-Key": f"bench-{offer['id']}"},
                )

    async def run(self, seconds: float, grace: float) -> float:
        limits = httpx.Limits(max_connections=self.clients + len(self.agents) + 8)
        timeout = httpx.Timeout(30.0)
        async with httpx.AsyncClient(base_url=self.api, limits=limits, timeout=timeout) as client:
            agents = [asyncio.create_task(self.agent(client, t)) for t in self.agents.values()]
            await asyncio.sleep(3)  # every agent is waiting in a claim
            started = time.perf_counter()
            makers = [asyncio.create_task(self.maker(client)) for _ in range(self.clients)]
            await asyncio.sleep(seconds)
            ended = time.perf_counter()
            for task in makers:
                task.cancel()
            await asyncio.gather(*makers, return_exceptions=True)
            deadline = time.perf_counter() + grace
            while time.perf_counter() < deadline and set(self.posted) - set(self.seen):
                await asyncio.sleep(0.2)
            self.stop = True
            for task in agents:
                task.cancel()
            await asyncio.gather(*agents, return_exceptions=True)
        self.window = (started, ended)
        return ended - started

    def figures(self, warmup: float) -> dict:
        start, end = self.window
        measured_from = start + warmup
        seen_in_window = [t for t in self.seen.values() if measured_from <= t <= end]
        latencies = [
            (self.seen[i] - t) * 1000
            for i, t in self.posted.items()
            if i in self.seen and t >= measured_from
        ]
        return {
            "orders_posted": len(self.posted),
            "offers_seen": len(self.seen),
            "never_seen": len(set(self.posted) - set(self.seen)),
            "rate_per_s": len(seen_in_window) / max(1e-9, end - measured_from),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
        }


# --- the ceiling ------------------------------------------------------------------------------

WORKER = """
import sys
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
redis = Redis.from_url(sys.argv[1])
queue = Queue("bench-noop", connection=redis, serializer=JSONSerializer)
SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(logging_level="WARNING")
"""


def ceiling(
    processes: Processes, workdir: Path, redis_url: str, workers: int, clients: int, seconds: float
) -> dict:
    from rq import Queue
    from rq.serializers import JSONSerializer

    procs = [
        processes.start(
            f"noop-worker-{n}",
            [sys.executable, "-c", WORKER, redis_url],
            log_path=workdir / f"noop-{n}.log",
        )
        for n in range(workers)
    ]
    time.sleep(1.5)
    enqueued: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def enqueue() -> None:
        redis = Redis.from_url(redis_url)
        queue = Queue("bench-noop", connection=redis, serializer=JSONSerializer)
        while not stop.is_set():
            job_id = uuid.uuid4().hex
            started = time.time()
            queue.enqueue_call("os.getpid", job_id=job_id, result_ttl=600)
            with lock:
                enqueued[job_id] = started
        redis.close()

    threads = [threading.Thread(target=enqueue) for _ in range(clients)]
    began = time.time()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    ended = time.time()
    time.sleep(2)
    for proc in procs:
        processes.stop(proc)
    from rq.job import Job

    redis = Redis.from_url(redis_url)
    latencies, done_in_window = [], 0
    ids = list(enqueued)
    for start in range(0, len(ids), 500):
        for job in Job.fetch_many(ids[start : start + 500], connection=redis):
            if job is None or job.ended_at is None:
                continue
            finished = job.ended_at.timestamp()
            latencies.append((finished - enqueued[job.id]) * 1000)
            if finished <= ended:
                done_in_window += 1
    redis.close()
    return {
        "jobs_enqueued": len(enqueued),
        "rate_per_s": done_in_window / (ended - began),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


# --- main -------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    return "?" if value is None else f"{value:.1f}{unit}"


def run(args: argparse.Namespace) -> int:
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="dgml-bench-orders-"))
    try:
        redis_url = start_redis(processes, workdir)
        with database(args.db, workdir) as database_url:
            token, enrolment = prepare_directory(database_url, redis_url)
            port = free_port()
            api = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "DGML_DATA_DIR": str(workdir / "data"),
                "DGML_DATABASE_URL": database_url,
                "DGML_REDIS_URL": redis_url,
                # Agents claim the whole time; offers are accepted at once.
                "DGML_AGENT_ONLINE_S": "3600",
                "DGML_LOG_LEVEL": "warning",
            }
            log(f"API ({args.api_workers} processes) on {api}, database {args.db}")
            server = processes.start(
                "api",
                [
                    sys.executable, "-m", "uvicorn", "dgml.app:create_app", "--factory",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(args.api_workers), "--log-level", "warning",
                    "--no-access-log",
                ],
                log_path=workdir / "api.log",
                env=env,
            )  # fmt: skip
            deadline = time.monotonic() + 90
            while True:
                if server.poll() is not None:
                    raise BenchError(f"the API exited:\n{tail(workdir / 'api.log')}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"the API was not ready:\n{tail(workdir / 'api.log')}")
                time.sleep(0.2)
            push_design(api, token)
            dgml = [sys.executable, "-m", "dgml"]
            done = processes.run(
                "validate", [*dgml, "worker", "--queue", "validate", "--burst"], timeout=300,
                env=env,
            )  # fmt: skip
            if verdict(api) != "pass":
                raise BenchError(f"the design's report is not 'pass':\n{done.stderr[-2000:]}")
            agents = enrol(api, enrolment)
            log(f"{len(agents)} fablab agents enrolled; {args.route_workers} route workers")
            for n in range(args.route_workers):
                processes.start(
                    f"route-{n}",
                    [*dgml, "worker", "--queue", "route"],
                    log_path=workdir / f"route-{n}.log",
                    env=env,
                )
            time.sleep(2)
            log(f"orders: {args.clients} makers for {args.seconds:.0f} s")
            orders = OrderRun(api, token, agents, args.clients)
            asyncio.run(orders.run(args.seconds, grace=10))
            order_figures = orders.figures(args.warmup)
            for name, proc in list(processes.running):
                if name.startswith(("route-", "api")):
                    processes.stop(proc)
            log(f"ceiling: {args.route_workers} no-op RQ workers, {args.clients} enqueuers")
            ceiling_figures = ceiling(
                processes, workdir, redis_url, args.route_workers, args.clients, args.seconds
            )
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        return 1
    finally:
        processes.stop_all()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    ratio = order_figures["rate_per_s"] / max(1e-9, ceiling_figures["rate_per_s"])
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": vars(args) | {"output": str(args.output)},
        "orders": order_figures,
        "ceiling": ceiling_figures,
        "ratio": ratio,
        "goals": {"rate_per_s": GOAL_RATE, "p99_ms": GOAL_P99_MS, "ratio": GOAL_RATIO},
    }
    print()
    print(f"{'':28}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    o, c = order_figures, ceiling_figures
    print(f"{'orders, POST to offer seen':28}{o['rate_per_s']:10.1f}{fmt(o['p50_ms']):>10}"
          f"{fmt(o['p99_ms']):>10}")  # fmt: skip
    print(f"{'no-op RQ ceiling':28}{c['rate_per_s']:10.1f}{fmt(c['p50_ms']):>10}"
          f"{fmt(c['p99_ms']):>10}")  # fmt: skip
    print(
        f"ratio {ratio:.2f} (goal >= {GOAL_RATIO}); rate goal {GOAL_RATE:.0f}/s, p99 goal "
        f"{GOAL_P99_MS:.0f} ms; {o['orders_posted']} orders posted, {o['never_seen']} never "
        f"seen, {o['errors']} errors"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"figures written to {args.output}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured run (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not counted (3)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent makers (32)")
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn processes (2)")
    parser.add_argument("--route-workers", type=int, default=2, help="route workers (2)")
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.seconds <= args.warmup:
        parser.error("--seconds must be longer than --warmup")
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
