"""Design listings (``GET /designs``): each design with its latest version's verdict and the
processes that make it, and the ``process`` filter.

What a design is made by is read from its latest version, in this order:

1. the processes its manifest declares: ``process`` (a name or a list of names) and
   ``printing-process`` (OKH-LOSH's field, one name), case-folded;
2. when it declares none, the processes its files suit, by extension (:data:`SUITS`): meshes
   (STL, OBJ, PLY, 3MF) and a parametric source (whose default build is meshes) suit the
   additive processes, STEP suits machining, SVG and DXF cutting, Gerber and drill files PCB
   making.

The filter runs in two steps. The database first keeps the designs whose latest version either
mentions the name anywhere in its manifest text or holds a file with a suitable extension: a
superset, found with plain ``LIKE`` on SQLite and PostgreSQL alike. Python then applies the
rule above to those rows only. Pages are keyset pages as everywhere (newest first, stable while
designs arrive); a page that had to look at :data:`MAX_SCANNED` designs without filling up ends
early with a cursor, so one request never reads the whole registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import Select, Text, and_, cast, exists, func, or_, select
from sqlalchemy.orm import Session, lazyload

from dgml.errors import Invalid
from registry import builds, service, validation
from registry.models import Design, Version, VersionFile
from registry.pagination import encode_cursor, keyset_page
from registry.schemas import DesignListed, Page

ADDITIVE = ("fdm", "sla", "sls")
# File extension -> the processes a file of that kind suits (when the manifest declares none).
SUITS: dict[str, tuple[str, ...]] = {
    ".stl": ADDITIVE,
    ".obj": ADDITIVE,
    ".ply": ADDITIVE,
    ".3mf": ADDITIVE,
    ".step": ("cnc", "milling"),
    ".stp": ("cnc", "milling"),
    ".svg": ("laser", "vinyl"),
    ".dxf": ("laser", "vinyl", "cnc"),
    ".gbr": ("pcb",),
    ".gtl": ("pcb",),
    ".gbl": ("pcb",),
    ".drl": ("pcb",),
}
# A parametric source builds meshes by default.
SOURCE_SUITS = ADDITIVE
PROCESS_RE = re.compile(r"^[a-z0-9][a-z0-9 ._-]{0,63}$")
# The most designs one filtered page looks at before it answers with what it found so far.
MAX_SCANNED = 2000


def check_process(raw: str) -> str:
    """The ``process`` filter, case-folded; a 422 for something that is not a process name."""
    name = raw.strip().casefold()
    if not PROCESS_RE.match(name):
        raise Invalid(
            "process must be a name such as fdm, sla, laser or cnc (at most 64 letters, digits, "
            "'-', '_', '.' or spaces)",
            field="process",
        )
    return name


def _names(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v.strip().casefold() for v in values if isinstance(v, str) and v.strip()]


def declared_processes(manifest: dict[str, Any]) -> list[str]:
    """The processes a manifest names, in its order, without repeats."""
    names = _names(manifest.get("process")) + _names(manifest.get("printing-process"))
    return list(dict.fromkeys(names))


def suited_processes(paths: Iterable[str], manifest: dict[str, Any]) -> list[str]:
    """The processes a version's files suit, by their extensions (see :data:`SUITS`)."""
    paths = list(paths)
    found = [name for path in paths for name in SUITS.get(PurePosixPath(path).suffix.lower(), ())]
    try:
        source = builds.source_path(set(paths), manifest)
    except Invalid:  # a manifest naming a source it does not hold: not parametric
        source = None
    if source is not None:
        found += SOURCE_SUITS
    return sorted(set(found))


def processes_of(version: Version | None) -> list[str]:
    """What the version is made by: declared in its manifest, else suited by its files."""
    if version is None:
        return []
    manifest = version.manifest or {}
    return declared_processes(manifest) or suited_processes(
        (f.path for f in version.files), manifest
    )


def _latest_join() -> Any:
    return and_(Version.design_id == Design.id, Version.number == Design.version_count)


def _maybe_made_by(query: Select[tuple[Design]], process: str) -> Select[tuple[Design]]:
    """Keep the designs whose latest version could be made by ``process`` (a superset)."""
    needle = process.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    endings = [ext for ext, names in SUITS.items() if process in names]
    if process in SOURCE_SUITS:
        endings.append(".py")
    by_file = exists().where(
        VersionFile.version_id == Version.id,
        or_(*(func.lower(VersionFile.path).like(f"%{ext}") for ext in endings)),
    )
    mentioned = cast(Version.manifest, Text).ilike(f"%{needle}%", escape="\\")
    return query.join(Version, _latest_join()).where(
        or_(mentioned, by_file) if endings else mentioned
    )


def latest_versions(session: Session, designs: Sequence[Design]) -> dict[int, Version]:
    """Design id -> its latest version, for every design that has one, in one query."""
    ids = [d.id for d in designs if d.version_count]
    if not ids:
        return {}
    rows = session.scalars(
        select(Version)
        .join(Design, _latest_join())
        .where(Design.id.in_(ids))
        .options(lazyload(Version.parent_links))
    ).all()
    return {v.design_id: v for v in rows}


def _listed(
    session: Session, designs: Sequence[Design], latest: dict[int, Version]
) -> list[DesignListed]:
    """The listing's items: each design with its latest version's verdict and processes."""
    found = validation.verdicts(session, list(latest.values()))
    items = []
    for design in designs:
        version = latest.get(design.id)
        items.append(
            DesignListed(
                **service.design_public(design).model_dump(),
                verdict=found[version.id] if version is not None else None,
                processes=processes_of(version),
            )
        )
    return items


def list_designs(
    session: Session,
    *,
    q: str | None = None,
    tag: str | None = None,
    license: str | None = None,
    owner: str | None = None,
    process: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> Page[DesignListed]:
    """Designs matching every given filter, newest first, a page at a time, each with its
    latest version's verdict and processes."""
    query = service.design_query(q=q, tag=tag, license=license, owner=owner)
    if not process:
        rows, next_cursor = keyset_page(session, query, Design.id, cursor, limit)
        return Page(
            items=_listed(session, rows, latest_versions(session, rows)), next_cursor=next_cursor
        )
    wanted = check_process(process)
    query = _maybe_made_by(query, wanted)
    batch = min(max(2 * limit, 50), 500)
    kept: list[tuple[Design, Version]] = []
    scanned = 0
    while True:
        rows, after = keyset_page(session, query, Design.id, cursor, batch)
        latest = latest_versions(session, rows)
        for design in rows:
            scanned += 1
            version = latest.get(design.id)
            if version is not None and wanted in processes_of(version):
                kept.append((design, version))
            if len(kept) > limit:
                # One more than a page: there is a next page, and it starts below the last kept.
                page = kept[:limit]
                return _page(session, page, encode_cursor(page[-1][0].id))
            if scanned >= MAX_SCANNED and (after is not None or design is not rows[-1]):
                return _page(session, kept, encode_cursor(design.id))
        if after is None:
            return _page(session, kept, None)
        cursor = after


def _page(
    session: Session, kept: list[tuple[Design, Version]], next_cursor: str | None
) -> Page[DesignListed]:
    designs = [d for d, _ in kept]
    return Page(
        items=_listed(session, designs, {d.id: v for d, v in kept}), next_cursor=next_cursor
    )
