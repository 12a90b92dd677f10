"""What a placement answers: the :class:`Decision` and its parts, and how a quantity is split.

Winner, Candidate, Line and Split are plain dataclasses: a decision makes dozens of them and a
pydantic model costs ten times more to build. The Decision model validates and serialises them
(an API response, or the JSON the order service stores). Kilometres, hours and scores are kept
exact and written to 3 decimals (1 m), euros to 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, PlainSerializer

Km = Annotated[float, PlainSerializer(lambda x: round(x, 3), return_type=float)]
Eur = Annotated[float, PlainSerializer(lambda x: round(x, 2), return_type=float)]


@dataclass(slots=True, kw_only=True)
class Winner:
    fablab_id: str
    name: str
    distance_km: Km
    expected_wait_h: Km
    price_eur: Eur | None
    score: Km
    machines: int


@dataclass(slots=True, kw_only=True)
class Candidate:
    fablab_id: str
    name: str | None
    distance_km: Km
    ok: bool
    reason: str | None = None
    detail: str
    score: Km | None = None
    expected_wait_h: Km | None = None
    price_eur: Eur | None = None
    machines: int = 0


@dataclass(slots=True, kw_only=True)
class Line:
    fablab_id: str
    name: str
    quantity: int
    distance_km: Km


@dataclass(slots=True, kw_only=True)
class Split:
    lines: list[Line]
    # Parts no candidate found had room for.
    unassigned: int = 0


class Decision(BaseModel):
    location: tuple[float, float]
    winner: Winner | None
    lines: list[Line]
    unassigned: int
    candidates: list[Candidate]
    # The radius of the last search (the whole Earth is geo.WHOLE_EARTH_KM, 20,020.8 km).
    radius_km: float
    # Every fablab nearer than this was considered; none farther could have won.
    considered_km: float
    # Every fablab of the index was considered.
    exhausted: bool
    # The search stopped at Policy.max_considered candidates without being settled.
    truncated: bool
    km_avoided: float | None
    central: tuple[float, float]
    weights: dict[str, float]
    # ``licence:<rule>`` when the design's terms refuse this order at fablabs of every legal
    # form: no fablab is searched, and ``refused_detail`` says why.
    refused: str | None = None
    refused_detail: str | None = None


def split_quantity(quantity: int, ranked: Sequence[Candidate], per_machine_batch: int) -> Split:
    """Lines for ``quantity`` parts over passing candidates in ranking order (best first).

    Each takes up to ``machines x per_machine_batch`` parts; what none has room for is
    ``unassigned``. One line when the first candidate has room for all.
    """
    if quantity < 1 or per_machine_batch < 1:
        raise ValueError("quantity and per_machine_batch must be >= 1")
    lines: list[Line] = []
    left = quantity
    for candidate in ranked:
        if left == 0:
            break
        if not candidate.ok or candidate.machines < 1:
            continue
        take = min(left, candidate.machines * per_machine_batch)
        lines.append(
            Line(
                fablab_id=candidate.fablab_id,
                name=candidate.name or candidate.fablab_id,
                quantity=take,
                distance_km=candidate.distance_km,
            )
        )
        left -= take
    return Split(lines=lines, unassigned=left)
