"""How the order verbs show an order: its one-line head, its lines, why it went where it went
(the placement decision), and its public event log as sentences.

Everything here reads the order document of ``GET /api/v1/orders/{id}`` and returns Rich
markup with the hub's words escaped; nothing here talks to the hub.
"""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

STATE_COLOURS = {
    "accepted": "cyan",
    "routing": "cyan",
    "offered": "blue",
    "in_progress": "blue",
    "completed": "green",
    "failed": "red",
    "unplaceable": "red",
    "cancelled": "yellow",
    "disconnected": "magenta",
}
# The order's placement is still being decided in these states.
PLACING = frozenset({"accepted", "routing"})
# An order in one of these has ended: nothing will change it any more.
FINAL = frozenset({"completed", "failed", "unplaceable", "cancelled"})
# What each rejection reason of a placement means, for the reasons without a detail.
REJECTIONS = {
    "offline": "its agent is not online",
    "process": "no machine for this process",
    "material": "no machine for this material",
    "build_volume": "the part does not fit its machines",
    "excluded": "declined or let an earlier offer lapse",
    "unknown": "no longer in the directory",
}


def state_text(state: str) -> str:
    colour = STATE_COLOURS.get(state)
    return f"[{colour}]{escape(state)}[/]" if colour else escape(state)


def km_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} km"


def when_text(value: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (the hub's times are UTC)."""
    return str(value or "")[:19].replace("T", " ")


def fablab_names(doc: dict[str, Any]) -> dict[str, str]:
    """Fablab id -> name, from the order's lines and its decision's candidates."""
    names: dict[str, str] = {}
    for candidate in (doc.get("decision") or {}).get("candidates") or []:
        if candidate.get("name"):
            names[candidate["fablab_id"]] = candidate["name"]
    for line in doc.get("lines") or []:
        lab = line.get("fablab") or {}
        if lab.get("id") and lab.get("name"):
            names[lab["id"]] = lab["name"]
    return names


def lab_text(fablab_id: str | None, names: dict[str, str]) -> str:
    if not fablab_id:
        return "a fablab"
    name = names.get(fablab_id)
    return escape(f"{name} ({fablab_id})" if name and name != fablab_id else fablab_id)


def head(doc: dict[str, Any]) -> str:
    """``Order 12: alice/cube@1, 2 x fdm in pla, near 45.76, 4.84: offered``."""
    where = doc.get("location") or {}
    purpose = " (commercial)" if doc.get("purpose") == "commercial" else ""
    params = doc.get("params") or {}
    with_params = (
        " with " + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))
        if params
        else ""
    )
    return (
        f"Order [bold]{doc['id']}[/]: {escape(doc['design'])}@{doc['version']}"
        f"{escape(with_params)}, {doc['quantity']} x {escape(doc['process'])} in "
        f"{escape(doc['material'])}, near {where.get('lat')}, {where.get('lon')}{purpose}: "
        f"{state_text(doc['state'])}"
    )


def line_texts(doc: dict[str, Any]) -> list[str]:
    """One sentence per line of the order: how many, where, how far, its state."""
    texts = []
    for line in doc.get("lines") or []:
        lab = line.get("fablab")
        count = f"{line['quantity']} part{'s' if line['quantity'] != 1 else ''}"
        if lab:
            where = (
                f" at {lab_text(lab['id'], {lab['id']: lab.get('name') or lab['id']})}, "
                f"{km_text(line.get('distance_km'))} away, "
                f"{km_text(line.get('km_avoided'))} avoided"
            )
        else:
            where = ""
        reason = f" ({escape(line['reason'])})" if line.get("reason") else ""
        texts.append(f"line {line['number']}: {count}{where}: {state_text(line['state'])}{reason}")
    return texts


def _first_details(decision: dict[str, Any]) -> dict[str, str]:
    details: dict[str, str] = {}
    for candidate in decision.get("candidates") or []:
        if not candidate.get("ok") and candidate.get("reason"):
            details.setdefault(candidate["reason"], candidate.get("detail") or "")
    return details


def decision_texts(doc: dict[str, Any]) -> list[str]:
    """Why the order went where it went, or why no fablab could make it."""
    decision = doc.get("decision")
    if not decision:
        return []
    texts: list[str] = []
    if decision.get("refused"):
        texts.append(escape(decision.get("refused_detail") or decision["refused"]))
        return texts
    total = int(decision.get("candidates_total") or len(decision.get("candidates") or []))
    rejected: dict[str, int] = decision.get("rejected") or {}
    able = total - sum(rejected.values())
    within = (
        "the whole directory"
        if decision.get("exhausted")
        else f"within {km_text(decision.get('considered_km'))}"
    )
    winner = decision.get("winner")
    if winner:
        wait = winner.get("expected_wait_h")
        price = winner.get("price_eur")
        facts = [f"{km_text(winner.get('distance_km'))} away"]
        if wait is not None:
            facts.append(f"expected wait {wait:,.1f} h")
        if price is not None:
            facts.append(f"price {price:,.2f} EUR")
        texts.append(
            f"chosen: {lab_text(winner['fablab_id'], {winner['fablab_id']: winner['name']})}, "
            f"the best score of the {able} fablab{'s' if able != 1 else ''} that can make it "
            f"among {total} considered ({within}): {', '.join(facts)}"
        )
        if decision.get("km_avoided") is not None:
            texts.append(
                f"{km_text(decision['km_avoided'])} avoided against making it at the central "
                "factory"
            )
    else:
        texts.append(f"none of the {total} fablabs considered ({within}) can make it")
    details = _first_details(decision)
    for reason, count in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0])):
        why = details.get(reason) or REJECTIONS.get(reason) or reason
        said = why if why.startswith(reason) else f"{why} ({reason})"
        texts.append(f"{count} not chosen: {escape(said)}")
    unassigned = decision.get("unassigned") or 0
    if unassigned and decision.get("winner"):
        part = "1 part" if unassigned == 1 else f"{unassigned} parts"
        texts.append(f"{part} found no fablab with room: left unplaceable")
    return texts


def _count(data: dict[str, Any]) -> str:
    quantity = data.get("quantity")
    return f"{quantity} part{'s' if quantity != 1 else ''}" if quantity is not None else "parts"


def event_text(event: dict[str, Any], names: dict[str, str]) -> str:
    """One event of the public log as a sentence."""
    data = event.get("data") or {}
    kind = event["kind"]
    line = f"line {event['line']}" if event.get("line") is not None else "the order"
    lab = lab_text(event.get("fablab_id"), names)
    reason = escape(str(data.get("reason") or ""))
    if kind == "accepted" and not event.get("fablab_id"):
        text = (
            f"order taken: {_count(data)} of {escape(str(data.get('design')))}"
            f"@{data.get('version')}, {escape(str(data.get('process')))} in "
            f"{escape(str(data.get('material')))}"
        )
    elif kind == "accepted":
        text = f"{lab} accepted {line}" + (f" (job {data['job']})" if data.get("job") else "")
    elif kind == "routing":
        text = f"{line}: looking for a fablab (attempt {data.get('attempt')}): {reason}"
    elif kind == "waiting":
        text = f"{line}: waiting: {reason}"
    elif kind == "offered":
        wait = data.get("expected_wait_h")
        text = (
            f"{line} offered to {lab}: {_count(data)}, {km_text(data.get('distance_km'))} away, "
            f"{km_text(data.get('km_avoided'))} avoided"
            + (f", expected wait {wait:,.1f} h" if wait is not None else "")
        )
    elif kind == "split":
        parts = [
            f"line {p.get('line')}: {p.get('quantity')} at {lab_text(p.get('fablab_id'), names)}"
            for p in data.get("into") or []
        ]
        if data.get("unassigned"):
            parts.append(f"{data['unassigned']} found no fablab")
        text = f"{line} split: " + "; ".join(parts)
    elif kind == "progress":
        message = escape(str(data.get("message") or ""))
        text = f"{lab}: {line} at {data.get('percent', 0):.0f}%" + (
            f": {message}" if message else ""
        )
    elif kind == "completed":
        text = f"{lab} completed {line}"
    elif kind in ("failed", "unplaceable"):
        at = f" at {lab}" if event.get("fablab_id") else ""
        text = f"{line} {kind}{at}: {reason}"
    elif kind == "declined":
        text = f"{lab} declined {line}" + (f": {reason}" if reason else "")
    elif kind == "offer_expired":
        text = f"the offer of {line} to {lab} expired"
    elif kind == "offer_withdrawn":
        text = f"the offer of {line} to {lab} was withdrawn"
    elif kind == "cancelled":
        text = f"{line} cancelled"
    elif kind == "cancel_left_to_fablab":
        text = escape(str(data.get("detail") or f"{line} is left to {lab} to finish"))
    elif kind == "disconnected":
        text = f"{line} lost touch with {lab} (its lease ran out): an operator will resolve it"
    elif kind == "resolved":
        text = f"an operator resolved {line} at {lab}: {escape(str(data.get('action')))}"
    else:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(data.items()))
        text = escape(f"{line}: {kind}" + (f" ({extra})" if extra else ""))
    mark = "[red]![/] " if event.get("alert") else ""
    return f"[dim]{when_text(event.get('at'))}[/]  {mark}{text}"


def event_key(event: dict[str, Any]) -> str:
    """What tells one event from another (the log has no ids): its whole content."""
    return json.dumps(event, sort_keys=True, default=str)
