"""``dgml order``, ``dgml orders``, ``dgml order-status`` and ``dgml order-cancel``: having a
design made near you, and following the order to its end.

Decisions:

- Each ``dgml order`` makes one idempotency key (a UUID) and sends it with the order; a request
  whose answer was lost is sent again with the same key (:meth:`dgml.client.Hub.place_order`),
  so a network error never orders twice. Running the command again is a new order.
- Placement runs on the hub after the order is stored. ``order`` asks again every half second
  for up to ``--wait`` seconds (a spinner on a terminal) and then shows where the order went
  and why; an order still looking for a fablab by then is not an error: it goes on, and
  ``order-status --watch`` follows it.
- The hub has no push channel for makers, so ``--watch`` polls: every half second at first,
  then less often (up to every ten seconds) while nothing changes, and often again as soon as
  something does. Each event is printed once. A hub that stops answering is asked again, quietly
  after the first warning, for up to five minutes.
- Exit codes: 0 placed (or still being placed) / completed; 1 an order that no fablab can make,
  that failed or was cancelled, and every refusal of the hub; 2 bad usage, including input the
  hub refuses as invalid (an unknown process or material). Ctrl-C stops waiting or watching
  with 130; the order itself goes on.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dgml.client import Hub, HubFailure, HubUnreachable
from dgml.commands.common import (
    JsonOpt,
    ServerOpt,
    connect,
    err,
    out,
    parse_design,
    print_json,
    table_console,
)
from dgml.commands.order_view import (
    FINAL,
    PLACING,
    decision_texts,
    event_key,
    event_text,
    fablab_names,
    head,
    line_texts,
    state_text,
    when_text,
)
from dgml.errors import DgmlError

PLACEMENT_POLL_S = 0.5
WATCH_MIN_S, WATCH_MAX_S = 0.5, 10.0
WATCH_GIVE_UP_S = 300.0
INTERRUPTED = 130
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_NEAR_RE = re.compile(rf"^\s*({_NUMBER})\s*[,;\s]\s*({_NUMBER})\s*$")
_PARAM_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
OrderId = Annotated[int, typer.Argument(min=1, help="The order's number.", metavar="ID")]


# --- reading the options -----------------------------------------------------------------------


def parse_near(text: str) -> tuple[float, float]:
    """``LAT,LON`` in degrees; bad usage (exit 2) for anything else or out of range."""
    match = _NEAR_RE.match(text)
    if not match:
        raise typer.BadParameter(
            f"give LAT,LON in degrees, such as 45.76,4.84, not {text!r}", param_hint="--near"
        )
    lat, lon = float(match.group(1)), float(match.group(2))
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise typer.BadParameter(f"latitude {lat} is not between -90 and 90", param_hint="--near")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise typer.BadParameter(
            f"longitude {lon} is not between -180 and 180", param_hint="--near"
        )
    return lat, lon


def parse_params(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; a value is read as JSON when it is JSON (25, 2.5, true, "25"),
    else taken as text."""
    params: dict[str, Any] = {}
    for item in items:
        match = _PARAM_RE.match(item)
        if not match:
            raise typer.BadParameter(
                f"give NAME=VALUE (a name of letters, digits and _), not {item!r}",
                param_hint="--param",
            )
        name, raw = match.group(1), match.group(2)
        if name in params:
            raise typer.BadParameter(f"{name} is given twice", param_hint="--param")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        params[name] = raw if isinstance(value, (dict, list)) or value is None else value
    return params


# --- dgml order --------------------------------------------------------------------------------


def _await_placement(hub: Hub, doc: dict[str, Any], seconds: float, quiet: bool) -> dict[str, Any]:
    """Ask again until the order has left ``accepted``/``routing`` or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    spinner = err.status("finding the nearest fablab...") if err.is_terminal and not quiet else None
    try:
        if spinner:
            spinner.start()
        while doc["state"] in PLACING and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(PLACEMENT_POLL_S, left))
            doc = hub.order(doc["id"])
    finally:
        if spinner:
            spinner.stop()
    return doc


def _show_order(doc: dict[str, Any], *, events: bool = False) -> None:
    out.print(head(doc), highlight=False)
    for text in line_texts(doc):
        out.print(f"  {text}", highlight=False)
    reasons = decision_texts(doc)
    if reasons:
        out.print("Why not:" if doc["state"] == "unplaceable" else "Why:", highlight=False)
        for text in reasons:
            out.print(f"  {text}", highlight=False)
    if events:
        names = fablab_names(doc)
        out.print("Events:", highlight=False)
        for event in doc.get("events") or []:
            out.print(f"  {event_text(event, names)}", highlight=False)


def _ended_badly(doc: dict[str, Any]) -> DgmlError:
    reason = doc.get("reason") or "no reason given"
    return DgmlError(f"order {doc['id']} is {doc['state']}: {reason}")


def order(
    design: Annotated[
        str, typer.Argument(help="OWNER/NAME, OWNER/NAME@N or OWNER/NAME@TAG (default: latest).")
    ],
    process: Annotated[
        str, typer.Option("--process", help="How to make it: fdm, sla, sls, laser, cnc...")
    ],
    material: Annotated[str, typer.Option("--material", help="In what: pla, petg, plywood-3mm...")],
    near: Annotated[
        str, typer.Option("--near", metavar="LAT,LON", help="Where you are, in degrees.")
    ],
    qty: Annotated[int, typer.Option("--qty", min=1, help="How many parts.")] = 1,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="NAME=VALUE", help="A parameter value (repeatable)."),
    ] = None,
    commercial: Annotated[
        bool, typer.Option("--commercial", help="The parts are for sale or for a business.")
    ] = False,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="Seconds to wait for the placement (0: don't)."),
    ] = 30.0,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Order parts of a design, made at the nearest fablab that can: shows where and why."""
    owner, name, ref = parse_design(design)
    lat, lon = parse_near(near)
    params = parse_params(param or [])
    version: int | str = int(ref) if ref and ref.isdigit() else (ref or "latest")
    body: dict[str, Any] = {
        "design": f"{owner}/{name}",
        "version": version,
        "process": process,
        "material": material,
        "quantity": qty,
        "location": {"lat": lat, "lon": lon},
        "purpose": "commercial" if commercial else "personal",
    }
    if params:
        body["params"] = params
    key = uuid.uuid4().hex
    with connect(server, login=True) as hub:
        try:
            doc = hub.place_order(body, key)
        except KeyboardInterrupt:
            err.print(
                "Interrupted while ordering: the order may have been taken (see dgml orders).",
                highlight=False,
            )
            raise typer.Exit(INTERRUPTED) from None
        try:
            doc = _await_placement(hub, doc, wait, as_json)
        except KeyboardInterrupt:
            err.print(
                f"Stopped waiting: order {doc['id']} is taken and goes on "
                f"(dgml order-status {doc['id']} --watch).",
                highlight=False,
            )
            raise typer.Exit(INTERRUPTED) from None
        except (HubUnreachable, HubFailure) as exc:
            exc.detail = (
                f"order {doc['id']} is taken, but asking where it went failed: {exc.detail} "
                f"(follow it with dgml order-status {doc['id']} --watch)"
            )
            raise
    if as_json:
        print_json(doc)
    else:
        _show_order(doc)
    if doc["state"] in FINAL and doc["state"] != "completed":
        raise _ended_badly(doc)
    if as_json:
        return
    if doc["state"] in PLACING:
        waiting = [e for e in doc.get("events") or [] if e["kind"] == "waiting"]
        why = f": {waiting[-1]['data'].get('reason')}" if waiting else ""
        err.print(f"Still looking for a fablab after {wait:g} s{escape(why)}.", highlight=False)
    err.print(f"Follow it with: dgml order-status {doc['id']} --watch", highlight=False)


# --- dgml orders -------------------------------------------------------------------------------


def _fablabs(hub: Hub, items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The fablabs of each order's lines: the listing has none, so the orders that have been
    placed are read, a few at a time."""

    def labs(item: dict[str, Any]) -> list[dict[str, Any]]:
        if item["state"] in PLACING or item["state"] == "unplaceable":
            return []
        lines = hub.order(item["id"]).get("lines") or []
        found = {line["fablab"]["id"]: line["fablab"] for line in lines if line.get("fablab")}
        return list(found.values())

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(labs, items))


def orders(
    state: Annotated[
        str | None,
        typer.Option("--state", help="Only orders in this state (routing, completed...)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="At most this many.")] = 20,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your orders, newest first: design, state, fablab and when they were made."""
    with connect(server, login=True) as hub:
        page = hub.orders(state=state, limit=limit)
        items = page["items"]
        labs = _fablabs(hub, items)
    if as_json:
        print_json([item | {"fablabs": found} for item, found in zip(items, labs, strict=True)])
        return
    if not items:
        out.print("No orders" + (f" {escape(state)}." if state else " yet."), highlight=False)
        return
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for column in ("id", "design", "state", "fablab", "created"):
        table.add_column(column)
    for item, found in zip(items, labs, strict=True):
        table.add_row(
            str(item["id"]),
            escape(f"{item['design']}@{item['version']}"),
            state_text(item["state"]),
            escape(", ".join(lab.get("name") or lab["id"] for lab in found) or "-"),
            when_text(item["created_at"])[:16],
        )
    table_console().print(table)
    if page.get("next_cursor"):
        err.print("More orders: raise --limit or filter with --state.", highlight=False)


# --- dgml order-status and order-cancel --------------------------------------------------------


@contextlib.contextmanager
def _interruptible(order_id: int) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"Stopped watching order {order_id}: it goes on.", highlight=False)
        raise typer.Exit(INTERRUPTED) from None


def _watch(hub: Hub, doc: dict[str, Any], timeout: float, quiet: bool) -> dict[str, Any]:
    """Follow the order until it ends, printing each new event once; the last document."""
    seen: set[str] = set()
    pause = WATCH_MIN_S
    started = last_answer = time.monotonic()
    warned = False
    while True:
        names = fablab_names(doc)
        fresh = [e for e in doc.get("events") or [] if event_key(e) not in seen]
        for event in fresh:
            seen.add(event_key(event))
            if not quiet:
                out.print(f"  {event_text(event, names)}", highlight=False)
        if doc["state"] in FINAL:
            return doc
        if timeout and time.monotonic() - started >= timeout:
            raise DgmlError(
                f"order {doc['id']} is still {doc['state']} after {timeout:g} s of watching"
            )
        pause = WATCH_MIN_S if fresh else min(pause * 1.5, WATCH_MAX_S)
        time.sleep(pause)
        try:
            doc = hub.order(doc["id"])
            last_answer, warned = time.monotonic(), False
        except (HubUnreachable, HubFailure) as exc:
            if time.monotonic() - last_answer > WATCH_GIVE_UP_S:
                raise
            if not warned:
                err.print(f"{escape(exc.detail)}: asking again...", highlight=False)
                warned = True


def order_status(
    order_id: OrderId,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow it live until it ends.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Stop watching after this many seconds.")
    ] = 0.0,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an order with its public event log; --watch follows it until it ends (exit 0 when
    completed, 1 when it ended otherwise)."""
    with connect(server) as hub, _interruptible(order_id):
        doc = hub.order(order_id)
        if not watch:
            if as_json:
                print_json(doc)
            else:
                _show_order(doc, events=True)
            return
        if not as_json:
            _show_order(doc)
            out.print("Events:", highlight=False)
        doc = _watch(hub, doc, timeout, as_json)
    if as_json:
        print_json(doc)
    if doc["state"] != "completed":
        raise _ended_badly(doc)
    if not as_json:
        out.print(f"Order {doc['id']} is {state_text('completed')}.", highlight=False)


def order_cancel(order_id: OrderId, server: ServerOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel an order: open offers are withdrawn; a part already being made is left to its
    fablab to finish."""
    with connect(server, login=True) as hub:
        doc = hub.cancel_order(order_id)
    if as_json:
        print_json(doc)
        return
    out.print(head(doc), highlight=False)
    for text in line_texts(doc):
        out.print(f"  {text}", highlight=False)
    left = [e for e in doc.get("events") or [] if e["kind"] == "cancel_left_to_fablab"]
    if left:
        err.print("Parts already being made are left to their fablab to finish.", highlight=False)
