"""Where fablabs are: a geo index in Redis, great-circle distances, and locations kept coarse.

The index
    One sorted set, :data:`KEY`, holds every fablab of the directory by id at its longitude and
    latitude (``GEOADD``). The database stays the truth (docs/router.md): :func:`rebuild` makes
    the index from the directory into a temporary key and ``RENAME``\\ s it over the live one, so
    a reader sees the old index or the new one, never half of one; :func:`ensure` rebuilds it
    when the key is gone (Redis was wiped). :func:`add` and :func:`remove` follow single changes.

Nearest first, widening
    :func:`nearest` asks ``GEOSEARCH ... BYRADIUS r km ASC COUNT n WITHDIST`` for the ``n``
    nearest fablabs, widening ``r`` along :data:`RADII_KM` (1 km, doubling to 2,048 km, then
    the whole Earth) until a radius holds ``n``. Redis measures every member of the geohash
    cells covering the circle, whatever ``n``, so a radius just large enough keeps its work
    small in dense cities; the widening runs inside Redis (a short Lua script), so a search
    costs one round trip however far it goes. A search starts where the last one around the
    same place ended (:class:`RadiusHints`), and goes exactly as far as the placement says it
    still needs once it knows (``need_km``). It yields batches of fablabs not yet seen,
    nearest first, each with the distance up to which every fablab has been seen
    (``covered_km``): all the others are at least that far, which is what lets the placement
    stop early and still be sure of its winner. :func:`nearest_brute_force` yields the same
    batches from all distances at once, the reference the tests and the benchmark compare with.

Distances
    Haversine on a sphere of radius :data:`EARTH_RADIUS_KM`, 6372.7976 km: the radius Redis
    uses for its geo commands (``EARTH_RADIUS_IN_METERS`` in its geohash helper), so a distance
    we compute and the radius Redis searched agree. On the WGS84 ellipsoid great-circle
    distances differ from the spherical ones by up to about 0.5 %, which does not change which
    fablab is nearest in any case that matters to a maker.

Coarse locations
    Routing keeps a maker's location rounded to 2 decimals of a degree (:func:`round_location`):
    0.01 degree of latitude is 1.11 km everywhere (a degree is 111.2 km on this sphere), 0.01
    degree of longitude is 1.11 km x cos(latitude), so less. Rounding moves a point by at most
    0.005 degree on each axis: under 0.56 km north-south and 0.79 km in all. About 1 km, enough
    to choose a fablab and not enough to find a door.

Redis cannot index latitudes beyond +-85.05112878 degrees (the Web Mercator limit of its
geohash). A fablab or a search centre nearer a pole is clamped to that latitude; a search widens
its radius by the distance clamped away, so no fablab within the radius asked for is missed.
"""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from redis import Redis
from redis.exceptions import NoScriptError

from dgml.errors import Invalid

KEY = "dgml:fablabs:geo"
# Doubling steps: Redis measures every fablab in cells at least as wide as the radius, so a
# step too far can cost thousands of measures in a city, while steps that find nothing cost
# little (the widening runs inside Redis, see _SEARCH_LUA).
RADII_KM: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
START_KM = 1.0
EARTH_RADIUS_KM = 6372.797560856
# No two points on the sphere are farther apart than half its circumference.
WHOLE_EARTH_KM = math.pi * EARTH_RADIUS_KM
MAX_INDEX_LAT = 85.05112878
LOCATION_DECIMALS = 2
# Redis stores a point as a 52-bit geohash (under 0.6 m off) and answers distances to 0.1 m.
INDEX_SLACK_KM = 0.002
_GEOADD_CHUNK = 5000


class InvalidCoordinates(Invalid, ValueError):
    code = "invalid_coordinates"


class Located(Protocol):
    id: str
    lat: float
    lon: float


def check_location(lat: Any, lon: Any, *, field: str = "location") -> tuple[float, float]:
    """``(lat, lon)`` as floats, or :class:`InvalidCoordinates` saying what is wrong."""
    try:
        flat, flon = float(lat), float(lon)
    except (TypeError, ValueError):
        raise InvalidCoordinates(
            f"{field}: latitude and longitude must be numbers, got {lat!r}, {lon!r}", field=field
        ) from None
    if not (math.isfinite(flat) and math.isfinite(flon)):
        raise InvalidCoordinates(
            f"{field}: latitude and longitude must be finite, got {flat}, {flon}", field=field
        )
    if not -90.0 <= flat <= 90.0:
        raise InvalidCoordinates(
            f"{field}: latitude {flat} is outside [-90, 90] degrees", field=field
        )
    if not -180.0 <= flon <= 180.0:
        raise InvalidCoordinates(
            f"{field}: longitude {flon} is outside [-180, 180] degrees", field=field
        )
    return flat, flon


def round_location(lat: float, lon: float) -> tuple[float, float]:
    """The location checked and rounded to 2 decimals (about 1 km, see the module notes)."""
    lat, lon = check_location(lat, lon)
    return round(lat, LOCATION_DECIMALS) + 0.0, round(lon, LOCATION_DECIMALS) + 0.0


def haversine_km(lat: float, lon: float, lats: Any, lons: Any) -> np.ndarray:
    """Great-circle distances in km from one point to arrays of points (degrees), vectorised."""
    phi = math.radians(lat)
    phis = np.radians(np.asarray(lats, dtype=float))
    dphi = phis - phi
    dlam = np.radians(np.asarray(lons, dtype=float)) - math.radians(lon)
    a = np.sin(dphi * 0.5) ** 2 + math.cos(phi) * np.cos(phis) * np.sin(dlam * 0.5) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points (degrees): the scalar haversine."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) * 0.5) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) * 0.5) ** 2
    )
    return 2.0 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(a, 1.0)))


def _indexable(lat: float) -> float:
    return min(max(lat, -MAX_INDEX_LAT), MAX_INDEX_LAT)


def _check_id(fablab_id: Any) -> None:
    if "\n" in str(fablab_id):
        raise Invalid(f"fablab id {fablab_id!r} has a line break", field="id")


def _geoadd_args(fablabs: Iterable[Located]) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for lab in fablabs:
        lat, lon = check_location(lab.lat, lab.lon, field=f"fablab {lab.id}")
        _check_id(lab.id)
        chunk += [lon, _indexable(lat), str(lab.id)]
        if len(chunk) >= 3 * _GEOADD_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rebuild(redis: Redis, fablabs: Iterable[Located], *, key: str = KEY) -> int:
    """Replace the index with exactly these fablabs, atomically; answer how many it holds.

    The new index is written under a temporary key of its own, then renamed over ``key`` (one
    command: readers never see a partial index). Coordinates are checked before anything is
    written; an empty directory leaves no key.
    """
    chunks = list(_geoadd_args(fablabs))
    if not chunks:
        redis.delete(key)
        return 0
    temp = f"{key}:rebuild:{uuid.uuid4().hex}"
    try:
        pipe = redis.pipeline(transaction=False)
        for chunk in chunks:
            pipe.execute_command("GEOADD", temp, *chunk)
        pipe.execute()
        size = redis.zcard(temp)
        redis.rename(temp, key)
    finally:
        redis.delete(temp)  # nothing left behind when a write failed half-way
    return int(size)


def ensure(redis: Redis, load_fablabs: Callable[[], Iterable[Located]], *, key: str = KEY) -> bool:
    """Rebuild the index from ``load_fablabs()`` when its key is missing; True if it did."""
    if redis.exists(key):
        return False
    rebuild(redis, load_fablabs(), key=key)
    return True


def add(redis: Redis, fablab_id: str, lat: float, lon: float, *, key: str = KEY) -> None:
    """Index one fablab, or move it (after the directory committed the change)."""
    lat, lon = check_location(lat, lon, field=f"fablab {fablab_id}")
    _check_id(fablab_id)
    redis.geoadd(key, [lon, _indexable(lat), str(fablab_id)])


def remove(redis: Redis, fablab_id: str, *, key: str = KEY) -> None:
    redis.zrem(key, str(fablab_id))


@dataclass(frozen=True, slots=True)
class Batch:
    """Fablabs not yet seen, nearest first, and how far the search has looked."""

    # (fablab id, distance in km as the index measured it)
    hits: list[tuple[str, float]]
    # Every fablab nearer than this has been yielded, in this batch or an earlier one.
    covered_km: float
    # The radius searched (WHOLE_EARTH_KM for the whole Earth).
    radius_km: float
    # True when every fablab of the index has been yielded.
    exhausted: bool


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


class RadiusHints:
    """Where searches around a place ended, per 1-degree cell and kind of order.

    Only speed depends on it: the next search there starts at that radius and asks for about
    as many fablabs. Bounded (the least recently used are forgotten).
    """

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._ends: OrderedDict[tuple[int, int, str], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, lat: float, lon: float, kind: str = "") -> tuple[float, int] | None:
        """``(km, fablabs)`` where the last search here ended, if one did."""
        with self._lock:
            return self._ends.get((math.floor(lat), math.floor(lon), kind))

    def learn(self, lat: float, lon: float, kind: str, km: float, fablabs: int) -> None:
        cell = (math.floor(lat), math.floor(lon), kind)
        with self._lock:
            self._ends[cell] = (km, fablabs)
            self._ends.move_to_end(cell)
            if len(self._ends) > self.size:
                self._ends.popitem(last=False)


HINTS = RadiusHints()


# GEOSEARCH at each radius given (one space-separated argument: redis-py encodes each argument
# in Python) until one holds ``count`` fablabs, in one round trip; answering only the fablabs at
# ``from_km`` or farther (the nearer ones were seen) as one string, "<found> <radius>\n<id>
# <km>\n...": the pure-Python RESP parser takes about 4.5 us per WITHDIST entry, a split a tenth.
_SEARCH_LUA = """
local count = tonumber(ARGV[3])
local from_km = tonumber(ARGV[4])
local found, radius
for step in string.gmatch(ARGV[5], '%S+') do
  radius = step
  found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
                     'BYRADIUS', radius, 'km', 'ASC', 'COUNT', count, 'WITHDIST')
  if #found >= count then break end
end
local out = {#found .. ' ' .. radius}
for i = 1, #found do
  local hit = found[i]
  if tonumber(hit[2]) >= from_km then
    out[#out + 1] = hit[1] .. ' ' .. hit[2]
  end
end
return table.concat(out, '\\n')
"""
_SEARCH_SHA = hashlib.sha1(_SEARCH_LUA.encode()).hexdigest()


def _search(
    redis: Redis,
    key: str,
    lon: float,
    lat: float,
    radii: Sequence[float],
    count: int,
    from_km: float,
) -> tuple[int, float, list[tuple[str, float]]]:
    """``(found, radius, [(id, km), ...])``: the radius the search stopped at, how many it
    found there, and those of them at ``from_km`` or farther."""
    args = (lon, lat, count, from_km, " ".join(map(repr, radii)))
    try:
        text = redis.evalsha(_SEARCH_SHA, 1, key, *args)
    except NoScriptError:  # a new or wiped server: load the script and ask again
        redis.script_load(_SEARCH_LUA)
        text = redis.evalsha(_SEARCH_SHA, 1, key, *args)
    lines = _text(text).split("\n")
    found, radius = lines[0].split(" ")
    hits = []
    for line in lines[1:]:
        member, _, dist = line.rpartition(" ")
        hits.append((member, float(dist)))
    return int(found), float(radius), hits


def nearest(
    redis: Redis,
    lat: float,
    lon: float,
    *,
    key: str = KEY,
    radii: Sequence[float] = RADII_KM,
    batch: int = 32,
    start: tuple[float, int] | None = None,
    need_km: Callable[[], float | None] | None = None,
) -> Iterator[Batch]:
    """Fablabs around ``(lat, lon)`` in batches, nearest first, widening the radius as pulled.

    The first search asks for ``batch`` fablabs from where a search here ended before
    (``start``, ``(km, fablabs)`` from :class:`RadiusHints`) or from 1 km, widening in Redis
    along the ladder (``radii``, then the whole Earth) until a radius holds them. Each later
    one widens from the distance seen so far, up to ``need_km()`` when the caller knows how far
    it must still look (the placement, once it has its winner and fallbacks, needs every
    fablab that could beat the winner) and to the whole Earth otherwise, and answers only the
    fablabs not yet seen.
    """
    lat, lon = check_location(lat, lon)
    centre_lat = _indexable(lat)
    clamped_km = distance_km(lat, lon, centre_lat, lon)
    ladder = [*sorted({float(r) for r in radii if 0 < r < WHOLE_EARTH_KM}), WHOLE_EARTH_KM]

    def widening(km: float) -> list[float]:
        first = min(km, WHOLE_EARTH_KM)
        return [first, *(r for r in ladder if r > first)]

    if start is None:
        steps, count = widening(START_KM), batch
    else:
        steps, count = widening(1.1 * start[0] + 0.1), max(start[1], batch)
    seen: set[str] = set()
    from_km = 0.0
    while True:
        search = [min(r + clamped_km, WHOLE_EARTH_KM) for r in steps]
        found, search_km, answer = _search(redis, key, lon, centre_lat, search, count, from_km)
        radius = steps[search.index(search_km)] if search_km in search else steps[-1]
        full = found >= count
        whole = radius >= WHOLE_EARTH_KM
        hits = []
        for fablab_id, km in answer:
            if fablab_id not in seen:
                seen.add(fablab_id)
                hits.append((fablab_id, km))
        # Every fablab not yet answered is at least this far, as Redis measures from the centre.
        farthest = answer[-1][1] if full else search_km
        from_km = max(farthest - INDEX_SLACK_KM, 0.0)
        reached = max(farthest - clamped_km, 0.0) if full else radius
        covered = min(max(reached - INDEX_SLACK_KM, 0.0), radius) if full else radius
        yield Batch(hits, covered, radius, whole and not full)
        if whole and not full:
            return
        # Widen from what was seen, up to where the caller needs to look or else the whole
        # Earth. Each search measures every fablab in its cells again, so ask for enough: half
        # as many again as seen, or as many as the density seen promises up to where the
        # caller needs to look (at most 8 batches: the answer's size still costs).
        more = max(batch, len(seen) // 2)
        target = need_km() if need_km is not None else None
        if target is None or target <= reached:
            target = WHOLE_EARTH_KM
        else:
            density = found / max(reached, 0.1) ** 2  # fablabs per km^2, up to a factor pi
            more = max(more, min(math.ceil(1.2 * density * target * target) - found, 8 * batch))
        target = min(target + INDEX_SLACK_KM, WHOLE_EARTH_KM)
        steps = [*(r for r in ladder if reached < r < target), target]
        count = len(seen) + more


def nearest_brute_force(
    ids: Sequence[str],
    lats: np.ndarray,
    lons: np.ndarray,
    lat: float,
    lon: float,
    *,
    batch: int = 32,
) -> Iterator[Batch]:
    """The same batches as :func:`nearest`, from the distances to every fablab at once.

    No index: one vectorised haversine over all fablabs, then the ``k`` nearest by partial
    sort, ``k`` doubling as the batches are pulled. The reference for tests and benchmarks.
    """
    lat, lon = check_location(lat, lon)
    distances = haversine_km(lat, lon, lats, lons)
    total = len(distances)
    if total == 0:
        yield Batch([], WHOLE_EARTH_KM, WHOLE_EARTH_KM, True)
        return
    yielded = np.zeros(total, dtype=bool)
    k = batch
    while True:
        k = min(k, total)
        if k < total:
            part = np.argpartition(distances, k)
            nearest_k = part[:k]
            covered = float(distances[part[k]])
        else:
            nearest_k = np.arange(total)
            covered = WHOLE_EARTH_KM
        order = nearest_k[np.argsort(distances[nearest_k], kind="stable")]
        order = order[~yielded[order]]
        yielded[order] = True
        hits = [(str(ids[i]), float(distances[i])) for i in order]
        yield Batch(hits, covered, WHOLE_EARTH_KM, k >= total)
        if k >= total:
            return
        k *= 2
