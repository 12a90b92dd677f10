"""What a placement answers: the :class:`Decision` and its parts, how a quantity is split, and
the :class:`Round` of the policy that reaches it (router.placement feeds it candidates).

Winner, Candidate, Line and Split are plain dataclasses: a decision makes dozens of them and a
pydantic model costs ten times more to build. The Decision model validates and serialises them
(an API response, or the JSON the order service stores). Kilometres, hours and scores are kept
exact and written to 3 decimals (1 m), euros to 2.

A :class:`Round` holds one decision in progress. Its :meth:`Round.take` is the policy's inner
loop, run for every fablab considered, hundreds in a city at 100,000 fablabs; there the records
it reads lie scattered in memory and the time goes to fetching them more than to computing. So
each record carries what the loop reads precomputed (``Fablab.able``, ``phi``, ``cos_phi``),
and the loop keeps everything else in locals (docs/router.md, Benchmark).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, PlainSerializer

from router import geo
from router.part import part_fit
from router.records import Fablab, OrderRequest, offer_key
from router.terms import LegalForm, Verdict, allowed

if TYPE_CHECKING:
    from router.placement import Policy, Weights

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


def passing(
    fablab_id: str,
    name: str,
    km: float,
    score: float,
    wait_h: float,
    price_eur: float | None,
    machines: int,
) -> Candidate:
    """A candidate that can make the order, made as the dataclass would make it but without its
    keyword ``__init__``, which costs three times as much: a decision makes hundreds."""
    c = _new(Candidate)
    c.fablab_id, c.name, c.distance_km, c.ok, c.reason = fablab_id, name, km, True, None
    c.detail, c.score, c.expected_wait_h, c.price_eur, c.machines = (
        "can make it",
        score,
        wait_h,
        price_eur,
        machines,
    )
    return c


def refused(fablab_id: str, name: str | None, km: float, reason: str, detail: str) -> Candidate:
    """A candidate left out for ``reason``, made as :func:`passing` is."""
    c = _new(Candidate)
    c.fablab_id, c.name, c.distance_km, c.ok, c.reason = fablab_id, name, km, False, reason
    c.detail, c.score, c.expected_wait_h, c.price_eur, c.machines = detail, None, None, None, 0
    return c


_new = object.__new__


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


_KM2 = 2.0 * geo.EARTH_RADIUS_KM
# Passing candidates rank by score, then distance, then id (never the candidate itself).
_RANK = itemgetter(0, 1, 2)
_SENTENCES = {
    "unknown": "not in the fablab directory",
    "excluded": "left out of this order",
    "offline": "offline: no agent connected",
}


@lru_cache(maxsize=256)
def _verdicts(licence: str, purpose: str, modified: bool) -> dict[str, Verdict]:
    """The terms' verdict on an order at a fablab of each legal form."""
    return {form: allowed(licence, purpose, form, modified) for form in LegalForm}


@lru_cache(maxsize=16)
def _weights_dict(weights: Weights) -> dict[str, float]:
    return asdict(weights)


def _r(x: float) -> float:
    return round(x, 3)


class Round:
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
        self._licences: dict[str, tuple[str, str]] = {}
        # Build volume -> does the part fit it.
        self.fitted: dict[tuple[float, ...], bool] = {}
        # The order's side of geo.distance_km, computed once (see take).
        self.phi0, self.cos0 = math.radians(lat), math.cos(math.radians(lat))

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

    def _sentence(self, reason: str) -> str:
        """The sentence for a reason that reads the same at every fablab of this order."""
        known = self._sentences.get(reason)
        if known is None:
            order = self.order
            process, material = order.process, order.material
            if reason == "process":
                known = f"has no {process} machine"
            elif reason == "material":
                known = f"has no {process} machine for {material}"
            elif reason == "build_volume":
                x, y, z = order.extents_mm  # type: ignore[misc]
                known = (
                    f"a {x:g} x {y:g} x {z:g} mm part fits none of its {process} machines "
                    f"for {material}, in any orientation"
                )
            else:
                known = _SENTENCES[reason]
            self._sentences[reason] = known
        return known

    def take(
        self,
        hits: Sequence[tuple[str, float | None]],
        records: Mapping[str, Fablab | Mapping[str, Any]],
        farthest_km: float | None = None,
        measure: Callable[[Sequence[str]], dict[str, float]] | None = None,
        early: bool = True,
    ) -> str | None:
        """Consider these fablabs nearest first, each a candidate refused with the first failing
        filter's reason or passing with its score; ``settled`` or ``limit`` when it stopped early
        (never without ``early``).

        A fablab is placed by its record's exact position. How far the search has looked comes
        from the index distance when the hit gives one, else from that exact distance (within a
        metre of the index's while the index is in step with the directory), never beyond
        ``farthest_km``, the farthest hit's index distance: a record that moved far since it
        was indexed cannot end the search before the hits after it. Fablabs without a record
        are reported at their index distance (``measure`` answers the missing ones).

        One loop with everything in locals: a decision in a city considers hundreds of fablabs,
        and a method call or attribute lookup per filter costs as much as the filter.
        """
        order, policy, verdicts, fits = self.order, self.policy, self.verdicts, self.part.fits
        excluded, process, material, quantity = (
            order.excluded, order.process, order.material, order.quantity
        )  # fmt: skip
        considered, ranked, sentences, licences = (
            self.considered, self.passing, self._sentences, self._licences
        )  # fmt: skip
        w_km, w_h, w_eur, floor, volume = (
            self.w_km,
            self.w_h,
            self.w_eur,
            self.floor,
            self.volume_cm3,
        )
        limit, enough, per_batch = (
            policy.max_considered,
            policy.min_passing,
            policy.per_machine_batch,
        )
        phi0, cos0, lon0, slack = self.phi0, self.cos0, self.lon, geo.INDEX_SLACK_KM
        sin, asin, sqrt, radians = math.sin, math.asin, math.sqrt, math.radians
        looked, stop, best, capacity = self.looked_km, self.stop_km, self.best, self.capacity
        cap = math.inf if farthest_km is None else farthest_km
        kind, fitted = offer_key(process, material), self.fitted
        measured: dict[str, float] | None = None
        outcome = None
        for fablab_id, indexed_km in hits:
            lab = records.get(fablab_id)
            if lab is None:
                if indexed_km is None:
                    if measured is None:
                        missing = [i for i, km in hits if km is None and i not in records]
                        measured = measure(missing) if measure is not None else {}
                    km = measured.get(fablab_id, looked + slack)
                else:
                    km = indexed_km
                bound = km - slack
            else:
                if not isinstance(lab, Fablab):
                    lab = Fablab.from_dict(lab)
                # geo.distance_km, term for term
                a = (
                    sin((lab.phi - phi0) * 0.5) ** 2
                    + cos0 * lab.cos_phi * sin(radians(lab.lon - lon0) * 0.5) ** 2
                )
                km = _KM2 * asin(sqrt(min(a, 1.0)))
                bound = (indexed_km if indexed_km is not None else min(km, cap)) - slack
            if early:
                if bound > looked:
                    looked = bound
                if bound > stop:
                    outcome = "settled"
                    break
                if len(considered) >= limit:
                    outcome = "limit"
                    break
            if lab is None:
                reason = "unknown"
            elif fablab_id in excluded:
                reason = "excluded"
            elif not lab.online:
                reason = "offline"
            else:
                verdict = verdicts[lab.legal_form]
                if not verdict.ok:
                    said = licences.get(lab.legal_form) or self._licence_refusal(verdict, lab)
                    considered.append(refused(fablab_id, lab.name, km, *said))
                    continue
                able = lab.able.get(kind)
                if able is None:
                    reason = "material" if process in lab.offers else "process"
                else:
                    machines = queue = 0
                    busy_hours = 0.0
                    for size, count, waiting, busy in able:
                        fit = fitted.get(size)
                        if fit is None:
                            fit = fitted[size] = fits(size)
                        if fit:
                            machines += count
                            queue += waiting
                            busy_hours += busy
                    if machines:
                        wait_h = queue * busy_hours / (machines * machines)
                        priced = lab.price
                        price = (priced or policy.assumed_price).price(quantity, volume)
                        score = km * w_km + wait_h * w_h + price * w_eur
                        candidate = passing(
                            fablab_id, lab.name, km, score, wait_h, priced and price, machines
                        )
                        considered.append(candidate)
                        ranked.append((score, km, fablab_id, candidate))
                        if score < best:
                            best = score
                        capacity += machines * per_batch
                        if len(ranked) >= enough and capacity >= quantity:
                            # A fablab d km away scores at least d * w_km + floor: it cannot
                            # beat the best once that is more than the best score.
                            stop = (best - floor) / w_km if w_km > 0 else math.inf
                        continue
                    reason = "build_volume"
            why = sentences.get(reason) or self._sentence(reason)
            considered.append(refused(fablab_id, lab and lab.name, km, reason, why))
        self.looked_km, self.stop_km, self.best, self.capacity = looked, stop, best, capacity
        return outcome

    def decision(
        self, radius_km: float, exhausted: bool, truncated: bool, refusal: Verdict | None = None
    ) -> Decision:
        self.passing.sort(key=_RANK)
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
        """Why the terms refuse this order at this fablab, or at every fablab."""
        order = self.order
        kind = f"a {order.purpose.value}{' modified' if order.modified else ''} order"
        if lab is None:
            return f"{verdict.detail}; this is {kind}, which no fablab may take"
        return f"{verdict.detail}; this is {kind} and a {LegalForm(lab.legal_form)} fablab"

    def _licence_refusal(self, verdict: Verdict, lab: Fablab) -> tuple[str, str]:
        """The reason and sentence at ``lab``, the same at every fablab of its legal form."""
        said = self._licences[lab.legal_form] = (
            f"licence:{verdict.rule}",
            self._licence_sentence(verdict, lab),
        )
        return said
