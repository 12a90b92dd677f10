"""Change requests: a fork's version proposed back to its origin, accepted or declined by a
maintainer of the origin. Accepting writes a new origin version whose parents are the origin's
head and the fork's version."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dgml.db import utcnow
from dgml.errors import Conflict, Invalid, NotFound
from registry import activity
from registry.forks import check_merge_licence, is_descendant
from registry.models import ChangeRequest, Design, User, Version
from registry.pagination import keyset_page
from registry.schemas import ChangeRequestCreate, ChangeRequestPublic, Page
from registry.service import (
    create_version,
    get_design,
    get_version,
    require_maintainer,
    version_ref,
)


def open_change_request(
    session: Session, target: Design, user: User, data: ChangeRequestCreate
) -> ChangeRequest:
    source_design = get_design(session, data.source.owner, data.source.name)
    source = get_version(session, source_design, data.source.version)
    if source_design.id == target.id:
        raise Invalid(
            "a change request comes from a fork, not from the design itself", field="from"
        )
    if not is_descendant(source_design, target):
        raise Invalid(
            f"{source_design.owner.name}/{source_design.name} is not a fork of "
            f"{target.owner.name}/{target.name}",
            field="from",
        )
    check_merge_licence(source_design, target)
    request = ChangeRequest(
        design_id=target.id,
        design=target,
        source_version_id=source.id,
        source_version=source,
        author_id=user.id,
        author=user,
        title=data.title,
        message=data.message,
    )
    session.add(request)
    session.flush()
    activity.record(
        session,
        target,
        "change_request.opened",
        user,
        id=request.id,
        source=version_ref(source).model_dump(),
        title=data.title,
    )
    return request


def get_change_request(session: Session, design: Design, request_id: int) -> ChangeRequest:
    request = session.get(ChangeRequest, request_id)
    if request is None or request.design_id != design.id:
        raise NotFound(f"no change request {request_id} on {design.owner.name}/{design.name}")
    return request


def _decide(request: ChangeRequest, user: User, state: str, message: str) -> None:
    require_maintainer(request.design, user, "decide on change requests")
    if request.state != "open":
        raise Conflict(
            f"change request {request.id} is already {request.state}", state=request.state
        )
    request.state = state
    request.decided_by_id = user.id
    request.decided_by = user
    request.decided_at = utcnow()
    request.decision_message = message


def accept(session: Session, request: ChangeRequest, user: User, message: str) -> Version:
    target = request.design
    _decide(request, user, "accepted", message)
    if target.archived:
        raise Conflict(f"{target.owner.name}/{target.name} is archived")
    check_merge_licence(request.source_version.design, target)
    source = request.source_version
    # Lock the design row so that the head read here is still the head when the merge is written.
    session.execute(select(Design.id).where(Design.id == target.id).with_for_update())
    session.refresh(target, ["version_count"])
    head = session.scalar(
        select(Version).where(
            Version.design_id == target.id, Version.number == target.version_count
        )
    )
    text = f"Merge change request #{request.id}: {request.title}"
    if message:
        text += f"\n\n{message}"
    merged = create_version(
        session,
        target,
        user,
        [(f.path, f.sha256, f.size) for f in source.files],
        manifest={k: v for k, v in source.manifest.items() if k not in {"license", "licensor"}},
        message=text,
        kind="merge",
        parents=[p for p in (head, source) if p is not None],
    )
    request.merged_version_id = merged.id
    request.merged_version = merged
    activity.record(
        session, target, "change_request.accepted", user, id=request.id, version=merged.number
    )
    return merged


def decline(session: Session, request: ChangeRequest, user: User, message: str) -> None:
    _decide(request, user, "declined", message)
    activity.record(
        session, request.design, "change_request.declined", user, id=request.id, message=message
    )


def change_request_public(request: ChangeRequest) -> ChangeRequestPublic:
    design = request.design
    return ChangeRequestPublic(
        id=request.id,
        design=f"{design.owner.name}/{design.name}",
        source=version_ref(request.source_version),
        title=request.title,
        message=request.message,
        state=request.state,
        author=request.author.name,
        created_at=request.created_at,
        decided_by=request.decided_by.name if request.decided_by else None,
        decided_at=request.decided_at,
        decision_message=request.decision_message,
        merged_version=request.merged_version.number if request.merged_version else None,
    )


def list_change_requests(
    session: Session, design: Design, state: str | None, cursor: str | None, limit: int
) -> Page[ChangeRequestPublic]:
    query = select(ChangeRequest).where(ChangeRequest.design_id == design.id)
    if state:
        if state not in {"open", "accepted", "declined"}:
            raise Invalid("state is one of open, accepted, declined", field="state")
        query = query.where(ChangeRequest.state == state)
    rows, next_cursor = keyset_page(session, query, ChangeRequest.id, cursor, limit)
    return Page(items=[change_request_public(r) for r in rows], next_cursor=next_cursor)
