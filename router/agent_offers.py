"""What an agent sees of an order: the files to make, the offer (never delivery data), and the
open offers a claim answers.

Files are named by path, sha256 and size, with the registry's download URL (relative to the
hub), so the agent fetches them over the same HTTPS it talks to and checks every byte against
the hash before it makes anything.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Build, Design, Version
from registry.validation import reader_for
from router.models import Offer, OfferState, Order

API = "/api/v1"
# Flat outlines for laser and CNC cutting: model files for those processes, though they have
# no mesh reader.
OUTLINE_SUFFIXES = frozenset({".dxf", ".svg"})
# A claim answers at most this many offers; the rest come with the next claim.
CLAIM_LIMIT = 50


class FileEntry(BaseModel):
    path: str
    sha256: str
    size: int
    url: str


class DesignRef(BaseModel):
    owner: str
    name: str
    version: int


class OfferPublic(BaseModel):
    """An offer as its fablab's agent sees it: what to make, not for whom or where to send."""

    id: int
    order_id: int
    line: int
    state: str
    design: DesignRef
    process: str
    material: str
    quantity: int
    params: dict[str, Any]
    expires_at: datetime
    files: list[FileEntry]


def is_model_file(path: str) -> bool:
    """A file a fablab makes something from (meshes, CAD exchange files, flat outlines)."""
    return reader_for(path) is not None or PurePosixPath(path).suffix.lower() in OUTLINE_SUFFIXES


def _version_base(design: Design, version: Version) -> str:
    return (
        f"{API}/designs/{quote(design.owner.name)}/{quote(design.name)}/versions/{version.number}"
    )


def order_files(session: Session, order: Order) -> list[FileEntry]:
    """The files the order makes: its parametric build's, else the version's model files (or
    the paths the order names)."""
    version = session.get(Version, order.version_id)
    if version is None:  # versions are never deleted; a dangling order is a bug elsewhere
        return []
    base = _version_base(version.design, version)
    if order.build_id is not None:
        build = session.get(Build, order.build_id)
        if build is None:
            return []
        where = f"{base}/builds/{build.parameter_hash}/files/"
        return [
            FileEntry(
                path=f["path"],
                sha256=f["sha256"],
                size=int(f["size"]),
                url=where + quote(f["path"]),
            )
            for f in build.files
        ]
    wanted = set(order.files) if order.files is not None else None
    return [
        FileEntry(path=f.path, sha256=f.sha256, size=f.size, url=f"{base}/files/{quote(f.path)}")
        for f in version.files
        if (f.path in wanted if wanted is not None else is_model_file(f.path))
    ]


def design_ref(session: Session, order: Order) -> DesignRef:
    version = session.get(Version, order.version_id)
    assert version is not None
    return DesignRef(
        owner=version.design.owner.name, name=version.design.name, version=version.number
    )


def offer_public(session: Session, offer: Offer) -> OfferPublic:
    line = offer.line
    order = session.get(Order, line.order_id)
    assert order is not None
    return OfferPublic(
        id=offer.id,
        order_id=order.id,
        line=line.number,
        state=offer.state,
        design=design_ref(session, order),
        process=order.process,
        material=order.material,
        quantity=offer.quantity,
        params=order.params or {},
        expires_at=offer.expires_at,
        files=order_files(session, order),
    )


def open_offers(session: Session, fablab_id: str, now: datetime) -> list[OfferPublic]:
    """The fablab's open, unexpired offers, oldest first."""
    offers = session.scalars(
        select(Offer)
        .where(
            Offer.fablab_id == fablab_id,
            Offer.state == OfferState.OPEN,
            Offer.expires_at > now,
        )
        .order_by(Offer.created_at, Offer.id)
        .limit(CLAIM_LIMIT)
    ).all()
    return [offer_public(session, offer) for offer in offers]
