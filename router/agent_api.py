"""The agent-facing HTTP API under ``/api/v1/agent``: claim offers, accept or decline them, and
report on the jobs.

Every route takes the fablab's agent token (``Authorization: Bearer dgml_agent_...``) and sees
only that fablab's offers and jobs: another fablab's answers 404, as an unknown id does. Each
call also counts as a sign of life of the fablab (:data:`router.directory.AgentCaller`).

A claim that finds nothing waits for a wake-up on the fablab's Redis channel without holding a
database connection or a worker thread (:class:`router.notify.OfferWaiters`), so a hub keeps
many agents waiting at once.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi import Path as FastAPIPath
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dgml import outbox
from dgml.db import utcnow
from dgml.deps import Services, ServicesDep, SessionDep, WriteSessionDep
from dgml.errors import Conflict, Invalid
from router import agent_jobs, agent_reports
from router.agent_jobs import JobPublic, OfferDecision, job_public, offer_decision
from router.agent_offers import OfferPublic, open_offers
from router.directory import AgentCaller
from router.notify import OfferWaiters

# A job's result is a small summary (times, weights, a photo's URL), not a file.
RESULT_MAX_BYTES = 16 * 1024
KEY_MAX = 200


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One set of claim waiters per app, listening on the app's own event loop."""
    waiters = OfferWaiters(app.state.services.settings.redis_url)
    app.state.offer_waiters = waiters
    try:
        yield
    finally:
        await waiters.close()


router = APIRouter(prefix="/api/v1/agent", tags=["agent"], lifespan=_lifespan)
Id = Annotated[int, FastAPIPath(ge=1, le=2**31 - 1)]


def clean_text(value: str) -> str:
    """Text that goes into the log: no NUL or other control characters but line breaks."""
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in value):
        raise ValueError("must not contain control characters")
    return value


Text = Annotated[str, AfterValidator(clean_text)]


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=1, max_length=500)


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(ge=0, le=100, allow_inf_nan=False)
    message: Text = Field(default="", max_length=500)


class Complete(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: dict[str, Any] = Field(default_factory=dict)

    @field_validator("result")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
        except (ValueError, RecursionError):
            raise ValueError(
                "must be plain JSON (no NaN or infinities, not nested deeply)"
            ) from None
        if size > RESULT_MAX_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {RESULT_MAX_BYTES}")
        return value


class Fail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=1, max_length=1000)


class Claimed(BaseModel):
    offers: list[OfferPublic]


class Lease(BaseModel):
    id: int
    state: str
    lease_expires_at: datetime


class JobList(BaseModel):
    jobs: list[JobPublic]


def _send_outbox(services: Services) -> None:
    if services.redis is not None:
        outbox.dispatch(services.sessions, services.redis)


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > KEY_MAX or not key.isascii() or not key.isprintable():
        raise Invalid(
            f"Idempotency-Key is 1 to {KEY_MAX} printable ASCII characters",
            field="Idempotency-Key",
        )
    return key


# --- claim ------------------------------------------------------------------------------------


def _look(services: Services, fablab_id: str) -> list[OfferPublic]:
    with services.sessions() as session:
        return open_offers(session, fablab_id, utcnow())


@router.post(
    "/claim",
    response_model=Claimed,
    responses={204: {"description": "no offer came within the wait"}},
)
async def claim(
    request: Request,
    agent: AgentCaller,
    services: ServicesDep,
    wait: Annotated[
        float,
        Query(ge=0, allow_inf_nan=False, description="seconds to wait for an offer (capped)"),
    ] = 0.0,
) -> Claimed | Response:
    """The fablab's open offers, oldest first; with none, wait up to ``wait`` seconds (capped at
    the hub's ``claim_wait_max_s``) for one, then 204."""
    wait = min(wait, services.settings.claim_wait_max_s)
    if wait <= 0:
        offers = await run_in_threadpool(_look, services, agent.fablab_id)
        return Claimed(offers=offers) if offers else Response(status_code=204)
    waiters: OfferWaiters = request.app.state.offer_waiters
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with waiters.watch(agent.fablab_id) as watch:
        while True:
            offers = await run_in_threadpool(_look, services, agent.fablab_id)
            if offers:
                return Claimed(offers=offers)
            if not await watch.wait(deadline - loop.time()):
                return Response(status_code=204)


# --- offers -----------------------------------------------------------------------------------


@router.post("/offers/{offer_id}/accept", response_model=JobPublic)
def accept(
    offer_id: Id,
    agent: AgentCaller,
    services: ServicesDep,
    session: WriteSessionDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JobPublic:
    """Accept an open offer: the job, with the order's delivery details and a lease to keep
    alive by heartbeats. A retry with the same ``Idempotency-Key`` answers the same job; any
    other accept of the offer is 409."""
    key = _idempotency_key(idempotency_key)
    try:
        job = agent_jobs.accept(
            session, services.settings, agent.fablab_id, offer_id, key=key, now=utcnow()
        )
    except Conflict:
        session.rollback()  # let go of the write lock before the outbox is handed over
        _send_outbox(services)  # an expired offer found here was routed again
        raise
    session.commit()
    return job_public(session, job)


@router.post("/offers/{offer_id}/decline", response_model=OfferDecision)
def decline(
    offer_id: Id,
    data: Decline,
    agent: AgentCaller,
    services: ServicesDep,
    session: WriteSessionDep,
) -> OfferDecision:
    """Decline an open offer; the order is routed again without this fablab."""
    offer = agent_jobs.decline(session, agent.fablab_id, offer_id, reason=data.reason, now=utcnow())
    session.commit()
    _send_outbox(services)
    return offer_decision(offer)


# --- jobs -------------------------------------------------------------------------------------


@router.get("/jobs", response_model=JobList)
def list_jobs(agent: AgentCaller, session: SessionDep) -> JobList:
    """The fablab's jobs in progress or disconnected: what a restarted agent picks up."""
    jobs = agent_jobs.current_jobs(session, agent.fablab_id)
    return JobList(jobs=[job_public(session, job) for job in jobs])


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: Id, agent: AgentCaller, session: SessionDep) -> JobPublic:
    return job_public(session, agent_jobs.get_job(session, agent.fablab_id, job_id))


def _answer(session: Session, job: Any) -> JobPublic:
    session.commit()
    return job_public(session, job)


@router.post("/jobs/{job_id}/heartbeat", response_model=Lease)
def heartbeat(
    job_id: Id, agent: AgentCaller, services: ServicesDep, session: WriteSessionDep
) -> Lease:
    """Keep the lease of a running job; 409 once it was lost (an operator resolves the job)."""
    job = agent_reports.heartbeat(session, services.settings, agent.fablab_id, job_id, now=utcnow())
    session.commit()
    return Lease(id=job.id, state=job.state, lease_expires_at=job.lease_expires_at)


@router.post("/jobs/{job_id}/progress", response_model=JobPublic)
def progress(
    job_id: Id,
    data: Progress,
    agent: AgentCaller,
    services: ServicesDep,
    session: WriteSessionDep,
) -> JobPublic:
    """Report how far the job is (this also keeps its lease)."""
    job = agent_reports.progress(
        session,
        services.settings,
        agent.fablab_id,
        job_id,
        percent=data.percent,
        message=data.message,
        now=utcnow(),
    )
    return _answer(session, job)


@router.post("/jobs/{job_id}/complete", response_model=JobPublic)
def complete(job_id: Id, data: Complete, agent: AgentCaller, session: WriteSessionDep) -> JobPublic:
    """The job is done, with a small JSON result. A replay with the same result is answered
    unchanged; another result is 409."""
    job = agent_reports.complete(session, agent.fablab_id, job_id, result=data.result, now=utcnow())
    return _answer(session, job)


@router.post("/jobs/{job_id}/fail", response_model=JobPublic)
def fail(
    job_id: Id,
    data: Fail,
    agent: AgentCaller,
    services: ServicesDep,
    session: WriteSessionDep,
) -> JobPublic:
    """The job failed here: the order is routed elsewhere, or given up after too many
    failures. A replay is answered unchanged."""
    job = agent_reports.fail(
        session, services.settings, agent.fablab_id, job_id, reason=data.reason, now=utcnow()
    )
    answer = _answer(session, job)
    _send_outbox(services)
    return answer
