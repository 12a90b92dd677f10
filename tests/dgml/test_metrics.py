"""GET /metrics: request counts by route template, check times, queue depths, orders by state,
agents online and the outbox backlog; a scrape still answers when Redis or the database is away."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import select

from dgml import outbox
from dgml.app import create_app
from dgml.db import make_engine, make_sessionmaker, utcnow, write_session
from dgml.settings import Settings
from dgml.worker import QUEUES
from registry.models import Design, Version
from router.models import Fablab, Order
from tests.conftest import free_port, mesh
from tests.registry.calls import created, pushed


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scrape's samples by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _add_orders(settings: Settings, states: list[str]) -> None:
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    with write_session(sessions) as session:
        design = session.scalars(select(Design)).one()
        version = session.scalars(select(Version)).one()
        for number, state in enumerate(states):
            session.add(
                Order(
                    owner_id=design.owner_id,
                    idempotency_key=f"order-{number}",
                    request_hash="0" * 64,
                    design_id=design.id,
                    version_id=version.id,
                    process="fdm",
                    material="PLA",
                    quantity=1,
                    lat=48.86,
                    lon=2.35,
                    purpose="personal",
                    state=state,
                )
            )
    engine.dispose()


def _add_fablabs_and_a_stuck_message(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    now = utcnow()
    seen = {"lab-now": now, "lab-stale": now - timedelta(hours=1), "lab-never": None}
    with write_session(make_sessionmaker(engine)) as session:
        for lab, last_seen in seen.items():
            session.add(
                Fablab(
                    id=lab,
                    name=lab,
                    lat=45.0,
                    lon=5.0,
                    legal_form="association",
                    last_seen_at=last_seen,
                )
            )
        session.add(
            outbox.OutboxMessage(
                topic="geometry.validate",
                key="stuck",
                payload={},
                created_at=now - timedelta(hours=2),
            )
        )
    engine.dispose()


def test_metrics_after_a_request_a_push_and_orders(client, alice, run_jobs, settings):
    # Measured metrics belong to the process and count up over the whole test run: compare.
    before = scrape(client)
    created(client, alice, "bracket")
    pushed(client, alice, "alice/bracket", [("cube.stl", mesh("20mm-xyz-cube.stl"))])
    run_jobs()
    _add_orders(settings, ["accepted", "accepted", "routing", "completed", "cancelled"])
    _add_fablabs_and_a_stuck_message(settings)
    assert client.get("/api/v1/designs/alice/bracket").status_code == 200
    assert client.get("/api/v1/designs/alice/nothing-here").status_code == 404

    samples = scrape(client)

    def grown(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - (value(before, name, **labels) or 0)

    route = "/api/v1/designs/{owner}/{name}"
    assert grown("dgml_http_requests_total", method="GET", route=route, status="200") == 1
    assert grown("dgml_http_requests_total", method="GET", route=route, status="404") == 1
    assert (
        grown("dgml_http_request_duration_seconds_count", method="GET", route=route, status="200")
        == 1
    )
    assert not any("alice/bracket" in dict(labels).get("route", "") for _, labels in samples)
    assert grown("dgml_validation_seconds_count", reader="stl") == 1
    assert value(samples, "dgml_placement_seconds_count") is not None
    assert value(samples, "dgml_orders", state="accepted") == 2
    assert value(samples, "dgml_orders", state="routing") == 1
    assert value(samples, "dgml_orders", state="completed") == 1
    assert value(samples, "dgml_orders", state="cancelled") == 1
    assert value(samples, "dgml_orders", state="offered") == 0
    assert value(samples, "dgml_agents_online") == 1
    assert value(samples, "dgml_outbox_unsent") == 1
    assert value(samples, "dgml_outbox_oldest_unsent_age_seconds") >= 7200
    assert value(samples, "dgml_dependency_up", dependency="database") == 1
    assert value(samples, "dgml_dependency_up", dependency="redis") == 1
    for queue in QUEUES:
        assert value(samples, "dgml_queue_jobs", queue=queue, state="queued") == 0


def test_unmatched_paths_share_one_label(client):
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    before = value(scrape(client), "dgml_http_requests_total", **labels) or 0
    for path in ("/no/such/thing", "/another/unknown/path"):
        assert client.get(path).status_code == 404
    samples = scrape(client)
    assert value(samples, "dgml_http_requests_total", **labels) == before + 2
    assert not any("/no/such" in dict(labels).get("route", "") for _, labels in samples)


def test_queue_depths_count_waiting_and_failed_jobs(client, redis_client):
    validate = outbox.queue(redis_client, "validate")
    for n in range(3):
        validate.enqueue_call("registry.validation.validate_file", kwargs={"n": n})
    build = outbox.queue(redis_client, "build")
    build.enqueue_call("dgml.no_such_module.no_such_function")
    SimpleWorker([build], connection=redis_client, serializer=JSONSerializer).work(
        burst=True, logging_level="WARNING"
    )

    samples = scrape(client)

    assert value(samples, "dgml_queue_jobs", queue="validate", state="queued") == 3
    assert value(samples, "dgml_queue_jobs", queue="build", state="queued") == 0
    assert value(samples, "dgml_queue_jobs", queue="build", state="failed") == 1
    assert value(samples, "dgml_queue_jobs", queue="validate", state="failed") == 0


def test_a_scrape_with_redis_down_still_answers(settings):
    away = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(away)) as client:
        samples = scrape(client)
    assert value(samples, "dgml_dependency_up", dependency="redis") == 0
    assert value(samples, "dgml_dependency_up", dependency="database") == 1
    assert value(samples, "dgml_orders", state="accepted") == 0
    assert not any(name == "dgml_queue_jobs" for name, _ in samples)


def test_a_scrape_with_the_database_down_still_answers(tmp_path, redis_client, redis_url):
    nobody = f"postgresql+psycopg://dgml@127.0.0.1:{free_port()}/dgml"  # nothing listens there
    settings = Settings(data_dir=tmp_path, database_url=nobody, redis_url=redis_url)
    with TestClient(create_app(settings, run_migrations=False)) as client:
        samples = scrape(client)
        assert client.get("/readyz").status_code == 503
    assert value(samples, "dgml_dependency_up", dependency="database") == 0
    assert value(samples, "dgml_dependency_up", dependency="redis") == 1
    assert value(samples, "dgml_queue_jobs", queue="validate", state="queued") == 0
    assert not any(name == "dgml_orders" for name, _ in samples)


def test_openmetrics_is_served_when_asked_for(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


OBSERVE = """
from dgml.metrics import HTTP_REQUESTS, VALIDATION_SECONDS
for _ in range({n}):
    VALIDATION_SECONDS.labels(reader="stl").observe(0.3)
HTTP_REQUESTS.labels("GET", "/healthz", "200").inc({n})
"""
SCRAPE = """
import sys
from dgml.db import make_engine
from dgml.metrics import render
from dgml.settings import Settings
settings = Settings()
sys.stdout.write(render(settings, make_engine(settings.resolved_database_url), None)[0].decode())
"""


def test_several_processes_add_up_in_one_scrape(tmp_path, settings):
    shared = tmp_path / "metrics"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "DGML_DATABASE_URL": settings.resolved_database_url,
        "DGML_REDIS_URL": str(settings.redis_url),
    }

    def python(code: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    python(OBSERVE.format(n=3))
    python(OBSERVE.format(n=2))
    assert len(list(shared.glob("histogram_*.db"))) == 2  # one file per process
    samples = {}
    for family in text_string_to_metric_families(python(SCRAPE)):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    assert value(samples, "dgml_validation_seconds_count", reader="stl") == 5
    assert value(samples, "dgml_validation_seconds_sum", reader="stl") == pytest.approx(1.5)
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(samples, "dgml_http_requests_total", **labels) == 5
    assert value(samples, "dgml_dependency_up", dependency="database") == 1
