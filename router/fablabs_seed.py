"""Register real fablabs from fablabs.io listings (tests/data/fablabs-fr.json has the French
ones): a populated directory for tests and the demo.

Each listing becomes a directory row through :func:`router.fablabs_io.record_from_listing`,
which fills in plausible machines, legal form and price model. Only the processes the directory
knows are kept (vinyl cutters, PCB mills and the like are left out), so a seeded fablab reads
like one registered through the API; a listing with no capabilities gives a fablab with no
machines until its operator describes them. Seeding is idempotent by id: fablabs already in the
directory are left as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import utcnow, write_session
from router.directory import ENROLMENT_PREFIX, PROCESSES, new_token, sync_geo_index
from router.fablabs_io import record_from_listing
from router.models import Fablab
from router.records import Fablab as FablabRecord

# Ids looked up per query: well under every backend's limit on bound parameters.
_CHUNK = 500


def load_listings(path: Path | str) -> list[dict[str, Any]]:
    """The listings of a JSON file (a list of fablabs.io labs)."""
    listings = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(listings, list):
        raise ValueError(f"{path}: expected a JSON list of fablab listings")
    return listings


def seed_id(record: FablabRecord) -> str:
    """The directory id of a listed lab: its fablabs.io slug in the directory's form."""
    slug = re.sub(r"[^a-z0-9]+", "-", record.id.casefold()).strip("-")
    return slug[:64].rstrip("-") or "fablab"


def _row(listing: Mapping[str, Any], operator_id: int | None) -> tuple[Fablab, str]:
    """A directory row for one listing, and the enrolment token of its agent."""
    record = record_from_listing(listing)
    machines = [
        {
            "process": m.process,
            "materials": sorted(m.materials),
            "build_volume_mm": list(m.build_volume_mm),
            "count": m.count,
        }
        for m in record.machines
        if m.process in PROCESSES
    ]
    contact = {"url": str(listing["url"])} if listing.get("url") else {}
    if listing.get("city"):
        contact["address"] = str(listing["city"])
    price = record.price
    token, digest = new_token(ENROLMENT_PREFIX)
    row = Fablab(
        id=seed_id(record),
        name=record.name[:200],
        lat=record.lat,
        lon=record.lon,
        contact=contact,
        legal_form=record.legal_form.value,
        machines=machines,
        price=None
        if price is None
        else {"per_job_eur": price.per_job_eur, "per_cm3_eur": price.per_cm3_eur},
        opening_hours=None,
        operator_id=operator_id,
        enrolment_token_hash=digest,
        created_at=utcnow(),
    )
    return row, token


def seed_fablabs(
    session: Session, listings: Iterable[Mapping[str, Any]], *, operator_id: int | None = None
) -> dict[str, str]:
    """Add the listed fablabs that the directory does not hold yet, in the caller's session
    (the caller commits, in a write session); the enrolment token of each one added, by id.

    Keep the tokens: they are stored only hashed, and a second run adds nothing.
    """
    rows: dict[str, tuple[Fablab, str]] = {}
    for listing in listings:
        row, token = _row(listing, operator_id)
        rows.setdefault(row.id, (row, token))
    ids = list(rows)
    present: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        present.update(session.scalars(select(Fablab.id).where(Fablab.id.in_(chunk))))
    tokens = {}
    for fablab_id, (row, token) in rows.items():
        if fablab_id not in present:
            session.add(row)
            tokens[fablab_id] = token
    session.flush()
    return tokens


def seed(
    sessions: sessionmaker[Session],
    listings: Iterable[Mapping[str, Any]],
    *,
    redis: Redis | None = None,
    operator_id: int | None = None,
) -> dict[str, str]:
    """:func:`seed_fablabs` in a transaction of its own, then the geo index rebuilt (when a
    Redis is given) so that placement finds the new fablabs."""
    with write_session(sessions) as session:
        tokens = seed_fablabs(session, listings, operator_id=operator_id)
    if redis is not None:
        sync_geo_index(redis, sessions)
    return tokens
