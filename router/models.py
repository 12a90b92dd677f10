"""SQLAlchemy models of the router: the fablab directory, orders, their lines, offers, jobs and
the public event log. The database is the system of record; Redis only carries work.

An order is what a maker asked for. It has one or more *lines*, each a quantity placed at one
fablab (an order larger than one fablab can take is split). A line is offered to one fablab at
a time; an accepted offer becomes a *job* with a lease that the agent's heartbeats keep alive.
Every change is an *event* in the order's log, public minus private fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dgml.db import Base, UTCDateTime, utcnow


class OrderState(StrEnum):
    """The state of a line, and of an order (see :func:`router.orders.overall_state`)."""

    ACCEPTED = "accepted"  # stored, placement not yet started
    ROUTING = "routing"  # placement is looking for a fablab
    OFFERED = "offered"  # a fablab has an open offer
    IN_PROGRESS = "in_progress"  # a fablab accepted: a job holds a lease
    COMPLETED = "completed"
    FAILED = "failed"  # the geometry report failed, or the order could not be made
    UNPLACEABLE = "unplaceable"  # no fablab can make it (the reason says why)
    DISCONNECTED = "disconnected"  # a lease was lost while fabricating: an operator resolves
    CANCELLED = "cancelled"


FINAL_STATES = frozenset(
    {
        OrderState.COMPLETED,
        OrderState.FAILED,
        OrderState.UNPLACEABLE,
        OrderState.CANCELLED,
    }
)


class OfferState(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"  # the order was cancelled while the offer was open


class JobState(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    DISCONNECTED = "disconnected"


class Fablab(Base):
    """A fablab or microfactory of the directory. Public but for the token hashes."""

    __tablename__ = "fablabs"

    # A slug: lower-case letters, digits and dashes (the geo index's member name).
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    # Public contact: {email?, url?, phone?, address?}.
    contact: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    legal_form: Mapped[str] = mapped_column(String(16))
    # [{process, materials, build_volume_mm, count, typical_job_hours?, nozzle_mm?, ...}]
    machines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # {per_job_eur, per_cm3_eur} or None when the fablab publishes no prices.
    price: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Free-form opening hours, e.g. {"mon": "10:00-18:00", ...}.
    opening_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The account that registered it: its operator.
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # sha256 of the one-time enrolment token, cleared once an agent has enrolled with it.
    enrolment_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # sha256 of the agent's token, scoped to this fablab.
    agent_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Last call of its agent: online while this is recent (``Settings.agent_online_s``).
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # sha256 of the canonical request: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    design_id: Mapped[int] = mapped_column(ForeignKey("designs.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    # Paths of the version's files to make (None: all model files, or the build's).
    files: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The parametric build the order makes, when the design is a CadQuery source.
    build_id: Mapped[int | None] = mapped_column(ForeignKey("builds.id"), nullable=True)
    process: Mapped[str] = mapped_column(String(16))
    material: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    # The routing location, rounded to about 1 km; the exact place is in ``delivery`` only.
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    purpose: Mapped[str] = mapped_column(String(16))
    # Private: only the maker and the fablab that accepted a job of this order see it.
    delivery: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=OrderState.ACCEPTED, index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The first placement's decision (Decision.model_dump), with its explanation.
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.number", lazy="selectin"
    )


class OrderLine(Base):
    """A quantity of an order placed, or to be placed, at one fablab."""

    __tablename__ = "order_lines"
    __table_args__ = (UniqueConstraint("order_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=OrderState.ACCEPTED, index=True)
    # The fablab holding the current offer or job.
    fablab_id: Mapped[str | None] = mapped_column(
        ForeignKey("fablabs.id"), nullable=True, index=True
    )
    # Placements run for this line (1 for the first); each has its own job id.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Fablabs that declined, let an offer expire or failed: never offered this line again.
    excluded: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Failures reported by agents, counted against ``Settings.max_failures``.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    distance_km: Mapped[float | None] = mapped_column(Float, nullable=True)
    km_avoided: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    order: Mapped[Order] = relationship(back_populates="lines")


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (Index("ix_offers_fablab_state", "fablab_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id", ondelete="CASCADE"))
    fablab_id: Mapped[str] = mapped_column(ForeignKey("fablabs.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=OfferState.OPEN, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    line: Mapped[OrderLine] = relationship(lazy="joined")


class Job(Base):
    """An accepted offer: one per offer (the unique constraint makes a second accept lose)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_fablab_state", "fablab_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"), unique=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id", ondelete="CASCADE"))
    fablab_id: Mapped[str] = mapped_column(ForeignKey("fablabs.id"))
    state: Mapped[str] = mapped_column(String(16), default=JobState.IN_PROGRESS, index=True)
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The Idempotency-Key of the accept call: the same key again gets this job back, any other
    # accept of the offer is refused (two agents never both get it).
    accept_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    percent: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    line: Mapped[OrderLine] = relationship(lazy="joined")
    offer: Mapped[Offer] = relationship(lazy="joined")


class OrderEvent(Base):
    """One entry of an order's log. ``data`` is public; nothing private is ever written here."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    line_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    fablab_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # True for events an operator should look at (a lost lease, a failure).
    alert: Mapped[bool] = mapped_column(Boolean, default=False)
