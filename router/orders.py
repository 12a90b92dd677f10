"""The order service: take an order idempotently, check it, list it, cancel it.

An order is stored in ONE transaction with its first line (the whole quantity), its ``accepted``
event and the outbox row of its first placement (:func:`router.lifecycle.request_placement`):
once the maker has a 201, the order cannot be lost, whatever happens to Redis or the workers
afterwards (the reconciler, :mod:`router.reconcile`, picks up what a fault dropped).

The same ``Idempotency-Key`` from the same maker answers the order that key made; the same key
with another body is refused, so a retried POST never orders twice and a reused key is noticed.

What is checked before anything is stored: the request's shape (pydantic), the coordinates, the
process (one of :data:`CATALOGUE`'s) and the material (the catalogue's, or any the directory's
machines for that process take), the quantity (at most ``Settings.max_order_quantity``), the
design and its version, the files to make and their geometry (a version that failed validation
is refused; one still being checked is taken, and placement waits for its report), and the
parameters of a parametric design (a 422 names the parameter).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from sqlalchemy import Text, cast, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dgml import outbox
from dgml.db import utcnow, write_session
from dgml.errors import Conflict, Invalid, NotFound
from dgml.settings import Settings
from registry import builds, validation
from registry.blobs import BlobStore
from registry.models import Build, Design, User, Version
from registry.service import MAX_INT32
from router import facts, geo
from router.lifecycle import add_event, request_placement
from router.models import Fablab, Offer, OfferState, Order, OrderLine, OrderState

V = TypeVar("V")

# Processes and the materials every fablab of the kind knows by these names. A material not
# listed is still taken when a machine of the directory declares it for the process.
CATALOGUE: dict[str, frozenset[str]] = {
    "fdm": frozenset(
        {"pla", "petg", "abs", "asa", "tpu", "nylon", "pc", "hips", "pva", "pla-cf", "petg-cf"}
    ),
    "sla": frozenset({"resin", "standard-resin", "tough-resin", "flexible-resin", "clear-resin"}),
    "sls": frozenset({"pa12", "pa11", "tpu", "nylon"}),
    "laser": frozenset(
        {"plywood-3mm", "plywood-6mm", "mdf-3mm", "mdf-6mm", "acrylic-3mm", "acrylic-5mm"}
        | {"cardboard", "paper", "leather", "felt", "cork"}
    ),
    "cnc": frozenset(
        {"plywood", "mdf", "hardwood", "softwood", "hdpe", "pom", "aluminium", "brass", "foam"}
    ),
    "milling": frozenset({"wax", "pom", "fr1", "aluminium", "brass"}),
    "vinyl": frozenset({"vinyl", "flex"}),
    "pcb": frozenset({"fr1", "fr4"}),
}
# Delivery details are a maker's address and phone, not a document.
MAX_DELIVERY_BYTES = 4096
KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
DESIGN_RE = re.compile(r"^[^/\s]{1,40}/[^/\s]{1,100}$")


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float
    lon: float


class OrderIn(BaseModel):
    """What a maker posts. Names of processes and materials are compared case-insensitively."""

    model_config = ConfigDict(extra="forbid")

    design: str = Field(description="owner/name", examples=["alice/bracket"])
    version: StrictInt | str = Field(description="a version number, a tag, or 'latest'")
    files: list[str] | None = Field(
        default=None, max_length=1000, description="model files to make (default: all)"
    )
    params: dict[str, Any] | None = Field(
        default=None, description="parameter values of a parametric design"
    )
    process: str = Field(min_length=1, max_length=16, examples=["fdm"])
    material: str = Field(min_length=1, max_length=64, examples=["pla"])
    quantity: StrictInt = Field(ge=1, description="parts to make")
    location: Location
    purpose: Literal["personal", "commercial"]
    delivery: dict[str, Any] | None = Field(
        default=None, description="private: shown only to the maker and the fablab making it"
    )

    @field_validator("design")
    @classmethod
    def _design(cls, value: str) -> str:
        if not DESIGN_RE.match(value):
            raise ValueError("must be 'owner/name'")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("version numbers start at 1")
        if isinstance(value, str) and not 1 <= len(value) <= 64:
            raise ValueError("must be a number, a tag or 'latest'")
        return value

    @field_validator("process", "material")
    @classmethod
    def _name(cls, value: str) -> str:
        folded = value.strip().casefold()  # placement compares names case-folded
        if not folded:
            raise ValueError("must not be blank")
        return folded

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a file twice")
        return value


def request_hash(data: OrderIn) -> str:
    """The canonical request's sha256: what tells a retry from another order under one key."""
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str | None) -> str:
    if key is None:
        raise Invalid(
            "an order needs an Idempotency-Key header (any unique string, e.g. a UUID)",
            field="Idempotency-Key",
        )
    if not KEY_RE.match(key):
        raise Invalid(
            "Idempotency-Key must be 1 to 200 visible ASCII characters", field="Idempotency-Key"
        )
    return key


# --- checking a request ----------------------------------------------------------------------


def check_process_material(session: Session, process: str, material: str) -> None:
    """A 422 for a process nobody knows or a material no machine of the process takes."""
    known = CATALOGUE.get(process)
    if known is None:
        raise Invalid(
            f"unknown process {process!r}: use one of {', '.join(sorted(CATALOGUE))}",
            field="process",
        )
    if material in known or directory_declares(session, process, material):
        return
    raise Invalid(
        f"unknown material {material!r} for {process}: known are {', '.join(sorted(known))} "
        "and those the directory's machines declare",
        field="material",
    )


def directory_declares(session: Session, process: str, material: str) -> bool:
    """True when a machine of the directory takes ``material`` for ``process``.

    Read only for a material the catalogue does not know. The database first keeps the rows
    whose machines mention the name at all (a text search on the stored JSON), so a misspelt
    material does not cost a parse of every fablab's machines."""
    needle = json.dumps(material)[1:-1]
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", needle) + "%"
    rows = session.scalars(
        select(Fablab.machines).where(cast(Fablab.machines, Text).ilike(pattern, escape="\\"))
    )
    for machines in rows:
        for machine in machines or ():
            if str(machine.get("process", "")).casefold() != process:
                continue
            if material in {str(m).casefold() for m in machine.get("materials", ())}:
                return True
    return False


@dataclass
class Target:
    """What an order makes: the version, its files, and the build when it is parametric."""

    version: facts.VersionFacts
    files: list[str] | None
    params: dict[str, Any] | None
    build: Build | None = None
    build_params: list | None = None


# (owner, name, number) case-folded -> version id: numbered versions never change.
_numbered: facts.Lru[tuple[str, str, int], int] = facts.Lru(4096)


def find_version(session: Session, design: str, ref: int | str) -> facts.VersionFacts:
    """The version ``owner/name`` and ``ref`` (a number, a tag or ``latest``) name, or a 404
    naming the field."""
    owner, name = design.split("/", 1)
    text = str(ref)
    key = (owner.casefold(), name.casefold(), int(text)) if text.isdigit() else None
    if key is not None and key[2] > MAX_INT32:
        key = None
    version_id = _numbered.get(key) if key is not None else None
    if version_id is None:
        found = session.execute(
            select(Design.id, Design.version_count, User.name, Design.name)
            .join(User, User.id == Design.owner_id)
            .where(User.name_folded == owner.casefold(), Design.name_folded == name.casefold())
        ).first()
        if found is None:
            raise NotFound(f"no design {owner}/{name}", field="design")
        design_id, count, owner_name, design_name = found
        query = select(Version.id).where(Version.design_id == design_id)
        if text == "latest":
            query = query.where(Version.number == count)
        elif text.isdigit():
            query = query.where(Version.number == min(int(text), MAX_INT32 + 1))
        else:
            query = query.where(Version.tag == text)
        version_id = session.scalar(query)
        if version_id is None:
            raise NotFound(f"no version {text} of {owner_name}/{design_name}", field="version")
        if key is not None:
            _numbered.put(key, version_id)
    version = facts.version(session, version_id)
    if version is None:  # versions are never deleted
        raise NotFound(f"no version {text} of {design}", field="version")
    return version


def resolve_target(session: Session, blobs: BlobStore, data: OrderIn) -> Target:
    """The version and build an order names, or a 404/422 naming the field."""
    version = find_version(session, data.design, data.version)
    target = Target(version, data.files, data.params)
    models = [f for f in version.files if validation.reader_for(f.path)]
    if data.params is None and models:
        _check_files(session, target, models)
        return target
    source = builds.version_source(session, blobs, version)
    if source is None:
        detail = (
            "has no parametric source: it takes no params"
            if data.params is not None
            else "has no model file to make"
        )
        raise Invalid(
            f"version {version.number} of {data.design} {detail}",
            field="params" if data.params is not None else "version",
        )
    target.build_params = source.parameters
    _, digest = builds.resolve_values(source.parameters, data.params or {})
    target.build = session.scalar(
        select(Build).where(Build.version_id == version.id, Build.parameter_hash == digest)
    )
    _check_build(session, target)
    return target


def _check_files(session: Session, target: Target, models: list) -> None:
    paths = {f.path for f in models}
    for i, path in enumerate(target.files or ()):
        if path not in paths:
            raise Invalid(
                f"version {target.version.number} has no model file {path!r}", field=f"files[{i}]"
            )
    chosen = [f for f in models if target.files is None or f.path in target.files]
    reports = facts.reports(session, {(f.sha256, validation.reader_for(f.path)) for f in chosen})
    verdict = validation.verdict_of(chosen, reports)
    if verdict in ("fail", "unreadable"):
        bad = [
            f.path
            for f in chosen
            if (row := reports.get((f.sha256, validation.reader_for(f.path)))) is not None
            and row.verdict in ("fail", "unreadable")
        ]
        raise Invalid(
            f"version {target.version.number} failed validation ({verdict}: "
            f"{', '.join(bad)}); see its geometry report",
            field="version",
        )


def _check_build(session: Session, target: Target) -> None:
    if target.files:
        raise Invalid("files cannot be chosen from a parametric build", field="files")
    build = target.build
    if build is None:
        return
    verdict = builds.build_verdict(session, build)
    if verdict in ("fail", "unreadable"):
        raise Invalid(
            f"the build with these parameters failed ({build.error or verdict})",
            field="params" if target.params else "version",
        )


def check_request(
    session: Session, settings: Settings, blobs: BlobStore, data: OrderIn
) -> tuple[Target, tuple[float, float]]:
    """Everything that can be refused before an order exists; the target and the location
    rounded to about 1 km."""
    location = geo.check_location(data.location.lat, data.location.lon, field="location")
    if data.quantity > settings.max_order_quantity:
        raise Invalid(
            f"quantity {data.quantity} is more than one order may ask for "
            f"({settings.max_order_quantity})",
            field="quantity",
        )
    check_process_material(session, data.process, data.material)
    if data.delivery is not None and len(json.dumps(data.delivery)) > MAX_DELIVERY_BYTES:
        raise Invalid(f"delivery details are over {MAX_DELIVERY_BYTES} bytes", field="delivery")
    target = resolve_target(session, blobs, data)
    return target, geo.round_location(*location)


# --- creating ----------------------------------------------------------------------------


def find_by_key(session: Session, owner_id: int, key: str) -> Order | None:
    return session.scalar(
        select(Order).where(Order.owner_id == owner_id, Order.idempotency_key == key)
    )


def replay(order: Order, digest: str) -> Order:
    """The order a key already made, if the body is the same; a 409 otherwise."""
    if order.request_hash != digest:
        raise Conflict(
            f"this Idempotency-Key was used for another order (#{order.id}) with a different "
            "body; use a new key for a new order",
            field="Idempotency-Key",
            order=order.id,
        )
    return order


def _store(
    session: Session, user_id: int, key: str, digest: str, data: OrderIn, target: Target
) -> Order:
    lat, lon = data.location.lat, data.location.lon
    if target.build is None and target.build_params is not None:
        version = session.get(Version, target.version.id)
        target.build, _ = builds.request_build(
            session, version, target.build_params, data.params or {}, None
        )
    now = utcnow()
    order = Order(
        owner_id=user_id,
        idempotency_key=key,
        request_hash=digest,
        design_id=target.version.design_id,
        version_id=target.version.id,
        files=data.files,
        params=data.params,
        build_id=target.build.id if target.build is not None else None,
        process=data.process,
        material=data.material,
        quantity=data.quantity,
        lat=lat,
        lon=lon,
        purpose=data.purpose,
        delivery=data.delivery,
        state=OrderState.ACCEPTED,
        created_at=now,
        updated_at=now,
    )
    session.add(order)
    session.flush()
    line = OrderLine(
        order=order,
        number=1,
        quantity=data.quantity,
        state=OrderState.ACCEPTED,
        excluded=[],
        attempt=0,
        failures=0,
    )
    session.add(line)
    add_event(
        session,
        order.id,
        "accepted",
        design=data.design,
        version=target.version.number,
        process=data.process,
        material=data.material,
        quantity=data.quantity,
        purpose=data.purpose,
        parametric=target.build is not None,
    )
    request_placement(session, line, reason="new order")
    return order


@dataclass
class Created(Generic[V]):
    """What :func:`create_order` did: the order, whether it is new, its view, and the outbox
    messages to send once committed (none for a replay)."""

    order_id: int
    new: bool
    view: V
    outbox: list[outbox.OutboxMessage]


def create_order(
    sessions: sessionmaker[Session],
    settings: Settings,
    blobs: BlobStore,
    user_id: int,
    key: str,
    data: OrderIn,
    view: Callable[[Session, Order], V],
) -> Created[V]:
    """Store the order (or find the one this key made), and ``view`` it in the same
    transaction."""
    digest = request_hash(data)
    try:
        with write_session(sessions) as session:
            existing = find_by_key(session, user_id, key)
            if existing is not None:
                order = replay(existing, digest)
                return Created(order.id, False, view(session, order), [])
            target, (lat, lon) = check_request(session, settings, blobs, data)
            rounded = data.model_copy(update={"location": Location(lat=lat, lon=lon)})
            order = _store(session, user_id, key, digest, rounded, target)
            created = Created(order.id, True, view(session, order), outbox.posted(session))
    except IntegrityError:
        # The same key raced in from another request and won: answer its order.
        with sessions() as session:
            existing = find_by_key(session, user_id, key)
            if existing is None:
                raise
            order = replay(existing, digest)
            return Created(order.id, False, view(session, order), [])
    return created


# --- reading -------------------------------------------------------------------------------


def get_order(session: Session, order_id: int) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"no order {order_id}")
    return order


def open_offers(session: Session, line_ids: list[int]) -> dict[int, Offer]:
    if not line_ids:
        return {}
    rows = session.scalars(
        select(Offer).where(Offer.line_id.in_(line_ids), Offer.state == OfferState.OPEN)
    ).all()
    return {offer.line_id: offer for offer in rows}
