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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from redis import Redis

from router import geo
from router.decision import Candidate, Decision, Line, Split, Winner, split_quantity
from router.part import part_fit
from router.records import Fablab, OrderRequest, PriceModel, as_fablab
from router.terms import LegalForm, Verdict, allowed

__all__ = [
    "Candidate", "Decision", "Line", "Policy", "Split", "Weights", "Winner",
    "decide", "place", "place_from", "price_floor", "split_quantity",
]  # fmt: skip

PARIS = (48.8566, 2.3522)
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


@lru_cache(maxsize=256)
def _verdicts(licence: str, purpose: str, modified: bool) -> dict[str, Verdict]:
    """The terms' verdict on an order at a fablab of each legal form."""
    return {form: allowed(licence, purpose, form, modified) for form in LegalForm}


@lru_cache(maxsize=16)
def _weights_dict(weights: Weights) -> dict[str, float]:
    return asdict(weights)


def _r(x: float) -> float:
    return round(x, 3)


class _Round:
    """One decision in progress: candidates considered so far, the passing ones ranked."""

    def __init__(self, order: OrderRequest, policy: Policy, lat: float, lon: float) -> None:
        self.order, self.policy, self.lat, self.lon = order, policy, lat, lon
        self.part = part_fit(order.extents_mm, order.hull_points)  # type: ignore[arg-type]
        self.volume_cm3 = order.part_volume_cm3
        self.verdicts: dict[str, Verdict] = {}
        self.considered: list[Candidate] = []
        self.passing: list[tuple[float, float, str, Candidate]] = []
        self.best = math.inf
        self.capacity = 0
        # Every fablab nearer than this has been considered.
        self.looked_km = 0.0
        # Settled once every fablab nearer than this has been considered (see need_km).
        self.stop_km = math.inf
        w = policy.weights
        self.w_km, self.w_h, self.w_eur = w.distance_per_km, w.wait_per_hour, w.price_per_eur
        floor = policy.price_floor
        # The least any fablab not yet considered can add to its score besides distance.
        self.floor = (
            0.0 if floor is None else floor.price(order.quantity, self.volume_cm3) * self.w_eur
        )
        self._sentences: dict[str, str] = {}

    def refused_everywhere(self) -> Verdict | None:
        """The refusal, when the terms refuse this order at fablabs of every legal form."""
        order = self.order
        self.verdicts = _verdicts(order.licence, order.purpose, order.modified)
        if any(verdict.ok for verdict in self.verdicts.values()):
            return None
        return self.verdicts[LegalForm.NONPROFIT]

    def need_km(self) -> float | None:
        """How far the search must look to be settled, once that depends only on distance."""
        return None if self.stop_km == math.inf else self.stop_km

    def settled(self, bound_km: float) -> bool:
        """True when no fablab at ``bound_km`` or farther can change the outcome."""
        return bound_km > self.stop_km

    def _update_stop(self) -> None:
        if len(self.passing) < self.policy.min_passing or self.capacity < self.order.quantity:
            return
        # A fablab d km away scores at least d * w_km + floor: it cannot beat the best once
        # that is more than the best score.
        self.stop_km = (self.best - self.floor) / self.w_km if self.w_km > 0 else math.inf

    def _sentence(self, reason: str) -> str:
        """The sentence for a reason that reads the same at every fablab of this order."""
        known = self._sentences.get(reason)
        if known is None:
            order = self.order
            process, material = order.process, order.material
            x, y, z = order.extents_mm  # type: ignore[misc]
            known = self._sentences[reason] = {
                "unknown": "not in the fablab directory",
                "excluded": "left out of this order",
                "offline": "offline: no agent connected",
                "process": f"has no {process} machine",
                "material": f"has no {process} machine for {material}",
                "build_volume": (
                    f"a {x:g} x {y:g} x {z:g} mm part fits none of its {process} machines "
                    f"for {material}, in any orientation"
                ),
            }[reason]
        return known

    def _reject(self, fablab_id: str, name: str | None, km: float, reason: str, why: str) -> None:
        self.considered.append(
            Candidate(
                fablab_id=fablab_id, name=name, distance_km=km, ok=False, reason=reason, detail=why
            )
        )

    def consider(self, fablab_id: str, lab: Fablab | None, km: float) -> None:
        order = self.order
        if lab is None:
            self._reject(fablab_id, None, km, "unknown", self._sentence("unknown"))
            return
        if fablab_id in order.excluded or not lab.online:
            reason = "excluded" if fablab_id in order.excluded else "offline"
            self._reject(fablab_id, lab.name, km, reason, self._sentence(reason))
            return
        verdict = self.verdicts[lab.legal_form]
        if not verdict.ok:
            why = self._licence_sentence(verdict, lab)
            self._reject(fablab_id, lab.name, km, f"licence:{verdict.rule}", why)
            return
        by_material = lab.offers.get(order.process)
        able = None if by_material is None else by_material.get(order.material)
        machines = queue = 0
        busy_hours = 0.0
        if able is not None:
            fits = self.part.fits
            for m in able:
                if fits(m.build_volume_mm):
                    machines += m.count
                    queue += m.queue
                    busy_hours += m.job_hours * m.count
        if not machines:
            reason = "process" if by_material is None else "material" if able is None else ""
            reason = reason or "build_volume"
            self._reject(fablab_id, lab.name, km, reason, self._sentence(reason))
            return
        wait_h = queue * busy_hours / (machines * machines)
        priced = lab.price or self.policy.assumed_price
        price = priced.price(order.quantity, self.volume_cm3)
        score = km * self.w_km + wait_h * self.w_h + price * self.w_eur
        candidate = Candidate(
            fablab_id=fablab_id,
            name=lab.name,
            distance_km=km,
            ok=True,
            detail="can make it",
            score=score,
            expected_wait_h=wait_h,
            price_eur=price if lab.price else None,
            machines=machines,
        )
        self.considered.append(candidate)
        self.passing.append((score, km, fablab_id, candidate))
        if score < self.best:
            self.best = score
        self.capacity += machines * self.policy.per_machine_batch
        self._update_stop()

    def decision(
        self, radius_km: float, exhausted: bool, truncated: bool, refusal: Verdict | None = None
    ) -> Decision:
        self.passing.sort(key=lambda entry: entry[:3])
        ranked = [entry[3] for entry in self.passing]
        winner = None
        km_avoided = None
        split = Split(lines=[], unassigned=self.order.quantity)
        if ranked:
            top = ranked[0]
            winner = Winner(
                fablab_id=top.fablab_id,
                name=top.name,
                distance_km=top.distance_km,
                expected_wait_h=top.expected_wait_h,
                price_eur=top.price_eur,
                score=top.score,
                machines=top.machines,
            )
            central_km = geo.distance_km(*self.policy.central, self.lat, self.lon)
            km_avoided = _r(central_km - self.passing[0][1])
            split = split_quantity(self.order.quantity, ranked, self.policy.per_machine_batch)
        return Decision.model_construct(
            location=(self.lat, self.lon),
            winner=winner,
            lines=split.lines,
            unassigned=split.unassigned,
            candidates=self.considered,
            radius_km=_r(radius_km),
            considered_km=_r(geo.WHOLE_EARTH_KM if exhausted else self.looked_km),
            exhausted=exhausted,
            truncated=truncated,
            km_avoided=km_avoided,
            central=self.policy.central,
            weights=_weights_dict(self.policy.weights),
            refused=None if refusal is None else f"licence:{refusal.rule}",
            refused_detail=None if refusal is None else self._licence_sentence(refusal, None),
        )

    def _licence_sentence(self, verdict: Verdict, lab: Fablab | None) -> str:
        order = self.order
        kind = f"a {order.purpose.value}{' modified' if order.modified else ''} order"
        if lab is None:
            return f"{verdict.detail}; this is {kind}, which no fablab may take"
        return f"{verdict.detail}; this is {kind} and a {lab.legal_form.value} fablab"


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
    state = _Round(order, policy, lat, lon)
    refusal = state.refused_everywhere()
    if refusal is not None:
        return state.decision(0.0, exhausted=False, truncated=False, refusal=refusal)
    labs = [as_fablab(f) for f in fablabs]
    distances = geo.haversine_km(lat, lon, [f.lat for f in labs], [f.lon for f in labs])
    for i in sorted(range(len(labs)), key=lambda i: (distances[i], labs[i].id)):
        # The same scalar distance as place_from's, to the last bit.
        state.consider(labs[i].id, labs[i], geo.distance_km(lat, lon, labs[i].lat, labs[i].lon))
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
    state = _Round(order, policy, lat, lon)
    refusal = state.refused_everywhere()
    if refusal is not None:
        return state.decision(0.0, exhausted=False, truncated=False, refusal=refusal)
    radius, exhausted, truncated = 0.0, False, False
    for batch in batches(lat, lon, state.need_km):
        radius = batch.radius_km
        stop = _consider_batch(state, batch, load_fablab_records, lat, lon)
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


def _consider_batch(
    state: _Round, batch: geo.Batch, load: LoadRecords, lat: float, lon: float
) -> str | None:
    """Consider a batch's fablabs nearest first; ``settled`` or ``limit`` when it stopped early."""
    if not batch.hits:
        return None
    records = load([fablab_id for fablab_id, _ in batch.hits])
    limit = state.policy.max_considered
    considered, consider, distance = state.considered, state.consider, geo.distance_km
    for fablab_id, indexed_km in batch.hits:
        looked = indexed_km - geo.INDEX_SLACK_KM
        if looked > state.looked_km:
            state.looked_km = looked
        if looked > state.stop_km:
            return "settled"
        if len(considered) >= limit:
            return "limit"
        lab = records.get(fablab_id)
        if lab is None:
            consider(fablab_id, None, indexed_km)
            continue
        if not isinstance(lab, Fablab):
            lab = Fablab.from_dict(lab)
        # The exact distance to the record's location (the index holds it to within a metre).
        consider(fablab_id, lab, distance(lat, lon, lab.lat, lab.lon))
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
    hints: geo.RadiusHints | None = geo.HINTS,
) -> Decision:
    """Place ``order`` on the fablabs of the Redis geo index under ``key``.

    ``load_fablab_records(ids)`` answers the records of those fablab ids (from the database or
    a cache; ids it does not know are reported ``unknown``). ``hints`` remembers where searches
    around each place ended, to start the next one there (speed only; None to start at 1 km
    every time). When the index turns out to be empty and ``load_all_fablabs`` is given, the
    index is rebuilt from it (:func:`geo.ensure`) and the search runs once more.
    """

    def batches(lat: float, lon: float, need_km: Callable[[], float | None]) -> Iterator[geo.Batch]:
        start = hints.start(lat, lon, order.process) if hints is not None else None
        return geo.nearest(
            redis, lat, lon, key=key, radii=radii, batch=batch, start=start, need_km=need_km
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
