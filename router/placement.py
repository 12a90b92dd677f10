"""The placement policy: which fablab makes an order, and why each other one does not.

Pure functions over the plain data of :mod:`router.records`; :func:`place` adds the geo index.
Nothing here reads or writes the database: the order service stores the :class:`Decision`.

Filters, in this order (the first that fails is the candidate's reason, a stable code):

=================  =========================================================================
reason             the fablab is left out because
=================  =========================================================================
``unknown``        the index named it but the directory has no such record (index behind)
``excluded``       the order excludes it (it declined, let an offer expire, or failed before)
``offline``        its agent is not connected
``licence:<rule>`` the design's licence does not let this fablab make it for this order
                   (:mod:`router.terms` names the rule)
``process``        it has no machine for the process
``material``       none of those machines takes the material
``build_volume``   the part fits none of those machines' build volumes in any orientation
=================  =========================================================================

An order the design's terms refuse at fablabs of every legal form (a non-commercial design for a
commercial purpose, a no-derivatives design with parameters) is answered at once, with
``refused = "licence:<rule>"`` and no fablab searched.

Score (lower is better), in km-equivalents::

    score = distance_km * w.distance_per_km + expected_wait_h * w.wait_per_hour
            + price_eur * w.price_per_eur

``expected_wait_h`` is the queue ahead shared over the fablab's machines that can make the part
(jobs waiting x typical hours per job / machines); ``price_eur`` the fablab's price model for
the whole quantity (set-up once, material per cm3), or :attr:`Policy.assumed_price` when it
publishes none (so that not publishing a price is neither a bonus nor a penalty; the candidate
then shows no price). Ties go to the shorter distance, then to the smaller fablab id, so a
decision never depends on input order.

Early stop, and why the winner is still the best: fablabs are considered nearest first. Every
fablab not yet considered is at least ``d`` km away, so its score is at least
``d * w.distance_per_km + floor * w.price_per_eur`` (waits are never negative, and no fablab
charges less than :attr:`Policy.price_floor`, 0 unless the directory says more). Once the best
score so far is below that bound, no farther fablab can win, and the search stops as soon as
that holds and it has :attr:`Policy.min_passing` passing candidates (fallbacks for refusals)
with capacity for the quantity. :attr:`Policy.max_considered` caps the work for orders almost no
one can make.

Capacity and splits: a fablab takes at most ``machines x Policy.per_machine_batch`` parts of one
order; more are split, in ranking order, over the next passing candidates
(:func:`split_quantity`).

Km avoided: the great-circle distance from the central factory (:attr:`Policy.central`, Paris by
default, for a French network) to the maker, minus the winner's distance to the maker: the
delivery distance the order saves against a central plant shipping the part. It is per order,
one way, not weighted by quantity or mass, and negative when the winner is farther than the
central factory would have been.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from router import geo
from router.decision import Candidate, Decision, Line, Round, Split, Winner, split_quantity
from router.records import Fablab, OrderRequest, PriceModel, as_fablab

__all__ = [
    "Candidate", "Decision", "Line", "Policy", "RadiusHints", "Split", "Weights", "Winner",
    "decide", "place", "place_from", "price_floor", "split_quantity",
]  # fmt: skip

PARIS = (48.8566, 2.3522)
# Records loaded at first from a batch (see _consider_batch).
FIRST_LOAD = 32
LoadRecords = Callable[[list[str]], Mapping[str, Fablab | Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Weights:
    """Score weights, in km per unit: 1 h of queue weighs as much as 2 km of travel, 1 EUR as
    0.5 km, so a day's wait is worth driving about 50 km, and 20 EUR about 10 km."""

    distance_per_km: float = 1.0
    wait_per_hour: float = 2.0
    price_per_eur: float = 0.5


@dataclass(frozen=True, slots=True)
class Policy:
    weights: Weights = field(default_factory=Weights)
    # (lat, lon) of the central factory that km avoided is measured against.
    central: tuple[float, float] = PARIS
    # Passing candidates wanted before the search stops (the winner and its fallbacks).
    min_passing: int = 5
    # Parts of one order a single machine takes.
    per_machine_batch: int = 10
    # Most candidates one decision considers; beyond, the decision says ``truncated``.
    max_considered: int = 2000
    # The price a fablab that publishes none is scored at: a typical community fablab's.
    assumed_price: PriceModel = field(default_factory=lambda: PriceModel(5.0, 0.10))
    # No fablab charges less than this, set-up and per cm3 apart (the minima of the directory's
    # price models and of ``assumed_price``). Only speed depends on it, and only if it is true.
    price_floor: PriceModel | None = None


class RadiusHints:
    """Where searches around a place ended, per 1-degree cell and kind of order.

    Only speed depends on it: the next search there starts at that radius and asks for about
    as many fablabs. A place with no search of its kind yet starts at half the shortest radius
    that searches of any kind needed in its cell and the eight around it: starting short costs
    a few cheap steps, starting long measures a city that was not needed. Bounded (the least
    recently used are forgotten).
    """

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._ends: OrderedDict[tuple[int, int, str], tuple[float, int]] = OrderedDict()
        self._near: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, lat: float, lon: float, kind: str = "") -> tuple[float, int] | None:
        """``(km, fablabs)`` where the last search here ended, or a guess from searches of any
        kind around here (``fablabs`` 0), or None."""
        y, x = math.floor(lat), math.floor(lon)
        with self._lock:
            known = self._ends.get((y, x, kind))
            if known is not None:
                return known
            near = [self._near.get((y + dy, x + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        guesses = [km for km in near if km is not None]
        return (0.5 * min(guesses), 0) if guesses else None

    def learn(self, lat: float, lon: float, kind: str, km: float, fablabs: int) -> None:
        y, x = math.floor(lat), math.floor(lon)
        with self._lock:
            _remember(self._ends, (y, x, kind), (km, fablabs), self.size)
            _remember(self._near, (y, x), km, self.size)


def _remember(table: OrderedDict[Any, Any], cell: Any, value: Any, size: int) -> None:
    table[cell] = value
    table.move_to_end(cell)
    if len(table) > size:
        table.popitem(last=False)


HINTS = RadiusHints()


def price_floor(fablabs: Iterable[Fablab], policy: Policy = Policy()) -> PriceModel:
    """The :attr:`Policy.price_floor` of a directory: the cheapest set-up and the cheapest cm3
    of its price models (and of the price assumed for fablabs without one)."""
    models = [lab.price or policy.assumed_price for lab in fablabs] or [policy.assumed_price]
    return PriceModel(
        per_job_eur=min(m.per_job_eur for m in models),
        per_cm3_eur=min(m.per_cm3_eur for m in models),
    )


def decide(
    order: OrderRequest,
    fablabs: Iterable[Fablab | Mapping[str, Any]],
    policy: Policy = Policy(),
) -> Decision:
    """The decision over exactly these candidates, every one considered (no index, no early
    stop): the pure form of the policy, for tests and for callers that already chose the
    candidates."""
    lat, lon = geo.round_location(order.lat, order.lon)
    state = Round(order, policy, lat, lon)
    refusal = state.refused_everywhere()
    if refusal is not None:
        return state.decision(0.0, exhausted=False, truncated=False, refusal=refusal)
    labs = [as_fablab(f) for f in fablabs]
    distances = geo.haversine_km(lat, lon, [f.lat for f in labs], [f.lon for f in labs])
    nearest_first = sorted(range(len(labs)), key=lambda i: (distances[i], labs[i].id))
    # The same loop as place_from's (the same scalar distance, to the last bit), never stopping.
    hits: list[tuple[str, float | None]] = [(labs[i].id, None) for i in nearest_first]
    state.take(hits, {lab.id: lab for lab in labs}, early=False)
    far = float(distances.max()) if labs else 0.0
    return state.decision(far, exhausted=True, truncated=False)


def place_from(
    order: OrderRequest,
    batches: Callable[[float, float, Callable[[], float | None]], Iterator[geo.Batch]],
    load_fablab_records: LoadRecords,
    policy: Policy = Policy(),
) -> Decision:
    """The policy over candidates pulled nearest first from ``batches(lat, lon, need_km)`` (the
    geo index, a brute-force scan, any spatial database), stopping as soon as it is settled.

    ``need_km()`` answers how far the search must still look (every fablab nearer could beat
    the best so far), or None while there are too few passing candidates to say; a source may
    use it to size its next search or ignore it.
    """
    lat, lon = geo.round_location(order.lat, order.lon)
    state = Round(order, policy, lat, lon)
    refusal = state.refused_everywhere()
    if refusal is not None:
        return state.decision(0.0, exhausted=False, truncated=False, refusal=refusal)
    radius, exhausted, truncated = 0.0, False, False
    for batch in batches(lat, lon, state.need_km):
        radius = batch.radius_km
        stop = _consider_batch(state, batch, load_fablab_records)
        if stop is None:
            state.looked_km = batch.covered_km
            exhausted = batch.exhausted
            if exhausted or state.settled(batch.covered_km):
                break
            stop = "limit" if len(state.considered) >= policy.max_considered else None
        truncated = stop == "limit"
        if stop:
            break
    return state.decision(radius, exhausted, truncated)


def _consider_batch(state: Round, batch: geo.Batch, load: LoadRecords) -> str | None:
    """Consider a batch's fablabs nearest first; ``settled`` or ``limit`` when it stopped early.

    A batch can hold hundreds of fablabs and a decision usually stops well before its end, so
    records are loaded in chunks doubling from :data:`FIRST_LOAD` (32, 64, 128 ...): at most
    half of those loaded go unused, in a few calls (each may be a database query).
    """
    hits = batch.hits
    done, size = 0, FIRST_LOAD
    while done < len(hits):
        chunk, done, size = hits[done : done + size], done + size, 2 * size
        records = load([fablab_id for fablab_id, _ in chunk])
        stop = state.take(chunk, records, batch.farthest_km, batch.measure)
        if stop is not None:
            return stop
    return None


def place(
    redis: Redis,
    order: OrderRequest,
    load_fablab_records: LoadRecords,
    policy: Policy = Policy(),
    *,
    key: str = geo.KEY,
    radii: Sequence[float] = geo.RADII_KM,
    batch: int = 32,
    load_all_fablabs: Callable[[], Iterable[geo.Located]] | None = None,
    hints: RadiusHints | None = HINTS,
) -> Decision:
    """Place ``order`` on the fablabs of the Redis geo index under ``key``.

    ``load_fablab_records(ids)`` answers the records of those fablab ids (from the database or
    a cache; ids it does not know are reported ``unknown``). ``hints`` remembers where searches
    around each place ended, to start the next one there (speed only; None to start at
    :data:`geo.START_KM` every time). When the index turns out to be empty and
    ``load_all_fablabs`` is given, the index is rebuilt from it (:func:`geo.ensure`) and the
    search runs once more.
    """

    def batches(lat: float, lon: float, need_km: Callable[[], float | None]) -> Iterator[geo.Batch]:
        start = hints.start(lat, lon, order.process) if hints is not None else None
        return geo.nearest(
            redis,
            lat,
            lon,
            key=key,
            radii=radii,
            batch=batch,
            start=start,
            need_km=need_km,
            distances=False,
        )

    decision = place_from(order, batches, load_fablab_records, policy)
    empty = not decision.candidates and not decision.refused and load_all_fablabs is not None
    if empty and geo.ensure(redis, load_all_fablabs, key=key):
        decision = place_from(order, batches, load_fablab_records, policy)
    if hints is not None and decision.candidates:
        # The next search here starts where this one found what it needed.
        farthest = decision.candidates[-1].distance_km
        hints.learn(*decision.location, order.process, farthest, len(decision.candidates))
    return decision
