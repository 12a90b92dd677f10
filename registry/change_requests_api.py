"""HTTP routes of change requests: a fork's version proposed back to its origin."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks
from sqlalchemy.orm import Session

from dgml.deps import Caller, Principal, Services, ServicesDep, SessionDep, WriteSessionDep
from registry import builds, change_requests, service
from registry.models import Version
from registry.schemas import (
    ChangeRequestCreate,
    ChangeRequestDecision,
    ChangeRequestPublic,
    Page,
)
from registry.web import DESIGN, Cursor, RequestId, page_size, send_outbox, stored_reader

router = APIRouter(prefix="/api/v1")


@router.post(
    DESIGN + "/change-requests",
    response_model=ChangeRequestPublic,
    status_code=201,
    tags=["change requests"],
)
def open_change_request(
    owner: str, name: str, data: ChangeRequestCreate, caller: Caller, session: WriteSessionDep
) -> ChangeRequestPublic:
    design = service.get_design(session, owner, name)
    request = change_requests.open_change_request(session, design, caller.load(session), data)
    session.commit()
    return change_requests.change_request_public(request)


@router.get(
    DESIGN + "/change-requests",
    response_model=Page[ChangeRequestPublic],
    tags=["change requests"],
)
def list_change_requests(
    owner: str,
    name: str,
    services: ServicesDep,
    session: SessionDep,
    state: str | None = None,
    cursor: Cursor = None,
    limit: int | None = None,
) -> Page[ChangeRequestPublic]:
    design = service.get_design(session, owner, name)
    return change_requests.list_change_requests(
        session, design, state, cursor, page_size(services, limit)
    )


@router.get(
    DESIGN + "/change-requests/{request_id}",
    response_model=ChangeRequestPublic,
    tags=["change requests"],
)
def get_change_request(
    owner: str, name: str, request_id: RequestId, session: SessionDep
) -> ChangeRequestPublic:
    design = service.get_design(session, owner, name)
    return change_requests.change_request_public(
        change_requests.get_change_request(session, design, request_id)
    )


def _decide_change_request(
    session: Session,
    caller: Principal,
    owner: str,
    name: str,
    request_id: int,
    data: ChangeRequestDecision | None,
    decide,
    services: Services | None = None,
) -> ChangeRequestPublic:
    design = service.get_design(session, owner, name)
    request = change_requests.get_change_request(session, design, request_id)
    merged = decide(session, request, caller.load(session), data.message if data else "")
    if services is not None and isinstance(merged, Version):
        builds.request_default_build(session, merged, stored_reader(services, merged))
    session.commit()
    return change_requests.change_request_public(request)


@router.post(
    DESIGN + "/change-requests/{request_id}/accept",
    response_model=ChangeRequestPublic,
    tags=["change requests"],
)
def accept_change_request(
    owner: str,
    name: str,
    request_id: RequestId,
    caller: Caller,
    session: WriteSessionDep,
    services: ServicesDep,
    background: BackgroundTasks,
    data: ChangeRequestDecision | None = None,
) -> ChangeRequestPublic:
    """A maintainer merges the fork's version: a new version with two parents."""
    background.add_task(send_outbox, services)
    return _decide_change_request(
        session, caller, owner, name, request_id, data, change_requests.accept, services
    )


@router.post(
    DESIGN + "/change-requests/{request_id}/decline",
    response_model=ChangeRequestPublic,
    tags=["change requests"],
)
def decline_change_request(
    owner: str,
    name: str,
    request_id: RequestId,
    caller: Caller,
    session: WriteSessionDep,
    data: ChangeRequestDecision | None = None,
) -> ChangeRequestPublic:
    return _decide_change_request(
        session, caller, owner, name, request_id, data, change_requests.decline
    )
