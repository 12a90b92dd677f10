"""Placement as an RQ job: :func:`place_line` finds a fablab for one line of an order.

The job reads the order, works out what is made and how large it is (the geometry reports of
the version's model files, or of the parametric build made with the order's parameters), asks
:func:`router.placement.place` for a decision and stores what follows in one transaction: an
offer (expiring after ``Settings.offer_ttl_s``) to the winner, more lines with their own offers
when the quantity is split, a line ``unplaceable`` for what no fablab had room for, the decision
with its explanation (the order's first), and an event per step. The fablabs' agents are woken
once that has committed.

Idempotent: the job carries the line's placement attempt. A line that has moved on (placed,
cancelled, or routed again under a newer attempt) makes it do nothing, and the write re-checks
that under the line's lock, so two runs of one attempt never both offer it.

Waiting for geometry: while a report is pending, the line stays ``routing`` and the job puts a
retry of the same attempt on the RQ schedule (2 s, doubling to a minute: no busy loop). It also
looks at the checks and builds it waits for and posts again any whose job is gone (Redis was
wiped, or a worker died under it). After ``Settings.route_report_wait_s`` it gives up: ``failed``.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from redis import Redis
from rq.exceptions import DuplicateJobError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from dgml import outbox
from dgml.db import utcnow, write_session
from dgml.errors import Invalid
from dgml.metrics import PLACEMENT_SECONDS
from dgml.settings import Settings
from registry import validation
from registry.models import Build
from router import directory, facts, geo, placement
from router.decision import Decision
from router.lifecycle import add_event, lock_lines, set_line_state
from router.models import Fablab, Offer, Order, OrderLine, OrderState
from router.notify import notify_offer
from router.records import OrderRequest

log = logging.getLogger("dgml.router.routing")

FUNCTION = "router.routing.place_line"
QUEUE = "route"
# The decision stored with an order keeps this many candidates (counts by reason keep the rest).
STORED_CANDIDATES = 500


# --- what is made, and how large -------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The part's size: sorted extents that hold every file's part, and their volume."""

    extents_mm: tuple[float, float, float]
    volume_cm3: float | None


@dataclass(frozen=True)
class Waiting:
    reason: str
    # (path, sha256) of model files without a report yet.
    validations: list[tuple[str, str]] = field(default_factory=list)
    # The build that has not finished (or None).
    build_id: int | None = None


@dataclass(frozen=True)
class Broken:
    reason: str


Part = Ready | Waiting | Broken


def part_of(
    session: Session,
    version: facts.VersionFacts,
    build: Build | None,
    selected: list[str] | None,
) -> Part:
    """What the reports say of the files an order makes: ready, still coming, or broken."""
    if build is not None:
        if build.state in ("queued", "running"):
            return Waiting("waits for the parametric build", build_id=build.id)
        if build.state == "failed":
            return Broken(f"the parametric build failed: {build.error or 'no reason given'}")
        files = [(f["path"], f["sha256"]) for f in build.files]
    else:
        files = [(f.path, f.sha256) for f in version.files]
    files = [(p, s) for p, s in files if validation.reader_for(p)]
    if selected:
        missing = sorted(set(selected) - {p for p, _ in files})
        if missing:
            return Broken(f"there is no model file {missing[0]!r} to make")
        files = [(p, s) for p, s in files if p in selected]
    if not files:
        return Broken("there is no model file to make")
    keys = {(s, validation.reader_for(p)) for p, s in files}
    reports = facts.reports(session, keys)  # type: ignore[arg-type]
    rows = [(p, reports.get((s, validation.reader_for(p)))) for p, s in files]  # type: ignore[call-overload]
    waiting = [(p, s) for (p, s), (_, row) in zip(files, rows, strict=True) if row is None]
    if waiting:
        names = ", ".join(p for p, _ in waiting[:3])
        return Waiting(f"waits for the geometry report of {names}", validations=waiting)
    return size_of([(p, row) for p, row in rows if row is not None])


def size_of(rows: list[tuple[str, facts.ReportFacts]]) -> Part:
    """The box that holds each file's part in some orientation, or why it cannot be made."""
    extents = [0.0, 0.0, 0.0]
    volume: float | None = 0.0
    for path, row in rows:
        if row.verdict in ("fail", "unreadable"):
            return Broken(failure_reason(path, row))
        metrics = row.report.get("metrics") or {}
        size = metrics.get("size_mm")
        if not size or len(size) != 3:
            return Broken(f"the geometry report of {path} gives no size")
        for i, value in enumerate(sorted(float(v) for v in size)):
            extents[i] = max(extents[i], value)
        mm3 = metrics.get("volume_mm3")
        volume = None if volume is None or mm3 is None else volume + abs(float(mm3)) / 1000.0
    return Ready((extents[0], extents[1], extents[2]), volume or None)


def failure_reason(path: str, row: facts.ReportFacts) -> str:
    issues = [
        f"{i.get('code')}: {i.get('message')}"
        for i in row.report.get("issues", ())
        if i.get("severity") == "fail" or row.verdict == "unreadable"
    ]
    detail = "; ".join(issues[:3]) or "see the report"
    return f"the geometry report of {path} is {row.verdict}: {detail}"


# --- deciding ----------------------------------------------------------------------------------


def policy(settings: Settings) -> placement.Policy:
    weights = placement.Weights(
        distance_per_km=settings.route_km_per_km,
        wait_per_hour=settings.route_km_per_wait_hour,
        price_per_eur=settings.route_km_per_eur,
    )
    return placement.Policy(weights=weights, central=(settings.central_lat, settings.central_lon))


def order_request(
    order: Order,
    version: facts.VersionFacts,
    part: Ready,
    quantity: int,
    excluded: Iterable[str] = (),
) -> OrderRequest:
    return OrderRequest(
        process=order.process,
        material=order.material,
        quantity=quantity,
        lat=order.lat,
        lon=order.lon,
        purpose=order.purpose,  # type: ignore[arg-type]
        licence=version.license,
        modified=bool(order.params),
        extents_mm=part.extents_mm,
        volume_cm3=part.volume_cm3,
        excluded=frozenset(excluded),
    )


def fablab_positions(session: Session) -> list[Any]:
    """Every fablab's id and position: what the geo index is rebuilt from."""
    return list(session.execute(select(Fablab.id, Fablab.lat, Fablab.lon)).all())


def decide(
    session: Session, redis: Redis | None, request: OrderRequest, settings: Settings
) -> Decision:
    """The decision for ``request`` over the directory; without Redis, over every fablab."""

    def load(ids: list[str]) -> dict:
        return directory.load_records(session, ids, online_s=settings.agent_online_s)

    if redis is None:
        everyone = load([row.id for row in fablab_positions(session)])
        return placement.decide(request, everyone.values(), policy(settings))
    geo.ensure(redis, lambda: fablab_positions(session))
    with PLACEMENT_SECONDS.time():
        return placement.place(
            redis,
            request,
            load,
            policy(settings),
            load_all_fablabs=lambda: fablab_positions(session),
        )


def rejected_counts(decision: Decision) -> dict[str, int]:
    return dict(Counter(c.reason for c in decision.candidates if not c.ok and c.reason))


def why_nowhere(decision: Decision) -> str:
    """One sentence for a decision without a winner."""
    if decision.refused:
        return decision.refused_detail or decision.refused
    if not decision.candidates:
        return "no fablab of the directory can make it: the directory is empty"
    first: dict[str, str] = {}
    for c in decision.candidates:
        if not c.ok and c.reason:
            first.setdefault(c.reason, c.detail)
    counts = rejected_counts(decision)
    parts = [f"{n} {first[reason]} ({reason})" for reason, n in counts.items()]
    return f"none of the {len(decision.candidates)} fablabs considered can make it: " + "; ".join(
        parts
    )


def stored(decision: Decision) -> dict[str, Any]:
    """The decision as the order keeps it: JSON, its candidates capped, rejections counted."""
    data = decision.model_dump(mode="json")
    data["rejected"] = rejected_counts(decision)
    data["candidates_total"] = len(decision.candidates)
    data["candidates"] = data["candidates"][:STORED_CANDIDATES]
    return data


# --- the job -----------------------------------------------------------------------------------


def _context():
    from dgml.worker import context

    return context()


def _redis(settings: Settings) -> Redis:
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        return job.connection
    return Redis.from_url(str(settings.redis_url))


def _current(line: OrderLine | None, attempt: int) -> bool:
    return line is not None and line.attempt == attempt and line.state == OrderState.ROUTING


def locked_line(session: Session, line_id: int) -> OrderLine | None:
    """The line, its order and the order's other lines locked, the order first (every writer
    locks an order before its lines, so that a placement and a cancellation never wait for
    each other in a circle)."""
    order = session.scalar(
        select(Order)
        .join(OrderLine, OrderLine.order_id == Order.id)
        .where(OrderLine.id == line_id)
        .with_for_update(of=Order)
        .options(lazyload(Order.lines))
        .execution_options(populate_existing=True)
    )
    if order is None:
        return None
    lines = lock_lines(session, order.id)
    set_committed_value(order, "lines", lines)
    return next((line for line in lines if line.id == line_id), None)


def place_line(line_id: int, attempt: int, wait: int = 0) -> str:
    """The RQ job: place one line (see the module notes); what it did, as a word."""
    ctx = _context()
    redis = _redis(ctx.settings)
    with ctx.sessions() as session:
        found = session.execute(
            select(OrderLine, Order)
            .join(Order, Order.id == OrderLine.order_id)
            .where(OrderLine.id == line_id)
            .options(lazyload(Order.lines))
        ).first()
        if found is None or not _current(found[0], attempt):
            return "stale"
        line, order = found
        version = facts.version(session, order.version_id)
        if version is None:  # versions are never deleted
            return fail_line(ctx.sessions, line_id, attempt, "the order's version is gone")
        build = session.get(Build, order.build_id) if order.build_id else None
        part = part_of(session, version, build, order.files)
        since = line.updated_at
        decision = None
        if isinstance(part, Ready):
            try:
                request = order_request(order, version, part, line.quantity, line.excluded)
            except Invalid as exc:  # a report whose sizes no placement can use
                part = Broken(f"the part cannot be placed: {exc.detail}")
            else:
                decision = decide(session, redis, request, ctx.settings)
    if isinstance(part, Waiting):
        if utcnow() - since > timedelta(seconds=ctx.settings.route_report_wait_s):
            hours = ctx.settings.route_report_wait_s / 3600
            return fail_line(
                ctx.sessions, line_id, attempt, f"{part.reason}: gave up after {hours:g} h"
            )
        return wait_for(ctx, redis, line_id, attempt, wait, part)
    if isinstance(part, Broken):
        return fail_line(ctx.sessions, line_id, attempt, part.reason)
    assert decision is not None
    outcome, fablabs = apply_decision(ctx.sessions, ctx.settings, line_id, attempt, decision)
    for fablab_id in fablabs:
        notify_offer(redis, fablab_id)
    return outcome


def fail_line(sessions, line_id: int, attempt: int, reason: str) -> str:
    with write_session(sessions) as session:
        line = locked_line(session, line_id)
        if line is None or not _current(line, attempt):
            return "stale"
        set_line_state(session, line, OrderState.FAILED, reason=reason)
        add_event(session, line.order_id, "failed", line=line, reason=reason)
    return "failed"


def wait_for(ctx, redis: Redis, line_id: int, attempt: int, wait: int, part: Waiting) -> str:
    """Leave the line routing, revive the work it waits for, and come back later."""
    from router.reconcile import revive

    with write_session(ctx.sessions) as session:
        line = locked_line(session, line_id)
        if line is None or not _current(line, attempt):
            return "stale"
        revived = revive(session, redis, part.validations, part.build_id)
        if wait == 0:
            add_event(session, line.order_id, "waiting", line=line, reason=part.reason)
    if revived:
        outbox.dispatch(ctx.sessions, redis)
    settings = ctx.settings
    delay = min(settings.route_recheck_max_s, settings.route_recheck_s * 2 ** min(wait, 30))
    with contextlib.suppress(DuplicateJobError):
        outbox.queue(redis, QUEUE).enqueue_in(
            timedelta(seconds=delay),
            FUNCTION,
            kwargs={"line_id": line_id, "attempt": attempt, "wait": wait + 1},
            job_id=f"place-{line_id}-{attempt}-w{wait + 1}",
            timeout=300,
            result_ttl=600,
            failure_ttl=7 * 24 * 3600,
            unique=True,
        )
    return "waiting"


def apply_decision(
    sessions, settings: Settings, line_id: int, attempt: int, decision: Decision
) -> tuple[str, list[str]]:
    """Store what the decision says for the line; the outcome and the fablabs offered to."""
    with write_session(sessions) as session:
        line = locked_line(session, line_id)
        if line is None or not _current(line, attempt):
            return "stale", []
        order = line.order
        if order.decision is None:
            order.decision = stored(decision)
        if decision.winner is None or not decision.lines:
            reason = why_nowhere(decision)
            set_line_state(session, line, OrderState.UNPLACEABLE, reason=reason)
            add_event(
                session,
                order.id,
                "unplaceable",
                line=line,
                reason=reason,
                refused=decision.refused,
                rejected=rejected_counts(decision),
            )
            return "unplaceable", []
        offered = offer_lines(session, settings, order, line, decision)
    return "offered", offered


def offer_lines(
    session: Session, settings: Settings, order: Order, line: OrderLine, decision: Decision
) -> list[str]:
    """An offer per line of the decision's split (the first on ``line``, the others on new
    lines), and an unplaceable line for what nobody had room for."""
    winner = decision.winner
    assert winner is not None and decision.km_avoided is not None
    central_km = decision.km_avoided + winner.distance_km
    waits = {c.fablab_id: c.expected_wait_h for c in decision.candidates if c.ok}
    expires = utcnow() + timedelta(seconds=settings.offer_ttl_s)
    number = line.number
    if len(decision.lines) > 1 or decision.unassigned:  # new lines follow the last one
        last = session.scalar(
            select(func.max(OrderLine.number)).where(OrderLine.order_id == order.id)
        )
        number = int(last or line.number)
    targets: list[OrderLine] = []
    for i, split in enumerate(decision.lines):
        if i == 0:
            target = line
        else:
            number += 1
            target = OrderLine(order=order, number=number, attempt=1, excluded=list(line.excluded))
            session.add(target)
        target.quantity = split.quantity
        target.fablab_id = split.fablab_id
        target.reason = None
        target.distance_km = round(split.distance_km, 3)
        target.km_avoided = round(central_km - split.distance_km, 3)
        session.add(
            Offer(
                line=target, fablab_id=split.fablab_id, quantity=split.quantity, expires_at=expires
            )
        )
        set_line_state(session, target, OrderState.OFFERED)
        targets.append(target)
    session.flush()
    for target in targets:
        wait_h = waits.get(target.fablab_id or "")
        add_event(
            session,
            order.id,
            "offered",
            line=target,
            fablab_id=target.fablab_id,
            quantity=target.quantity,
            attempt=target.attempt,
            distance_km=target.distance_km,
            expected_wait_h=None if wait_h is None else round(wait_h, 3),
            km_avoided=target.km_avoided,
            expires_at=expires.isoformat(),
            considered=len(decision.candidates),
            rejected=rejected_counts(decision),
        )
    if decision.unassigned:
        unplaceable_rest(session, order, line, decision.unassigned, number + 1)
    if len(decision.lines) > 1 or decision.unassigned:
        add_event(
            session,
            order.id,
            "split",
            line=line,
            into=[
                {"line": t.number, "fablab_id": t.fablab_id, "quantity": t.quantity}
                for t in targets
            ],
            unassigned=decision.unassigned,
        )
    return list(dict.fromkeys(t.fablab_id for t in targets if t.fablab_id))


def unplaceable_rest(
    session: Session, order: Order, line: OrderLine, quantity: int, number: int
) -> None:
    reason = f"no fablab near enough had room for {quantity} more of this order"
    rest = OrderLine(
        order=order, number=number, quantity=quantity, attempt=1, excluded=list(line.excluded)
    )
    session.add(rest)
    set_line_state(session, rest, OrderState.UNPLACEABLE, reason=reason)
    session.flush()
    add_event(session, order.id, "unplaceable", line=rest, reason=reason)


def dry_run_part(session: Session, target) -> Part:
    """The part of an order not yet stored (a dry run): its build must already exist."""
    if target.build_params is not None and target.build is None:
        return Waiting("the parametric build with these parameters has not been made yet")
    return part_of(session, target.version, target.build, target.files)
