"""Nothing accepted is lost: Redis away when the order comes, Redis flushed before the worker
runs, a worker killed in the middle. Each time the order reaches the end it reaches without the
fault: an offer at the fablab the placement picks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from rq import SimpleWorker
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import select

from dgml import outbox
from dgml.app import create_app
from dgml.outbox import OutboxMessage
from dgml.worker import enqueue_due, enqueue_periodic, tick
from router import geo
from router.lifecycle import PLACE_TOPIC
from router.models import Offer, OfferState, OrderLine
from router.reconcile import LOST, reconcile
from tests.conftest import free_port
from tests.registry.calls import API
from tests.router.test_orders_support import (
    hub_fixture,  # noqa: F401  (the hub fixture)
    north,
    order_body,
)

LASER = {"process": "laser", "materials": ["plywood-3mm"], "build_volume_mm": [600, 400, 10]}


def _labs(hub) -> None:
    hub.add_lab("laser-only", north(1), [LASER])
    hub.add_lab("printer", north(3))
    hub.add_lab("further", north(9))


def _dry_run_winner(hub) -> str:
    response = hub.client.post(
        f"{API}/orders?dry_run=true", json=order_body(), headers=hub.alice.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["decision"]["winner"]["fablab_id"]


def _offers(hub) -> list[tuple[str, str]]:
    with hub.sessions() as session:
        return [(o.fablab_id, o.state) for o in session.scalars(select(Offer).order_by(Offer.id))]


def _line(hub, order_id: int) -> OrderLine:
    with hub.sessions() as session:
        return session.scalars(select(OrderLine).where(OrderLine.order_id == order_id)).one()


def _unsent(hub) -> list[dict]:
    """Payloads of placements the outbox has not handed over."""
    with hub.sessions() as session:
        return list(
            session.scalars(
                select(OutboxMessage.payload).where(
                    OutboxMessage.topic == PLACE_TOPIC, OutboxMessage.sent_at.is_(None)
                )
            )
        )


def _serve(hub, *queues: str) -> None:
    """Run what is queued, without handing the outbox over first."""
    SimpleWorker(
        [outbox.queue(hub.redis, q) for q in queues],
        connection=hub.redis,
        serializer=JSONSerializer,
    ).work(burst=True, logging_level="WARNING")


def test_an_order_taken_while_redis_is_away_is_placed_once_it_is_back(hub):
    _labs(hub)
    hub.design()
    hub.work()
    expected = _dry_run_winner(hub)
    away = hub.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(away)) as client:
        headers = {**hub.alice.headers, "Idempotency-Key": "while-away"}
        response = client.post(f"{API}/orders", json=order_body(), headers=headers)
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]
    line_id = _line(hub, order_id).id
    assert _unsent(hub) == [{"line_id": line_id, "attempt": 1}]

    # Redis is back: a worker's housekeeping hands the message over, a worker places it.
    deadline = time.monotonic() + 10
    while _unsent(hub):
        assert time.monotonic() < deadline, "the outbox was not handed over"
        time.sleep(0.05)
        tick(hub.context, hub.redis, "test-worker", 1)
    _serve(hub, "route")
    order = hub.get(order_id)
    assert order["state"] == "offered"
    assert order["lines"][0]["fablab"]["id"] == expected == "printer"


def test_after_a_flush_the_reconciler_places_the_order_at_the_same_fablab(hub):
    _labs(hub)
    hub.design()
    hub.work()
    expected = _dry_run_winner(hub)
    posted = hub.ordered()
    assert hub.redis.llen("rq:queue:route") == 1  # handed over when the order was taken
    hub.redis.flushdb()
    hub.work("route")  # nothing left to run: the job went with the flush
    line = _line(hub, posted["id"])
    assert (line.state, line.attempt) == ("routing", 1)

    # The periodic work of any worker runs the reconciler, which posts the placement again.
    enqueue_periodic(hub.redis, hub.settings)
    _serve(hub, "route")
    assert hub.redis.exists(geo.KEY)  # the geo index came back from the database
    order = hub.get(posted["id"])
    assert order["state"] == "offered"
    assert order["lines"][0]["fablab"]["id"] == expected == "printer"
    assert order["lines"][0]["attempt"] == 2
    routing = [e for e in order["events"] if e["kind"] == "routing"]
    assert [e["data"]["reason"] for e in routing] == ["new order", LOST]
    assert _offers(hub) == [("printer", OfferState.OPEN)]


def test_a_flush_while_the_report_is_pending_loses_neither_check_nor_placement(hub):
    _labs(hub)
    hub.design()  # its check is queued
    posted = hub.ordered()
    hub.redis.flushdb()  # the check and the placement are both gone
    line = _line(hub, posted["id"])
    assert reconcile(hub.sessions, hub.redis, hub.settings) == [line.id]
    hub.work("route")  # waits for the report, and posts the lost check again
    assert hub.redis.llen("rq:queue:validate") == 1
    hub.work("validate")
    hub.run_due()
    hub.work("route")
    order = hub.get(posted["id"])
    assert order["state"] == "offered"
    assert order["lines"][0]["fablab"]["id"] == "printer"


def test_the_reconciler_leaves_lines_with_work_alone(hub):
    _labs(hub)
    hub.design()
    posted = hub.ordered()
    assert reconcile(hub.sessions, hub.redis, hub.settings) == []  # its job is queued
    hub.work("route")  # the report is pending: a retry is scheduled
    assert reconcile(hub.sessions, hub.redis, hub.settings) == []
    hub.work("validate")
    hub.run_due()
    hub.work("route")
    assert hub.get(posted["id"])["state"] == "offered"
    assert reconcile(hub.sessions, hub.redis, hub.settings) == []
    assert _line(hub, posted["id"]).attempt == 1


def test_the_reconciler_leaves_a_line_changed_within_its_grace_alone(hub):
    _labs(hub)
    hub.design()
    posted = hub.ordered()
    hub.redis.flushdb()
    patient = hub.settings.model_copy(update={"reconcile_grace_s": 3600.0})
    assert reconcile(hub.sessions, hub.redis, patient) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    assert reconcile(hub.sessions, hub.redis, patient, now=later) == [_line(hub, posted["id"]).id]


def test_periodic_work_is_enqueued_once_per_slot_however_many_workers(hub):
    now = 1_000_000.0
    first = enqueue_periodic(hub.redis, hub.settings, now)
    assert first == [f"sweeps-{int(now // 5)}", f"reconcile-{int(now // 10)}"]
    assert enqueue_periodic(hub.redis, hub.settings, now + 0.5) == []  # another worker
    assert enqueue_periodic(hub.redis, hub.settings, now + 10) == [
        f"sweeps-{int((now + 10) // 5)}",
        f"reconcile-{int((now + 10) // 10)}",
    ]
    assert hub.redis.llen("rq:queue:route") == 4


def test_a_due_scheduled_job_is_enqueued_once(hub):
    queue = outbox.queue(hub.redis, "route")
    queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=5), "router.reconcile.run_reconcile")
    assert enqueue_due(hub.redis) == 1
    assert enqueue_due(hub.redis) == 0
    assert hub.redis.llen("rq:queue:route") == 1


# --- a real worker process, killed ----------------------------------------------------------------


def _worker_env(hub) -> dict[str, str]:
    settings = hub.settings
    return {
        **os.environ,
        "DGML_DATA_DIR": str(settings.data_dir),
        "DGML_DATABASE_URL": settings.resolved_database_url,
        "DGML_BLOB_DIR": str(settings.resolved_blob_dir),
        "DGML_REDIS_URL": str(settings.redis_url),
        "DGML_WORKER_TICK_S": "0.2",
        "DGML_SWEEPS_EVERY_S": "1",
        "DGML_RECONCILE_EVERY_S": "0.5",
        "DGML_RECONCILE_GRACE_S": "0",
        "DGML_ROUTE_RECHECK_S": "0.2",
        "DGML_ROUTE_RECHECK_MAX_S": "1",
    }


def _start_worker(hub, log_path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dgml", "worker"],
        env=_worker_env(hub),
        stdin=subprocess.DEVNULL,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: it and its children stop together
    )


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _busy(hub) -> bool:
    return any(
        StartedJobRegistry(queue=outbox.queue(hub.redis, q)).get_job_ids(cleanup=False)
        for q in ("validate", "route")
    )


@pytest.mark.slow
def test_a_worker_killed_mid_flow_and_replaced_still_gets_the_order_its_offer(hub, tmp_path):
    _labs(hub)
    hub.design()  # its check is queued, for the first worker
    log_path = tmp_path / "workers.log"
    first = _start_worker(hub, log_path)
    try:
        posted = hub.ordered()
        _wait_until(
            lambda: _busy(hub) or hub.get(posted["id"])["state"] != "routing",
            60,
            "the first worker never started",
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    second = _start_worker(hub, log_path)
    try:
        _wait_until(
            lambda: hub.get(posted["id"])["state"] == "offered",
            120,
            f"the order was not placed; worker log:\n{log_path.read_text()[-3000:]}",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(10)
    order = hub.get(posted["id"])
    assert order["lines"][0]["fablab"]["id"] == "printer"
    assert _offers(hub) == [("printer", OfferState.OPEN)]
