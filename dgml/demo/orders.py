"""The demo's orders: makers in French cities order parts through ``POST /api/v1/orders``, one
order asks for what no lab offers, and the demo follows each order to its end.

The summary row of an order comes from the public order view (its lines, fablab, distance, km
avoided, reason) and, for the slicer's estimate, from the job the lab completed: the estimate
is in the job's result, which the hub keeps with the job.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.demo.hub import DemoError
from dgml.demo.library import API, Account, check
from router.models import Job, JobState, OrderLine

ORDER_TIMEOUT_S = 240.0
FINAL = frozenset({"completed", "failed", "unplaceable", "cancelled"})


@dataclass(frozen=True)
class City:
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class OrderPlan:
    """One order of the scenario: who orders what, from where."""

    maker: str
    city: City
    design: str  # owner/name
    material: str
    quantity: int
    process: str = "fdm"
    params: dict[str, Any] = field(default_factory=dict)
    expect: str = "completed"
    note: str = ""


@dataclass
class OrderRow:
    """What the summary shows of one order."""

    order: int
    design: str
    city: str
    maker: str
    state: str
    expected: str
    note: str = ""
    fablab: str | None = None
    fablab_id: str | None = None
    lab_lat: float | None = None
    lab_lon: float | None = None
    lat: float = 0.0
    lon: float = 0.0
    distance_km: float | None = None
    km_avoided: float | None = None
    estimate_s: float | None = None
    filament_g: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CITIES = {
    c.name: c
    for c in (
        City("Paris", 48.8566, 2.3522),
        City("Lyon", 45.7640, 4.8357),
        City("Marseille", 43.2965, 5.3698),
        City("Toulouse", 43.6047, 1.4442),
        City("Bordeaux", 44.8378, -0.5792),
        City("Rennes", 48.1173, -1.6778),
        City("Lille", 50.6292, 3.0573),
    )
}


def place(http: httpx.Client, maker: Account, plan: OrderPlan, version: int | str) -> int:
    """Post the order (with a fresh idempotency key); its id."""
    body: dict[str, Any] = {
        "design": plan.design,
        "version": version,
        "process": plan.process,
        "material": plan.material,
        "quantity": plan.quantity,
        "location": {"lat": plan.city.lat, "lon": plan.city.lon},
        "purpose": "personal",
        "delivery": {"name": maker.name.title(), "address": f"{plan.city.name}, France"},
    }
    if plan.params:
        body["params"] = plan.params
    headers = {**maker.headers, "Idempotency-Key": uuid.uuid4().hex}
    answer = check(
        http.post(f"{API}/orders", json=body, headers=headers), f"ordering {plan.design}"
    )
    return int(answer["id"])


def wait_orders(
    http: httpx.Client, ids: list[int], timeout: float = ORDER_TIMEOUT_S
) -> dict[int, dict[str, Any]]:
    """Follow the orders until each has ended; their last public views."""
    deadline = time.monotonic() + timeout
    views: dict[int, dict[str, Any]] = {}
    while True:
        for order_id in ids:
            if views.get(order_id, {}).get("state") not in FINAL:
                views[order_id] = check(http.get(f"{API}/orders/{order_id}"), f"order {order_id}")
        open_ = [i for i in ids if views[i]["state"] not in FINAL]
        if not open_:
            return views
        if time.monotonic() > deadline:
            states = ", ".join(f"{i}: {views[i]['state']}" for i in open_)
            raise DemoError(f"orders still open after {timeout:.0f} s ({states})")
        time.sleep(0.25)


def _estimates(sessions: sessionmaker[Session], order_id: int) -> tuple[float | None, float | None]:
    """Seconds and grams the slicer estimated for the order's completed jobs, summed."""
    with sessions() as session:
        results = session.scalars(
            select(Job.result)
            .join(OrderLine, OrderLine.id == Job.line_id)
            .where(OrderLine.order_id == order_id, Job.state == JobState.COMPLETED)
        ).all()
    seconds = grams = 0.0
    found = False
    for result in results:
        estimate = (result or {}).get("estimate") or {}
        if estimate.get("estimated_s") is not None:
            found = True
            seconds += float(estimate["estimated_s"])
            grams += float(estimate.get("filament_g") or 0.0)
    return (seconds, grams) if found else (None, None)


def row_of(
    view: dict[str, Any],
    plan: OrderPlan,
    sessions: sessionmaker[Session],
    places: dict[str, tuple[float, float]],
) -> OrderRow:
    """The summary row of an ended order: its first line's lab, or the reason it has none."""
    lines = view.get("lines") or []
    made = next((line for line in lines if line.get("fablab")), None)
    row = OrderRow(
        order=int(view["id"]),
        design=f"{view['design']}@{view['version']}",
        city=plan.city.name,
        maker=plan.maker,
        state=str(view["state"]),
        expected=plan.expect,
        note=plan.note,
        lat=plan.city.lat,
        lon=plan.city.lon,
        reason=view.get("reason"),
    )
    if made is not None and view["state"] != "unplaceable":
        row.fablab = made["fablab"].get("name") or made["fablab"]["id"]
        row.fablab_id = made["fablab"]["id"]
        row.lab_lat, row.lab_lon = places.get(row.fablab_id, (None, None))
        row.distance_km = made.get("distance_km")
        row.km_avoided = sum(float(line.get("km_avoided") or 0.0) for line in lines)
        row.estimate_s, row.filament_g = _estimates(sessions, row.order)
    return row


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"
