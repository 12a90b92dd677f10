"""Operators resolve disconnected jobs: ``POST /api/v1/jobs/{id}/resolve``.

A job whose lease was lost may have made its parts, half of them, or none: only a person at the
fablab knows. Its operator (``fablabs.operator_id``) or a hub admin says what happened: the
parts were made (``completed``), make them elsewhere (``reroute``, never at this fablab again
for this line), or give the line up (``cancel``). Each resolution is an alert event in the
order's public log, with the note.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as FastAPIPath
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dgml.db import utcnow
from dgml.deps import Caller, Principal, ServicesDep, WriteSessionDep
from dgml.errors import Conflict, Forbidden
from dgml.outbox import dispatch
from router.agent_api import Text
from router.agent_jobs import fresh, job_order_id, lock_order
from router.lifecycle import add_event, request_placement, set_line_state
from router.models import Fablab, Job, JobState, OrderState

router = APIRouter(prefix="/api/v1", tags=["operators"])
Id = Annotated[int, FastAPIPath(ge=1, le=2**31 - 1)]


class Action(StrEnum):
    COMPLETED = "completed"
    REROUTE = "reroute"
    CANCEL = "cancel"


_DONE = {Action.REROUTE: "re-routed", Action.CANCEL: "cancelled"}


class Resolve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action
    note: Text = Field(default="", max_length=1000)


class Resolved(BaseModel):
    job: int
    order_id: int
    line: int
    action: Action
    state: str
    line_state: str
    resolved_at: datetime


def _check_operator(session: Session, caller: Principal, job: Job) -> None:
    if caller.is_admin:
        return
    fablab = session.get(Fablab, job.fablab_id)
    if fablab is None or fablab.operator_id != caller.id:
        raise Forbidden(f"only the operator of {job.fablab_id} or an admin resolves its jobs")


def resolve_job(
    session: Session, caller: Principal, job_id: int, data: Resolve, now: datetime
) -> Job:
    """Apply the operator's decision to a disconnected job and its line."""
    order = lock_order(session, job_order_id(session, job_id))
    job = fresh(session, Job, job_id)
    _check_operator(session, caller, job)
    if job.state != JobState.DISCONNECTED:
        raise Conflict(
            f"job {job_id} is {job.state}; only a disconnected job is resolved", state=job.state
        )
    line = job.line
    holds = line.state == OrderState.DISCONNECTED and line.fablab_id == job.fablab_id
    note = f": {data.note}" if data.note else ""
    job.finished_at = job.updated_at = now
    if data.action == Action.COMPLETED:
        job.state = JobState.COMPLETED
        job.percent = 100.0
        if holds:
            line.reason = None
            set_line_state(session, line, OrderState.COMPLETED)
    else:
        job.state = JobState.FAILED
        job.reason = f"{_DONE[data.action]} by the operator{note}"
    add_event(
        session,
        order.id,
        "resolved",
        line=line,
        fablab_id=job.fablab_id,
        alert=True,
        job=job.id,
        action=data.action.value,
        note=data.note,
        by=caller.name,
    )
    if holds and data.action == Action.REROUTE:
        request_placement(session, line, reason=job.reason or "", exclude=job.fablab_id)
    elif holds and data.action == Action.CANCEL:
        set_line_state(session, line, OrderState.CANCELLED, reason=job.reason)
    return job


@router.post("/jobs/{job_id}/resolve", response_model=Resolved)
def resolve(
    job_id: Id,
    data: Resolve,
    caller: Caller,
    services: ServicesDep,
    session: WriteSessionDep,
) -> Resolved:
    """Resolve a disconnected job (its fablab's operator, or an admin)."""
    now = utcnow()
    job = resolve_job(session, caller, job_id, data, now)
    session.commit()
    if data.action == Action.REROUTE and services.redis is not None:
        dispatch(services.sessions, services.redis)
    return Resolved(
        job=job.id,
        order_id=job.line.order_id,
        line=job.line.number,
        action=data.action,
        state=job.state,
        line_state=job.line.state,
        resolved_at=now,
    )
