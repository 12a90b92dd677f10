"""A small world for the agent API tests: a maker with a pushed design, four enrolled fablabs
run by one operator, and orders with lines and offers written straight to the database (what
placement would have written), so these tests depend on nothing but the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import make_engine, make_sessionmaker, utcnow, write_session
from dgml.outbox import OutboxMessage
from dgml.settings import Settings
from registry.models import Design, User, Version
from router.directory import AGENT_PREFIX, new_token
from router.lifecycle import PLACE_TOPIC, set_line_state
from router.models import Fablab, Job, Offer, Order, OrderEvent, OrderLine, OrderState
from tests.conftest import Account, mesh
from tests.registry.calls import created, pushed

AGENT = "/api/v1/agent"
LABS = ("lab-a", "lab-b", "lab-c", "lab-d")
DELIVERY = {"name": "Alice Martin", "address": "12 rue des Arts, 75003 Paris"}
README = b"# Bracket\n\nPrint it with 20 % infill.\n"


def later(seconds: float) -> datetime:
    """A moment this many seconds from now (what a sweep is told the time is)."""
    return utcnow() + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Placed:
    order_id: int
    line_id: int
    offer_id: int


@dataclass
class World:
    client: TestClient
    sessions: sessionmaker[Session]
    settings: Settings
    maker: Account
    operator: Account
    design_id: int
    version_id: int
    version: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, lab: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[lab]}"}

    def post(self, lab: str, path: str, json: Any = None, **kwargs: Any):
        headers = {**self.headers(lab), **kwargs.pop("headers", {})}
        return self.client.post(AGENT + path, json=json, headers=headers, **kwargs)

    def offer(
        self,
        lab: str = "lab-a",
        *,
        quantity: int = 2,
        expires_in: float = 300,
        files: list[str] | None = None,
        build_id: int | None = None,
    ) -> Placed:
        """An order of one line with an open offer to ``lab``."""
        with write_session(self.sessions) as session:
            maker = session.scalar(select(User).where(User.name == self.maker.name))
            assert maker is not None
            order = Order(
                owner_id=maker.id,
                idempotency_key=uuid.uuid4().hex,
                request_hash="0" * 64,
                design_id=self.design_id,
                version_id=self.version_id,
                files=files,
                params={"infill": 20},
                build_id=build_id,
                process="fdm",
                material="pla",
                quantity=quantity,
                lat=48.86,
                lon=2.36,
                purpose="personal",
                delivery=DELIVERY,
                state=OrderState.OFFERED,
            )
            session.add(order)
            session.flush()
            line = OrderLine(
                order_id=order.id,
                number=1,
                quantity=quantity,
                state=OrderState.OFFERED,
                fablab_id=lab,
                attempt=1,
                excluded=[],
            )
            session.add(line)
            session.flush()
            offer = self._new_offer(session, line, lab, expires_in)
            return Placed(order.id, line.id, offer.id)

    def reoffer(self, line_id: int, lab: str, *, expires_in: float = 300) -> int:
        """Offer a line that is being routed again to ``lab``, as placement would."""
        with write_session(self.sessions) as session:
            line = session.get(OrderLine, line_id)
            assert line is not None and line.state == OrderState.ROUTING, line.state
            line.fablab_id = lab
            set_line_state(session, line, OrderState.OFFERED)
            return self._new_offer(session, line, lab, expires_in).id

    @staticmethod
    def _new_offer(session: Session, line: OrderLine, lab: str, expires_in: float) -> Offer:
        offer = Offer(
            line_id=line.id,
            fablab_id=lab,
            quantity=line.quantity,
            expires_at=utcnow() + timedelta(seconds=expires_in),
        )
        session.add(offer)
        session.flush()
        return offer

    def accepted(self, placed: Placed, lab: str = "lab-a") -> dict[str, Any]:
        response = self.post(lab, f"/offers/{placed.offer_id}/accept")
        assert response.status_code == 200, response.text
        return response.json()

    def row(self, model: type, row_id: int) -> Any:
        with self.sessions() as session:
            return session.get(model, row_id)

    def line(self, line_id: int) -> OrderLine:
        return self.row(OrderLine, line_id)

    def events(self, order_id: int) -> list[OrderEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(OrderEvent)
                    .where(OrderEvent.order_id == order_id)
                    .order_by(OrderEvent.id)
                ).all()
            )

    def kinds(self, order_id: int) -> list[str]:
        return [event.kind for event in self.events(order_id)]

    def placements(self, line_id: int) -> list[OutboxMessage]:
        """The placement requests posted for a line, oldest first."""
        with self.sessions() as session:
            rows = session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.topic == PLACE_TOPIC)
                .order_by(OutboxMessage.id)
            ).all()
            return [row for row in rows if row.payload["line_id"] == line_id]

    def jobs(self, offer_id: int) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(select(Job).where(Job.offer_id == offer_id)).all())


def make_world(client, settings, alice, bob) -> Iterator[World]:
    """alice publishes a bracket (two meshes and a README) and orders; bob runs the four labs.
    Each test module makes it its ``world`` fixture."""
    created(client, alice, "bracket")
    version = pushed(
        client,
        alice,
        "alice/bracket",
        [
            ("bracket.stl", mesh("20mm-xyz-cube.stl")),
            ("plate.stl", mesh("plate_holes.STL")),
            ("README.md", README),
        ],
    )
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    tokens: dict[str, str] = {}
    with write_session(sessions) as session:
        design = session.scalar(select(Design).where(Design.name == "bracket"))
        assert design is not None
        row = session.scalar(
            select(Version).where(Version.design_id == design.id, Version.number == 1)
        )
        assert row is not None
        design_id, version_id = design.id, row.id
        operator = session.scalar(select(User).where(User.name == bob.name))
        assert operator is not None
        for i, lab in enumerate(LABS):
            token, digest = new_token(AGENT_PREFIX)
            tokens[lab] = token
            session.add(
                Fablab(
                    id=lab,
                    name=f"Fablab {lab[-1].upper()}",
                    lat=48.85 + i / 100,
                    lon=2.35,
                    legal_form="nonprofit",
                    machines=[
                        {
                            "process": "fdm",
                            "materials": ["pla", "petg"],
                            "build_volume_mm": [220, 220, 250],
                            "count": 2,
                        }
                    ],
                    operator_id=operator.id,
                    agent_token_hash=digest,
                    enrolled_at=utcnow(),
                )
            )
    yield World(client, sessions, settings, alice, bob, design_id, version_id, version, tokens)
    engine.dispose()
