"""A hub for the agent tests: alice publishes a design through the API, bob registers fablabs
through the API (getting their enrolment tokens), and orders with one line and an open offer
are written straight to the database, as placement would write them, then the fablab's
waiting claims are woken."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import make_engine, make_sessionmaker, utcnow, write_session
from dgml.settings import Settings
from registry.models import Design, User, Version
from router.models import Job, Offer, Order, OrderEvent, OrderLine, OrderState
from router.notify import notify_offer
from tests.conftest import Account, mesh
from tests.registry.calls import created, pushed

API = "/api/v1"
CUBE = "cube.stl"


@dataclass(frozen=True)
class Placed:
    order_id: int
    line_id: int
    offer_id: int


@dataclass
class HubWorld:
    base: str
    http: httpx.Client
    sessions: sessionmaker[Session]
    settings: Settings
    redis: Redis
    maker: Account
    operator: Account
    design_id: int
    version_id: int
    files: dict[str, str]  # path -> sha256

    def register_fablab(self, name: str = "Atelier Nord", **fields: Any) -> dict[str, Any]:
        """A fablab with one FDM machine, registered by bob; the answer has its token."""
        body = {
            "name": name,
            "location": {"lat": 48.86, "lon": 2.35},
            "legal_form": "nonprofit",
            "machines": [
                {
                    "process": "fdm",
                    "materials": ["pla", "petg"],
                    "build_volume_mm": [250, 210, 210],
                }
            ],
            **fields,
        }
        response = self.http.post(f"{API}/fablabs", json=body, headers=self.operator.headers)
        assert response.status_code == 201, response.text
        return response.json()

    def offer(
        self,
        fablab_id: str,
        *,
        process: str = "fdm",
        material: str = "pla",
        quantity: int = 1,
        expires_in: float = 300,
        version_id: int | None = None,
    ) -> Placed:
        """An order of one line with an open offer to the fablab, and its agent woken (of
        alice's bracket unless ``version_id`` names another version)."""
        with write_session(self.sessions) as session:
            maker = session.scalar(select(User).where(User.name == self.maker.name))
            version = session.get(Version, version_id or self.version_id)
            assert maker is not None and version is not None
            order = Order(
                owner_id=maker.id,
                idempotency_key=uuid.uuid4().hex,
                request_hash="0" * 64,
                design_id=version.design_id,
                version_id=version.id,
                process=process,
                material=material,
                quantity=quantity,
                lat=48.86,
                lon=2.36,
                purpose="personal",
                delivery={"name": "Alice Martin", "address": "12 rue des Arts, Paris"},
                state=OrderState.OFFERED,
            )
            session.add(order)
            session.flush()
            line = OrderLine(
                order_id=order.id,
                number=1,
                quantity=quantity,
                state=OrderState.OFFERED,
                fablab_id=fablab_id,
                attempt=1,
                excluded=[],
            )
            session.add(line)
            session.flush()
            offer = Offer(
                line_id=line.id,
                fablab_id=fablab_id,
                quantity=quantity,
                expires_at=utcnow() + timedelta(seconds=expires_in),
            )
            session.add(offer)
            session.flush()
            placed = Placed(order.id, line.id, offer.id)
        notify_offer(self.redis, fablab_id)
        return placed

    def get(self, model: type, row_id: int) -> Any:
        with self.sessions() as session:
            return session.get(model, row_id)

    def job(self, placed: Placed) -> Job | None:
        with self.sessions() as session:
            return session.scalar(select(Job).where(Job.offer_id == placed.offer_id))

    def job_state(self, placed: Placed) -> str | None:
        job = self.job(placed)
        return None if job is None else job.state

    def events(self, order_id: int) -> list[OrderEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(OrderEvent)
                    .where(OrderEvent.order_id == order_id)
                    .order_by(OrderEvent.id)
                ).all()
            )

    def blob_path(self, name: str = CUBE):
        sha = self.files[name]
        return self.settings.resolved_blob_dir / sha[:2] / sha[2:4] / sha


def make_hub_world(base: str, settings: Settings, make_account, redis: Redis) -> Iterator[HubWorld]:
    maker, operator = make_account("alice"), make_account("bob")
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    with httpx.Client(base_url=base, timeout=60) as http:
        created(http, maker, "bracket")
        version = pushed(
            http,
            maker,
            "alice/bracket",
            [(CUBE, mesh("20mm-xyz-cube.stl")), ("README.md", b"# Bracket\n")],
        )
        with sessions() as session:
            design = session.scalar(select(Design).where(Design.name == "bracket"))
            assert design is not None
            row = session.scalar(
                select(Version).where(Version.design_id == design.id, Version.number == 1)
            )
            assert row is not None
            design_id, version_id = design.id, row.id
        files = {f["path"]: f["sha256"] for f in version["files"]}
        yield HubWorld(
            base, http, sessions, settings, redis, maker, operator, design_id, version_id, files
        )
    engine.dispose()
