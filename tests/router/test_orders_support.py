"""What the order and routing tests share: a hub (app, Redis, database, workers run on demand),
fablabs written straight into the directory, designs pushed through the API. No tests here.

Fablabs sit around Lyon; the maker orders from the city centre. Distances in the comments are
great-circle ones from ``LYON``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dgml import outbox
from dgml.app import create_app
from dgml.db import utcnow, write_session
from dgml.settings import Settings
from dgml.worker import WorkerContext, enqueue_due, make_context, set_context
from router import geo
from router.models import Fablab, Order
from tests.conftest import Account, mesh
from tests.registry.calls import API, created, pushed

LYON = (45.764043, 4.835659)
CUBE = mesh("20mm-xyz-cube.stl")  # 20 x 20 x 20 mm, passes
TEAPOT = mesh("teapot.stl")  # open edges: fails
PLA_200 = {"process": "fdm", "materials": ["PLA", "PETG"], "build_volume_mm": [200, 200, 200]}


def north(km: float) -> tuple[float, float]:
    """A point ``km`` north of LYON."""
    return LYON[0] + km / 111.2, LYON[1]


@dataclass
class Hub:
    """One hub for a test: its API client, Redis, database, and its workers run on demand."""

    client: TestClient
    settings: Settings
    redis: Redis
    context: WorkerContext
    alice: Account
    bob: Account

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.context.sessions

    def work(self, *queues: str) -> None:
        """Hand the outbox over, then run the queued jobs of ``queues`` to the end."""
        outbox.dispatch(self.sessions, self.redis)
        names = queues or ("validate", "build", "route")
        SimpleWorker(
            [outbox.queue(self.redis, q) for q in names],
            connection=self.redis,
            serializer=JSONSerializer,
        ).work(burst=True, logging_level="WARNING")

    def run_due(self, timeout_s: float = 15.0) -> int:
        """Wait until scheduled jobs are due and move them to their queues (the scheduler's
        granularity is one second)."""
        deadline = time.monotonic() + timeout_s
        while (moved := enqueue_due(self.redis)) == 0:
            assert time.monotonic() < deadline, "no scheduled job came due"
            time.sleep(0.1)
        return moved

    def add_lab(
        self,
        lab_id: str,
        where: tuple[float, float],
        machines: list[dict[str, Any]] | None = None,
        *,
        legal_form: str = "nonprofit",
        online: bool = True,
        price: dict[str, float] | None = None,
    ) -> None:
        """A fablab row, online unless told otherwise, and its place in the geo index."""
        with write_session(self.sessions) as session:
            session.add(
                Fablab(
                    id=lab_id,
                    name=f"Lab {lab_id}",
                    lat=where[0],
                    lon=where[1],
                    legal_form=legal_form,
                    machines=machines if machines is not None else [PLA_200],
                    price=price,
                    last_seen_at=utcnow() if online else utcnow() - timedelta(days=2),
                )
            )
        geo.add(self.redis, lab_id, *where)

    def design(
        self, name: str = "cube", files=(("cube.stl", CUBE),), *, license: str = "CC-BY-4.0"
    ) -> str:
        """Create a design of alice's and push its first version; its 'owner/name'."""
        created(self.client, self.alice, name, license=license)
        pushed(self.client, self.alice, f"alice/{name}", list(files))
        return f"alice/{name}"

    def order(
        self,
        design: str = "alice/cube",
        *,
        account: Account | None = None,
        key: str | None = None,
        query: str = "",
        **fields: Any,
    ):
        """POST an order (a fresh Idempotency-Key unless one is given)."""
        body = order_body(design, **fields)
        headers = dict((account or self.alice).headers)
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
        return self.client.post(f"{API}/orders{query}", json=body, headers=headers)

    def ordered(self, design: str = "alice/cube", **fields: Any) -> dict:
        response = self.order(design, **fields)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, order_id: int, account: Account | None = None) -> dict:
        headers = account.headers if account is not None else {}
        response = self.client.get(f"{API}/orders/{order_id}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def count(self, model) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model))

    def stored_order(self, order_id: int) -> Order:
        with self.sessions() as session:
            order = session.get(Order, order_id)
            assert order is not None
            return order


def order_body(design: str = "alice/cube", **fields: Any) -> dict:
    body: dict[str, Any] = {
        "design": design,
        "version": 1,
        "process": "fdm",
        "material": "pla",
        "quantity": 2,
        "location": {"lat": LYON[0], "lon": LYON[1]},
        "purpose": "personal",
    }
    body.update(fields)
    return body


def hub_settings(tmp_path, database_url: str, redis_url: str, **extra: Any) -> Settings:
    """Settings of a test hub: retries and the reconciler without waiting."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "redis_url": redis_url,
        "max_upload_bytes": 4 * 1024 * 1024,
        "route_recheck_s": 0.05,
        "route_recheck_max_s": 0.5,
        "reconcile_grace_s": 0,
        "worker_tick_s": 0.05,
    }
    values.update(extra)
    return Settings(**values)


@pytest.fixture(name="hub")
def hub_fixture(tmp_path, database_url, redis_url, redis_client, make_account) -> Iterator[Hub]:
    settings = hub_settings(tmp_path, database_url, redis_url)
    context = make_context(settings)
    set_context(context)
    alice, bob = make_account("alice"), make_account("bob")
    try:
        with TestClient(create_app(settings)) as client:
            yield Hub(client, settings, redis_client, context, alice, bob)
    finally:
        set_context(None)
        context.engine.dispose()
