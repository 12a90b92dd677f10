"""What an agent sees of an order: the files to make, the part's size, the offer (never delivery
data), and the open offers a claim answers.

Files are named by path, sha256 and size, with the registry's download URL (relative to the
hub), so the agent fetches them over the same HTTPS it talks to and checks every byte against
the hash before it makes anything.

The part's size (``extents_mm``) is read from the stored geometry reports of the files the order
makes, the ones placement sized the part by (:func:`router.routing.part_of`): nothing is measured
again here. One model file: the box its report gives (x, y, z). Several: the box placement sizes
them by, each file's sizes sorted and the largest of each rank kept (every file fits it in turn).
None when a report is missing (a newer checker has not seen the file yet) or gives no size: the
agent then leaves the fit to its slicer.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from registry.models import Build
from registry.validation import reader_for
from router import facts
from router.models import Offer, OfferState, Order, OrderLine

API = "/api/v1"
# Flat outlines for laser and CNC cutting: model files for those processes, though they have
# no mesh reader.
OUTLINE_SUFFIXES = frozenset({".dxf", ".svg"})
# A claim answers at most this many offers; the rest come with the next claim.
CLAIM_LIMIT = 50
# A part's bounding box in mm: x, y, z for one file, sorted sizes for several.
Extents = tuple[float, float, float]
# A geometry report's key: the file's sha256 and the reader its extension chose.
ReportKey = tuple[str, str]


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
    # The part's bounding box in mm (see the module notes); None when not known.
    extents_mm: Extents | None


def is_model_file(path: str) -> bool:
    """A file a fablab makes something from (meshes, CAD exchange files, flat outlines)."""
    return reader_for(path) is not None or PurePosixPath(path).suffix.lower() in OUTLINE_SUFFIXES


def _version_base(version: facts.VersionFacts) -> str:
    return f"{API}/designs/{quote(version.owner)}/{quote(version.name)}/versions/{version.number}"


def order_files(session: Session, order: Order) -> list[FileEntry]:
    """The files the order makes: its parametric build's, else the version's model files (or
    the paths the order names)."""
    version = facts.version(session, order.version_id)
    if version is None:  # versions are never deleted; a dangling order is a bug elsewhere
        return []
    base = _version_base(version)
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


def _report_keys(files: list[FileEntry]) -> dict[ReportKey, None]:
    """The ``(sha256, reader)`` of each file a geometry report is made of, in order."""
    keys: dict[ReportKey, None] = {}
    for f in files:
        reader = reader_for(f.path)
        if reader is not None:
            keys[(f.sha256, reader)] = None
    return keys


def part_size(
    files: list[FileEntry], reports: dict[ReportKey, facts.ReportFacts]
) -> Extents | None:
    """The part's bounding box from the reports of its files (see the module notes)."""
    sizes: list[list[float]] = []
    for key in _report_keys(files):
        row = reports.get(key)
        size = ((row.report.get("metrics") or {}).get("size_mm")) if row is not None else None
        if not isinstance(size, list) or len(size) != 3:
            return None
        try:
            sizes.append([float(v) for v in size])
        except (TypeError, ValueError):
            return None
    if not sizes:
        return None
    box = sizes[0] if len(sizes) == 1 else [max(s) for s in zip(*map(sorted, sizes), strict=True)]
    if not all(0 < v < float("inf") for v in box):
        return None
    return (round(box[0], 3), round(box[1], 3), round(box[2], 3))


def reports_of(
    session: Session, *file_lists: list[FileEntry]
) -> dict[ReportKey, facts.ReportFacts]:
    """The stored geometry reports of the model files in these lists (at most one query)."""
    keys: set[ReportKey] = set()
    for files in file_lists:
        keys.update(_report_keys(files))
    return facts.reports(session, keys)


def design_ref(session: Session, order: Order) -> DesignRef:
    version = facts.version(session, order.version_id)
    assert version is not None  # versions are never deleted
    return DesignRef(owner=version.owner, name=version.name, version=version.number)


def offer_public(
    session: Session,
    offer: Offer,
    files: list[FileEntry] | None = None,
    reports: dict[ReportKey, facts.ReportFacts] | None = None,
) -> OfferPublic:
    """The offer as its agent sees it (``files`` and ``reports`` when the caller has them)."""
    line = offer.line
    order = session.get(Order, line.order_id)
    assert order is not None
    if files is None:
        files = order_files(session, order)
    if reports is None:
        reports = reports_of(session, files)
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
        files=files,
        extents_mm=part_size(files, reports),
    )


def open_offers(session: Session, fablab_id: str, now: datetime) -> list[OfferPublic]:
    """The fablab's open, unexpired offers, oldest first."""
    rows = session.execute(
        select(Offer, Order)
        .join(OrderLine, OrderLine.id == Offer.line_id)
        .join(Order, Order.id == OrderLine.order_id)
        .where(
            Offer.fablab_id == fablab_id,
            Offer.state == OfferState.OPEN,
            Offer.expires_at > now,
        )
        .order_by(Offer.created_at, Offer.id)
        .limit(CLAIM_LIMIT)
        .options(lazyload(Order.lines))
    ).all()
    offers = [offer for offer, _ in rows]
    files = [order_files(session, order) for _, order in rows]
    reports = reports_of(session, *files)
    return [
        offer_public(session, offer, listed, reports)
        for offer, listed in zip(offers, files, strict=True)
    ]
