"""The plain data placement reads: fablab records and order requests.

Frozen dataclasses, checked once when made (``from_dict`` for JSON-like mappings), so the policy
can read them without checking again on every decision. The order service builds them from its
database rows (or keeps them in a cache) and hands them to :mod:`router.placement`.

Conventions: process and material names are compared case-insensitively (they are casefolded
here); build volumes and part extents are in mm; a machine's ``queue`` is the number of jobs
waiting for machines of that kind at the lab; ``typical_job_hours`` defaults by process
(:data:`TYPICAL_JOB_HOURS`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dgml.errors import Invalid
from router.geo import check_location
from router.terms import LegalForm, Purpose

# Hours one job keeps a machine busy when the lab did not say: rough figures for small parts.
TYPICAL_JOB_HOURS: dict[str, float] = {
    "fdm": 3.0,
    "sla": 2.5,
    "sls": 8.0,
    "laser": 0.5,
    "cnc": 2.0,
    "vinyl": 0.5,
    "pcb": 1.5,
}
DEFAULT_JOB_HOURS = 2.0


def _positive(value: Any, what: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Invalid(f"{what} must be a number, got {value!r}", field=what) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise Invalid(f"{what} must be a finite number > 0, got {value!r}", field=what)
    return number


def _triple(values: Any, what: str, *, allow_zero: bool = False) -> tuple[float, float, float]:
    if not isinstance(values, Sequence | np.ndarray) or len(values) != 3:
        raise Invalid(f"{what} must be three numbers [x, y, z] in mm, got {values!r}", field=what)
    x, y, z = (_positive(v, what, allow_zero=allow_zero) for v in values)
    return x, y, z


# Distinct build volumes, once each: machines of the same size share the tuple (a few sizes are
# common). Bounded: past that many sizes a machine keeps its own.
_VOLUMES: dict[tuple[float, ...], tuple[float, ...]] = {}
_MAX_VOLUMES = 4096


def offer_key(process: str, material: str) -> str:
    """The key of :attr:`Fablab.able` for machines of this process taking this material."""
    return sys.intern(f"{process}\x00{material}")


@dataclass(frozen=True, slots=True)
class Machine:
    process: str
    materials: frozenset[str]
    build_volume_mm: tuple[float, float, float]
    count: int = 1
    typical_job_hours: float | None = None
    queue: int = 0

    # typical_job_hours, or the process's default: read for every candidate, so set once.
    job_hours: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        hours = self.typical_job_hours
        if hours is None:
            hours = TYPICAL_JOB_HOURS.get(self.process, DEFAULT_JOB_HOURS)
        object.__setattr__(self, "job_hours", hours)
        # Machines of the same size share one tuple (see Fablab.able).
        volume = tuple(self.build_volume_mm)
        if len(_VOLUMES) < _MAX_VOLUMES or volume in _VOLUMES:
            volume = _VOLUMES.setdefault(volume, volume)
        object.__setattr__(self, "build_volume_mm", volume)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Machine:
        count = int(data.get("count", 1))
        queue = int(data.get("queue", 0))
        if count < 1 or queue < 0:
            raise Invalid(f"machine count must be >= 1 and queue >= 0, got {count}, {queue}")
        hours = data.get("typical_job_hours")
        return cls(
            process=str(data["process"]).casefold(),
            materials=frozenset(str(m).casefold() for m in data.get("materials", ())),
            build_volume_mm=_triple(data["build_volume_mm"], "build_volume_mm"),
            count=count,
            typical_job_hours=None if hours is None else _positive(hours, "typical_job_hours"),
            queue=queue,
        )


@dataclass(frozen=True, slots=True)
class PriceModel:
    per_job_eur: float = 0.0
    per_cm3_eur: float = 0.0

    def price(self, quantity: int, volume_cm3: float) -> float:
        """One job of ``quantity`` parts of ``volume_cm3`` each: set-up once, material per part."""
        return self.per_job_eur + self.per_cm3_eur * volume_cm3 * quantity


@dataclass(frozen=True, slots=True)
class Fablab:
    id: str
    name: str
    lat: float
    lon: float
    legal_form: LegalForm
    online: bool = True
    machines: tuple[Machine, ...] = ()
    price: PriceModel | None = None
    # process -> material -> the machines for it: what placement asks of every candidate.
    offers: dict[str, dict[str, tuple[Machine, ...]]] = field(init=False, repr=False, compare=False)
    # offer_key(process, material) -> (build volume, count, queue, busy hours = typical job
    # hours x count) of each machine for it. Placement reads this of every candidate: in a
    # city it reads hundreds of records scattered in memory, where each object touched is a
    # cache miss, so it is one dict of flat tuples (the volumes shared between machines).
    able: dict[str, tuple[tuple[tuple[float, float, float], int, int, float], ...]] = field(
        init=False, repr=False, compare=False
    )
    # The latitude in radians and its cosine, for the distance to every order (router.geo).
    phi: float = field(init=False, repr=False, compare=False)
    cos_phi: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "phi", math.radians(self.lat))
        set_(self, "cos_phi", math.cos(self.phi))
        offers: dict[str, dict[str, list[Machine]]] = {}
        for machine in self.machines:
            by_material = offers.setdefault(machine.process, {})
            for material in machine.materials:
                by_material.setdefault(material, []).append(machine)
        set_(
            self, "offers", {p: {m: tuple(ms) for m, ms in by.items()} for p, by in offers.items()}
        )
        able = {
            offer_key(process, material): tuple(
                (m.build_volume_mm, m.count, m.queue, m.job_hours * m.count) for m in machines
            )
            for process, by in self.offers.items()
            for material, machines in by.items()
        }
        set_(self, "able", able)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fablab:
        """From ``{id, name, location: {lat, lon} | [lat, lon] (or lat, lon keys), legal_form,
        online?, machines: [{process, materials, build_volume_mm, count?, typical_job_hours?,
        queue?}], price?: {per_job_eur?, per_cm3_eur?}}``."""
        location = data.get("location")
        if isinstance(location, Mapping):
            lat, lon = location.get("lat"), location.get("lon")
        elif location is not None:
            lat, lon = location
        else:
            lat, lon = data.get("lat"), data.get("lon")
        fablab_id = str(data["id"])
        lat, lon = check_location(lat, lon, field=f"fablab {fablab_id}")
        try:
            legal_form = LegalForm(data.get("legal_form", LegalForm.NONPROFIT))
        except ValueError:
            raise Invalid(
                f"fablab {fablab_id}: unknown legal_form {data.get('legal_form')!r}",
                field="legal_form",
            ) from None
        price = data.get("price")
        return cls(
            id=fablab_id,
            name=str(data.get("name", fablab_id)),
            lat=lat,
            lon=lon,
            legal_form=legal_form,
            online=bool(data.get("online", True)),
            machines=tuple(Machine.from_dict(m) for m in data.get("machines", ())),
            price=None
            if price is None
            else PriceModel(
                per_job_eur=_positive(price.get("per_job_eur", 0), "per_job_eur", allow_zero=True),
                per_cm3_eur=_positive(price.get("per_cm3_eur", 0), "per_cm3_eur", allow_zero=True),
            ),
        )


def as_fablab(record: Fablab | Mapping[str, Any]) -> Fablab:
    return record if isinstance(record, Fablab) else Fablab.from_dict(record)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What placement needs to know of an order; the location is rounded by the placement.

    The part's size comes from its geometry report: ``hull_points`` (the convex hull's vertices,
    (n, 3) mm) when known, else ``extents_mm`` (its bounding box). ``volume_cm3`` prices the
    material; without it the bounding box's volume is used, which overestimates. ``modified``
    is True when the maker gave parameters (the part is an adaptation of the design).
    """

    process: str
    material: str
    quantity: int
    lat: float
    lon: float
    purpose: Purpose
    licence: str
    modified: bool = False
    extents_mm: tuple[float, float, float] | None = None
    hull_points: np.ndarray | None = field(default=None, compare=False)
    volume_cm3: float | None = None
    excluded: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "process", str(self.process).casefold())
        set_(self, "material", str(self.material).casefold())
        if not isinstance(self.quantity, int | np.integer) or self.quantity < 1:
            raise Invalid(f"quantity must be a whole number >= 1, got {self.quantity!r}")
        set_(self, "quantity", int(self.quantity))
        lat, lon = check_location(self.lat, self.lon)
        set_(self, "lat", lat)
        set_(self, "lon", lon)
        try:
            set_(self, "purpose", Purpose(self.purpose))
        except ValueError:
            raise Invalid(
                f"unknown purpose {self.purpose!r}: use personal or commercial", field="purpose"
            ) from None
        if self.hull_points is not None:
            points = np.asarray(self.hull_points, dtype=float)
            if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
                raise Invalid("hull_points must be an (n, 3) array of mm", field="hull_points")
            if not np.isfinite(points).all():
                raise Invalid("hull_points must be finite", field="hull_points")
            points.setflags(write=False)
            set_(self, "hull_points", points)
            if self.extents_mm is None:
                extents = points.max(axis=0) - points.min(axis=0)
                set_(self, "extents_mm", tuple(float(e) for e in extents))
        if self.extents_mm is None:
            raise Invalid(
                "the part's size is needed: extents_mm or hull_points", field="extents_mm"
            )
        set_(self, "extents_mm", _triple(self.extents_mm, "extents_mm", allow_zero=True))
        if max(self.extents_mm) <= 0:
            raise Invalid("extents_mm are all zero", field="extents_mm")
        if self.volume_cm3 is not None:
            set_(self, "volume_cm3", _positive(self.volume_cm3, "volume_cm3", allow_zero=True))
        set_(self, "excluded", frozenset(str(i) for i in self.excluded))

    @property
    def part_volume_cm3(self) -> float:
        if self.volume_cm3 is not None:
            return self.volume_cm3
        x, y, z = self.extents_mm  # type: ignore[misc]
        return x * y * z / 1000.0


def fablabs_by_id(records: Iterable[Fablab | Mapping[str, Any]]) -> dict[str, Fablab]:
    """A ready ``load_fablab_records`` source for tests, benchmarks and small directories."""
    return {lab.id: lab for lab in map(as_fablab, records)}
