"""Prometheus metrics of the hub, served at ``GET /metrics``.

Two kinds of numbers:

- Measured in the process that did the work: HTTP requests (:class:`MetricsMiddleware`, by
  method, route template and status; the template, never the raw path, keeps the number of
  series bounded), geometry checks (:data:`VALIDATION_SECONDS`, observed by
  ``registry.validation.validate_file``) and placements (:data:`PLACEMENT_SECONDS`, for the
  router to observe around one placement: ``with PLACEMENT_SECONDS.time(): ...``).
- Read at scrape time from the database and Redis (:class:`HubCollector`): RQ queue depths,
  orders by state, fablab agents online, unsent outbox messages. The database is the record,
  so these are true whichever process scrapes; a dependency that does not answer is left out
  of the scrape, and ``dgml_dependency_up`` says which one it was, so a broken Redis never
  fails the scrape itself.

Several processes: checks and placements run in RQ workers, and production runs several
uvicorn workers behind one port. With ``PROMETHEUS_MULTIPROC_DIR`` naming a directory shared by
all of them (set before they start), each process writes its counters to small files there and a
scrape sums them all (prometheus_client's multiprocess mode). Files are named by host name and
pid, so containers that share the directory (compose.yaml's ``metrics`` volume) never write to
the same file. Without the variable, a scrape shows the numbers of the API process that
answered it only.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dgml.db import utcnow
from dgml.outbox import OutboxMessage
from dgml.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A scrape waits at most this long for Redis before reporting it down.
REDIS_TIMEOUT_S = 2.0
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_JOB_REGISTRIES = (
    ("started", StartedJobRegistry),
    ("failed", FailedJobRegistry),
    ("scheduled", ScheduledJobRegistry),
    ("deferred", DeferredJobRegistry),
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _use_host_and_pid_files(directory: str) -> None:
    """Multiprocess files named ``<kind>_<host>-<pid>.db``: unique across containers too."""
    os.makedirs(directory, exist_ok=True)
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
    values.ValueClass = values.MultiProcessValue(lambda: f"{host}-{os.getpid()}")


if multiprocess_dir():
    _use_host_and_pid_files(multiprocess_dir() or "")

HTTP_REQUESTS = Counter(
    "dgml_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "dgml_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response body.",
    ["method", "route", "status"],
)
PLACEMENT_SECONDS = Histogram(
    "dgml_placement_seconds",
    "Time one placement took: candidates, filters, scores and the stored decision.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
VALIDATION_SECONDS = Histogram(
    "dgml_validation_seconds",
    "Time one geometry check of a model file took in its capped child process, by reader.",
    ["reader"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)


def route_template(scope: Scope) -> str:
    """The path template of the route that served the request ("unmatched" when none did)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status.

    A request whose handler raised is counted as a 500: that is what the client gets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope.get("method", "")
            labels = (method if method in _METHODS else "other", route_template(scope), status)
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_REQUEST_SECONDS.labels(*labels).observe(time.perf_counter() - started)


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def database_families(engine: Engine, settings: Settings) -> list[Metric]:
    """Orders by state, agents online and the outbox backlog, in one short read."""
    # Imported here: the registry imports this module for its histogram, and must not pull
    # in the router with it.
    from router.models import Fablab, Order, OrderState

    now = utcnow()
    since = now - timedelta(seconds=settings.agent_online_s)
    with engine.connect() as conn:
        by_state = dict(conn.execute(select(Order.state, func.count()).group_by(Order.state)).all())
        online = conn.execute(
            select(func.count()).select_from(Fablab).where(Fablab.last_seen_at >= since)
        ).scalar_one()
        unsent, oldest = conn.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).where(
                OutboxMessage.sent_at.is_(None)
            )
        ).one()
    orders = _gauge("dgml_orders", "Orders by state.", ["state"])
    for state in [*OrderState, *sorted(set(by_state) - set(OrderState))]:
        orders.add_metric([str(state)], by_state.get(str(state), 0))
    agents = _gauge(
        "dgml_agents_online", "Fablabs whose agent called within DGML_AGENT_ONLINE_S seconds."
    )
    agents.add_metric([], online)
    backlog = _gauge("dgml_outbox_unsent", "Outbox messages not yet handed to a queue.")
    backlog.add_metric([], unsent)
    age = _gauge(
        "dgml_outbox_oldest_unsent_age_seconds",
        "Age of the oldest unsent outbox message (0 when none waits).",
    )
    age.add_metric([], (now - oldest).total_seconds() if oldest is not None else 0.0)
    return [orders, agents, backlog, age]


def redis_families(redis: Redis) -> list[Metric]:
    """Jobs per RQ queue: waiting, and in the started, failed, scheduled and deferred
    registries; read with one round trip and without RQ's clean-ups (a scrape never writes)."""
    from dgml.worker import QUEUES

    pipe = redis.pipeline(transaction=False)
    for name in QUEUES:
        pipe.llen(Queue.redis_queue_namespace_prefix + name)
        for _state, registry in _JOB_REGISTRIES:
            pipe.zcard(registry(name, connection=redis).key)
    counts = iter(pipe.execute())
    jobs = _gauge("dgml_queue_jobs", "RQ jobs per queue and state.", ["queue", "state"])
    for name in QUEUES:
        jobs.add_metric([name, "queued"], next(counts))
        for state, _registry in _JOB_REGISTRIES:
            jobs.add_metric([name, state], next(counts))
    return [jobs]


class HubCollector:
    """Numbers read from the database and Redis when Prometheus scrapes."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = _gauge(
            "dgml_dependency_up",
            "1 when the dependency answered this scrape, else 0.",
            ["dependency"],
        )
        try:
            families = database_families(self.engine, self.settings)
        except (SQLAlchemyError, OSError):
            families = []
        up.add_metric(["database"], 1 if families else 0)
        yield from families
        if self.settings.redis_url:
            try:
                with Redis.from_url(
                    self.settings.redis_url,
                    socket_timeout=REDIS_TIMEOUT_S,
                    socket_connect_timeout=REDIS_TIMEOUT_S,
                ) as redis:
                    families = redis_families(redis)
            except (RedisError, OSError):
                families = []
            up.add_metric(["redis"], 1 if families else 0)
            yield from families
        yield up


class _ThisProcess:
    """The default registry's metrics (this process's), forwarded into a scrape's registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def scrape_registry(settings: Settings, engine: Engine) -> CollectorRegistry:
    """What one scrape shows: the measured metrics (of every process in multiprocess mode,
    else of this one) and the hub's numbers read now."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ThisProcess())
    registry.register(HubCollector(settings, engine))
    return registry


def render(settings: Settings, engine: Engine, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(scrape_registry(settings, engine)), content_type


router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, checks, placements, queues, orders, agents, outbox."""
    services = request.app.state.services
    body, content_type = await run_in_threadpool(
        render, services.settings, services.engine, request.headers.get("accept")
    )
    return Response(body, media_type=content_type)


@contextlib.contextmanager
def shared_dir_for(processes: int) -> Iterator[None]:
    """For several server processes without ``PROMETHEUS_MULTIPROC_DIR``: a temporary one,
    set for the processes started inside the block and removed after them, so that every scrape
    shows the sum of all of them whichever process answers it."""
    if processes <= 1 or multiprocess_dir():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dgml-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield
        finally:
            os.environ.pop(MULTIPROC_ENV, None)
