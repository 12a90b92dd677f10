"""What the registry does with designs and versions: create, look up, push, list and search.

Forks and lineage live in :mod:`registry.forks`, change requests in
:mod:`registry.change_requests`. Functions here take a session and leave committing to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from dgml.db import utcnow
from dgml.errors import Conflict, Forbidden, Invalid, NotFound
from registry import activity, validation
from registry.licences import get_licence
from registry.models import (
    Design,
    DesignMaintainer,
    DesignTag,
    User,
    Version,
    VersionFile,
    VersionParent,
)
from registry.pagination import keyset_page
from registry.paths import media_type_for
from registry.schemas import (
    VERSION_TAG_RE,
    DesignCreate,
    DesignPublic,
    DesignRef,
    DesignUpdate,
    FileEntry,
    Page,
    VersionPublic,
    VersionSummary,
)

MAX_INT32 = 2**31 - 1

# --- looking things up -------------------------------------------------------------------


def get_design(session: Session, owner: str, name: str) -> Design:
    design = session.scalar(
        select(Design)
        .join(User, Design.owner_id == User.id)
        .where(User.name_folded == owner.casefold(), Design.name_folded == name.casefold())
    )
    if design is None:
        raise NotFound(f"no design {owner}/{name}")
    return design


def get_version(session: Session, design: Design, ref: str | int) -> Version:
    """A version by number, by tag, or ``latest``."""
    query = select(Version).where(Version.design_id == design.id)
    text = str(ref)
    if text == "latest":
        query = query.where(Version.number == design.version_count)
    elif text.isdigit():
        if int(text) > MAX_INT32:
            raise NotFound(f"no version {text} of {design.owner.name}/{design.name}")
        query = query.where(Version.number == int(text))
    else:
        query = query.where(Version.tag == text)
    version = session.scalar(query)
    if version is None:
        raise NotFound(f"no version {text} of {design.owner.name}/{design.name}")
    return version


def is_maintainer(design: Design, user: User | None) -> bool:
    if user is None:
        return False
    return user.id == design.owner_id or any(m.user_id == user.id for m in design.maintainers)


def require_maintainer(design: Design, user: User, action: str) -> None:
    if not is_maintainer(design, user):
        raise Forbidden(
            f"only the owner and maintainers of {design.owner.name}/{design.name} may {action}"
        )


# --- designs --------------------------------------------------------------------------------


def _search_text(design: Design) -> str:
    parts = [design.name, design.title, design.description, *(t.tag for t in design.tags)]
    return "\n".join(parts).casefold()


def create_design(session: Session, owner: User, data: DesignCreate, **extra: Any) -> Design:
    licence = get_licence(data.license)
    design = Design(
        owner_id=owner.id,
        owner=owner,
        name=data.name,
        name_folded=data.name.casefold(),
        title=data.title,
        description=data.description,
        license=licence.id,
        # Sorted as the relationship loads them, so every answer lists tags in one order.
        tags=[DesignTag(tag=t) for t in sorted(data.tags)],
        **extra,
    )
    design.search_text = _search_text(design)
    session.add(design)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(
            f"{owner.name} already has a design named {data.name!r}", field="name"
        ) from None
    activity.record(session, design, "design.created", owner, license=licence.id)
    return design


def update_design(session: Session, design: Design, user: User, data: DesignUpdate) -> Design:
    require_maintainer(design, user, "change the design")
    changed = data.model_dump(exclude_unset=True, exclude_none=True)
    if "title" in changed:
        design.title = data.title
    if "description" in changed:
        design.description = data.description
    if "tags" in changed:
        design.tags = [DesignTag(tag=t) for t in sorted(data.tags)]
    if "archived" in changed:
        design.archived = data.archived
    design.search_text = _search_text(design)
    design.updated_at = utcnow()
    activity.record(session, design, "design.updated", user, fields=sorted(changed))
    return design


def add_maintainer(session: Session, design: Design, user: User, maintainer: User) -> None:
    if user.id != design.owner_id:
        raise Forbidden("only the owner may change who maintains a design")
    if maintainer.id == design.owner_id or any(
        m.user_id == maintainer.id for m in design.maintainers
    ):
        return
    design.maintainers.append(DesignMaintainer(user_id=maintainer.id, user=maintainer))
    activity.record(session, design, "maintainer.added", user, maintainer=maintainer.name)


def remove_maintainer(session: Session, design: Design, user: User, maintainer: User) -> None:
    if user.id != design.owner_id:
        raise Forbidden("only the owner may change who maintains a design")
    kept = [m for m in design.maintainers if m.user_id != maintainer.id]
    if len(kept) == len(design.maintainers):
        raise NotFound(
            f"{maintainer.name} is not a maintainer of {design.owner.name}/{design.name}"
        )
    design.maintainers = kept
    activity.record(session, design, "maintainer.removed", user, maintainer=maintainer.name)


def design_public(design: Design) -> DesignPublic:
    origin = design.forked_from
    return DesignPublic(
        owner=design.owner.name,
        name=design.name,
        full_name=f"{design.owner.name}/{design.name}",
        title=design.title,
        description=design.description,
        license=design.license,
        tags=[t.tag for t in design.tags],
        maintainers=[design.owner.name, *(m.user.name for m in design.maintainers)],
        archived=design.archived,
        latest_version=design.version_count or None,
        fork_count=design.fork_count,
        forked_from=version_ref(origin) if origin is not None else None,
        created_at=design.created_at,
        updated_at=design.updated_at,
    )


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_designs(
    session: Session,
    *,
    q: str | None = None,
    tag: str | None = None,
    license: str | None = None,
    owner: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> Page[DesignPublic]:
    """Designs matching every given filter, newest first, a page at a time."""
    query = design_query(q=q, tag=tag, license=license, owner=owner)
    rows, next_cursor = keyset_page(session, query, Design.id, cursor, limit)
    return Page(items=[design_public(d) for d in rows], next_cursor=next_cursor)


def design_query(
    *,
    q: str | None = None,
    tag: str | None = None,
    license: str | None = None,
    owner: str | None = None,
) -> Select[tuple[Design]]:
    """The designs matching every given filter (words of ``q``, tag, licence, owner)."""
    query = select(Design)
    if q:
        for word in q.casefold().split():
            query = query.where(Design.search_text.like(_like_pattern(word), escape="\\"))
    if tag:
        query = query.where(
            Design.id.in_(select(DesignTag.design_id).where(DesignTag.tag == tag.casefold()))
        )
    if license:
        query = query.where(Design.license == get_licence(license).id)
    if owner:
        query = query.join(User, Design.owner_id == User.id).where(
            User.name_folded == owner.casefold()
        )
    return query


# --- versions -------------------------------------------------------------------------------


def version_ref(version: Version) -> DesignRef:
    design = version.design
    return DesignRef(owner=design.owner.name, name=design.name, version=version.number)


def _merge_contributors(
    parents: Sequence[Version], author: User, now_iso: str, credit_author: bool
) -> list[dict[str, str]]:
    since: dict[str, str] = {}
    for parent in parents:
        for entry in parent.contributors:
            name = entry["name"]
            if name not in since or entry["since"] < since[name]:
                since[name] = entry["since"]
    if credit_author and author.name not in since:
        since[author.name] = now_iso
    return [
        {"name": n, "since": s} for n, s in sorted(since.items(), key=lambda kv: (kv[1], kv[0]))
    ]


def complete_manifest(manifest: dict[str, Any], design: Design, number: int) -> dict[str, Any]:
    """Fill the OKH-LOSH fields the registry knows; a manifest's own licence must match."""
    given = manifest.get("license")
    if given is not None and get_licence(given, field="manifest.license").id != design.license:
        raise Invalid(
            f"manifest licence {given!r} differs from the design's licence {design.license}",
            field="manifest.license",
        )
    filled = dict(manifest)
    filled.setdefault("name", design.title)
    filled["license"] = design.license
    filled.setdefault("licensor", design.owner.name)
    filled["version"] = str(number) if "version" not in manifest else manifest["version"]
    return filled


def create_version(
    session: Session,
    design: Design,
    author: User,
    files: Sequence[tuple[str, str, int]],
    *,
    manifest: dict[str, Any] | None = None,
    message: str = "",
    tag: str | None = None,
    kind: str = "push",
    parents: Sequence[Version] | None = None,
    base: int | None = None,
) -> Version:
    """Write the next version of ``design``: ``files`` are ``(path, sha256, size)`` triples.

    The number comes from an atomic increment of the design's counter, which holds the design's
    row lock until commit: concurrent pushes get distinct, consecutive numbers. With ``base``,
    the push is refused (409) unless the newest version is that one, as git refuses a push that
    is not a fast-forward; the check and the increment are one step under that lock.
    """
    if not files:
        raise Invalid("a version needs at least one file", field="files")
    if tag is not None:
        if tag == "latest" or not VERSION_TAG_RE.match(tag):
            raise Invalid(
                "a version tag starts with a letter and holds letters, digits, '.', '_' or '-' "
                "(not 'latest')",
                field="tag",
            )
        exists = session.scalar(
            select(Version.id).where(Version.design_id == design.id, Version.tag == tag)
        )
        if exists is not None:
            raise Conflict(f"tag {tag!r} already names a version of this design", field="tag")
    number = session.execute(
        update(Design)
        .where(Design.id == design.id)
        .values(version_count=Design.version_count + 1, updated_at=utcnow())
        .returning(Design.version_count)
    ).scalar_one()
    if base is not None and number - 1 != base:
        raise Conflict(
            f"the design is at version {number - 1}, this push is based on version {base}: "
            "bring your copy up to date first",
            field="base",
            latest_version=number - 1,
        )
    if parents is None:
        head = (
            session.scalar(
                select(Version).where(Version.design_id == design.id, Version.number == number - 1)
            )
            if number > 1
            else None
        )
        parents = [head] if head is not None else []
    now = utcnow()
    version = Version(
        design_id=design.id,
        design=design,
        number=number,
        tag=tag,
        kind=kind,
        license=design.license,
        manifest=complete_manifest(manifest or {}, design, number),
        message=message,
        author_id=author.id,
        author=author,
        created_at=now,
        contributors=_merge_contributors(parents, author, now.isoformat(), kind != "fork"),
        files=[
            VersionFile(path=path, sha256=sha, size=size, media_type=media_type_for(path))
            for path, sha, size in files
        ],
        parent_links=[
            VersionParent(position=i, parent_id=p.id, parent=p) for i, p in enumerate(parents)
        ],
    )
    session.add(version)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict("another version took this tag at the same moment", field="tag") from None
    session.refresh(design, ["version_count"])
    validation.request_validation(session, version)
    activity.record(
        session, design, "version.created", author, version=number, kind=kind, files=len(files)
    )
    return version


def version_public(version: Version, verdict: str | None = None) -> VersionPublic:
    """The version's document; its verdict is looked up unless given."""
    design = version.design
    if verdict is None:
        session = object_session(version)
        verdict = validation.verdicts(session, [version])[version.id] if session else "pending"
    return VersionPublic(
        design=f"{design.owner.name}/{design.name}",
        number=version.number,
        tag=version.tag,
        kind=version.kind,
        license=version.license,
        message=version.message,
        author=version.author.name,
        created_at=version.created_at,
        parents=[version_ref(link.parent) for link in version.parent_links],
        files=[
            FileEntry(path=f.path, sha256=f.sha256, size=f.size, media_type=f.media_type)
            for f in version.files
        ],
        manifest=version.manifest,
        verdict=verdict,
    )


def version_summary(version: Version, verdict: str) -> VersionSummary:
    design = version.design
    return VersionSummary(
        design=f"{design.owner.name}/{design.name}",
        number=version.number,
        tag=version.tag,
        kind=version.kind,
        message=version.message,
        author=version.author.name,
        created_at=version.created_at,
        parents=[version_ref(link.parent) for link in version.parent_links],
        file_count=len(version.files),
        total_size=sum(f.size for f in version.files),
        verdict=verdict,
    )


def list_versions(
    session: Session, design: Design, cursor: str | None, limit: int
) -> Page[VersionSummary]:
    query = select(Version).where(Version.design_id == design.id)
    rows, next_cursor = keyset_page(session, query, Version.number, cursor, limit)
    found = validation.verdicts(session, rows)
    return Page(items=[version_summary(v, found[v.id]) for v in rows], next_cursor=next_cursor)
