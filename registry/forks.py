"""Forks, the fork tree, and attribution along it.

A fork is a new design in the forker's namespace whose first version is a copy of the origin
version (same blobs, no new bytes) with the origin version as its parent, so the version graph
runs across designs. The design records the origin version it came from; the licence it may take
is decided by :mod:`registry.licences`.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from dgml.errors import Invalid
from registry import activity
from registry.licences import check_fork_licence, get_licence
from registry.models import Design, User, Version
from registry.schemas import (
    Attribution,
    Contributor,
    DesignCreate,
    DesignRef,
    ForkCreate,
    Lineage,
    LineageNode,
)
from registry.service import create_design, create_version, version_ref

# A fork tree deeper than this is cut off in lineage answers (and said so by the counts).
MAX_LINEAGE_DEPTH = 64


def fork_version(session: Session, origin: Version, user: User, data: ForkCreate) -> Design:
    """Fork ``origin`` into ``user``'s namespace; 422 naming the rule if the licence may not."""
    source = origin.design
    source_licence = get_licence(source.license)
    target_licence = get_licence(data.license) if data.license else source_licence
    check_fork_licence(source_licence, target_licence)
    fork = create_design(
        session,
        user,
        DesignCreate(
            name=data.name or source.name,
            title=source.title,
            description=source.description,
            license=target_licence.id,
            tags=[t.tag for t in source.tags],
        ),
        forked_from_version_id=origin.id,
    )
    manifest = {k: v for k, v in origin.manifest.items() if k not in {"license", "licensor"}}
    create_version(
        session,
        fork,
        user,
        [(f.path, f.sha256, f.size) for f in origin.files],
        manifest=manifest,
        message=f"Fork of {source.owner.name}/{source.name}@{origin.number}",
        kind="fork",
        parents=[origin],
    )
    session.execute(
        update(Design).where(Design.id == source.id).values(fork_count=Design.fork_count + 1)
    )
    session.refresh(source, ["fork_count"])
    session.refresh(fork, ["forked_from"])
    origin_ref = version_ref(origin).model_dump()
    activity.record(session, fork, "fork.created", user, origin=origin_ref)
    activity.record(
        session,
        source,
        "design.forked",
        user,
        fork=f"{user.name}/{fork.name}",
        version=origin.number,
    )
    return fork


def ancestors(design: Design) -> list[DesignRef]:
    """The designs ``design`` was forked from, nearest first."""
    chain: list[DesignRef] = []
    seen = {design.id}
    origin = design.forked_from
    while origin is not None and origin.design_id not in seen and len(chain) < MAX_LINEAGE_DEPTH:
        seen.add(origin.design_id)
        chain.append(version_ref(origin))
        origin = origin.design.forked_from
    return chain


def is_descendant(candidate: Design, ancestor: Design) -> bool:
    return any(
        ref.owner.casefold() == ancestor.owner.name.casefold()
        and ref.name.casefold() == ancestor.name_folded
        for ref in ancestors(candidate)
    )


def lineage(session: Session, design: Design) -> Lineage:
    """Ancestors and the whole fork tree below ``design``, one query per level."""
    origin_version = aliased(Version)
    nodes: dict[int, LineageNode] = {}
    roots: list[LineageNode] = []
    frontier = [design.id]
    for _ in range(MAX_LINEAGE_DEPTH):
        if not frontier:
            break
        rows = session.execute(
            select(Design, origin_version.design_id, origin_version.number)
            .join(origin_version, Design.forked_from_version_id == origin_version.id)
            .where(origin_version.design_id.in_(frontier))
            .order_by(Design.id)
        ).all()
        frontier = []
        for child, parent_design_id, number in rows:
            node = LineageNode(
                owner=child.owner.name,
                name=child.name,
                forked_from_version=number,
                fork_count=child.fork_count,
                license=child.license,
                descendants=[],
            )
            nodes[child.id] = node
            (
                roots if parent_design_id == design.id else nodes[parent_design_id].descendants
            ).append(node)
            frontier.append(child.id)
    return Lineage(
        design=f"{design.owner.name}/{design.name}",
        ancestors=ancestors(design),
        descendants=roots,
        fork_count=design.fork_count,
        descendant_count=len(nodes),
    )


def attribution(version: Version) -> Attribution:
    design = version.design
    licence = get_licence(version.license)
    names = [c["name"] for c in version.contributors]
    origins = ancestors(design)
    credit = ", ".join(names) if names else design.owner.name
    notice = f"{design.title} ({design.owner.name}/{design.name}@{version.number}) by {credit}"
    if origins:
        notice += ", based on " + ", ".join(f"{o.owner}/{o.name}@{o.version}" for o in origins)
    notice += f". Licensed under {licence.name} ({licence.id})."
    return Attribution(
        design=f"{design.owner.name}/{design.name}",
        version=version.number,
        license=licence.id,
        licence_name=licence.name,
        contributors=[Contributor(name=c["name"], since=c["since"]) for c in version.contributors],
        origins=origins,
        notice=notice,
    )


def check_merge_licence(source: Design, target: Design) -> None:
    """A fork's work may flow back only if the origin's licence is one the fork's allows."""
    try:
        check_fork_licence(get_licence(source.license), get_licence(target.license))
    except Invalid as exc:
        exc.detail = f"the change cannot be merged: {exc.detail}"
        raise
