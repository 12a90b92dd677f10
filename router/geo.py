"""Where fablabs are: a geo index in Redis, great-circle distances, and locations kept coarse.

The index
    One sorted set, :data:`KEY`, holds every fablab of the directory by id at its longitude and
    latitude (``GEOADD``). The database stays the truth (docs/router.md): :func:`rebuild` makes
    the index from the directory into a temporary key and ``RENAME``\\ s it over the live one, so
    a reader sees the old index or the new one, never half of one; :func:`ensure` rebuilds it
    when the key is gone (Redis was wiped). :func:`add` and :func:`remove` follow single changes.

Nearest first, widening
    :func:`nearest` asks ``GEOSEARCH ... BYRADIUS r km ASC COUNT n`` for the fablabs nearest a
    point, widening ``r`` along :data:`RADII_KM` (1.15 km doubling to 9,460 km, then the whole
    Earth) until a radius holds enough of them. Redis measures every member of the geohash
    cells around the centre, cells of a level the radius sets, whatever ``n``: so the first
    search starts where the last one around the same place ended (the placement's hints),
    stops at the first radius holding a few fablabs and answers up to ``n`` of them, and a
    later one goes exactly as far as the placement says it still needs (``need_km``). The
    widening runs inside Redis (a short Lua script), so a search is one round trip however
    far it goes. It yields batches of fablabs not yet seen, nearest first, each with the
    distance up to which every fablab has been seen (``covered_km``): all the others are at
    least that far, which is what lets the placement stop early and still be sure of its
    winner. :func:`nearest_brute_force` yields the same batches from all distances at once, the
    reference the tests and the benchmark compare with.

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
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import Any, Protocol

import numpy as np
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dgml.errors import Invalid

KEY = "dgml:fablabs:geo"
EARTH_RADIUS_KM = 6372.797560856
# No two points on the sphere are farther apart than half its circumference.
WHOLE_EARTH_KM = math.pi * EARTH_RADIUS_KM
MAX_INDEX_LAT = 85.05112878
# Doubling steps. A GEOSEARCH measures every fablab in the geohash cells of one level around
# the centre, the level set by the radius (cells between one and two radii high), so a step too
# far costs thousands of measures in a city while steps that find nothing cost little (the
# widening runs inside Redis, see _SEARCH_LUA). Each step is just under the height of a level's
# cells, the widest radius Redis still searches in cells of that level: 1.15, 2.31, 4.62 ... km.
RADII_KM: tuple[float, ...] = tuple(
    math.radians(2 * MAX_INDEX_LAT / 2**level) * EARTH_RADIUS_KM * (1 - 1e-6)
    for level in range(14, 0, -1)
)
START_KM = RADII_KM[0]
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

    # (fablab id, distance in km as the index measured it, or None when the search was asked
    # not to return distances: ``measure`` answers them on demand)
    hits: list[tuple[str, float | None]]
    # Every fablab nearer than this has been yielded, in this batch or an earlier one.
    covered_km: float
    # The radius searched (WHOLE_EARTH_KM for the whole Earth).
    radius_km: float
    # True when every fablab of the index has been yielded.
    exhausted: bool
    # Index distances of these ids, for hits given without one.
    measure: Callable[[Sequence[str]], dict[str, float]] | None = None
    # No hit is farther than this, as the index measures (None: not known).
    farthest_km: float | None = None


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


# GEOSEARCH at each radius given (one space-separated argument: redis-py encodes each argument
# in Python) until one holds ``least`` fablabs, answering up to ``most``, in one round trip, as
# one string (the pure-Python RESP parser takes microseconds per entry, a split a tenth). With
# distances: "<found> <radius> <farthest km>\n<km> ...\n<id>\n..." for the fablabs at
# ``from_km`` or farther (the nearer ones were seen). Without: "<found> <radius> <lon> <lat>
# \n<id>\n..." with every fablab found and the position of the farthest: a Lua table per
# WITHDIST entry costs Redis more than the search itself in a city, a flat reply is joined in C.
_SEARCH_LUA = """
local least, most = string.match(ARGV[3], '(%d+) (%d+)')
least, most = tonumber(least), tonumber(most)
local withdist = ARGV[6] == '1'
local search = {'GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', 0, 'km', 'ASC',
                'COUNT', most, withdist and 'WITHDIST' or nil}
local found, radius
for step in string.gmatch(ARGV[5], '%S+') do
  radius = step
  search[7] = radius
  found = redis.call(unpack(search))
  if #found >= least then break end
end
local head = #found .. ' ' .. radius
if #found == 0 then return head end
if not withdist then
  local pos = redis.call('GEOPOS', KEYS[1], found[#found])[1]
  return head .. ' ' .. pos[1] .. ' ' .. pos[2] .. '\\n' .. table.concat(found, '\\n')
end
head = head .. ' ' .. found[#found][2]
local from_km = tonumber(ARGV[4])
local ids, kms = {}, {}
for i = 1, #found do
  local hit = found[i]
  if tonumber(hit[2]) >= from_km then
    ids[#ids + 1] = hit[1]
    kms[#kms + 1] = hit[2]
  end
end
return head .. '\\n' .. table.concat(kms, ' ') .. '\\n' .. table.concat(ids, '\\n')
"""
_SEARCH_SHA = hashlib.sha1(_SEARCH_LUA.encode()).hexdigest()


def _call(redis: Redis, *args: Any) -> Any:
    """One command straight through a connection of the client's pool: ``execute_command``
    costs 30 to 50 us of Python in redis-py 8 (retries, observability hooks, callbacks), as
    much as the round trip. A broken connection is dropped and the command goes through the
    client after all, with its retry policy."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None or getattr(redis, "connection", None) is not None:
        return redis.execute_command(*args)
    conn = pool.get_connection()
    try:
        conn.send_packed_command([_pack(args, conn.encoder.encoding)], check_health=False)
        reply = conn.read_response()
    except ResponseError:
        pool.release(conn)  # a whole error reply was read: the connection is clean
        raise
    except BaseException as exc:
        conn.disconnect()  # a reply may be half read
        pool.release(conn)
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            return redis.execute_command(*args)
        raise
    pool.release(conn)
    return reply


def _pack(args: Sequence[Any], encoding: str) -> bytes:
    """The RESP array of these arguments (str, bytes or numbers), as redis-py would pack them,
    in half its time."""
    parts = [
        a if isinstance(a, bytes) else (a if isinstance(a, str) else repr(a)).encode(encoding)
        for a in args
    ]
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)])


def _search(
    redis: Redis,
    key: str,
    lon: float,
    lat: float,
    radii: str,
    least: int,
    most: int,
    from_km: float,
    distances: bool,
) -> tuple[int, float, float | None, list[tuple[str, float | None]]]:
    """``(found, radius, farthest, hits)``: the radius the search stopped at, how many it found
    there, the index distance of the farthest of them (None when it found none), and the hits:
    ``(id, km)`` at ``from_km`` or farther with distances, every ``(id, None)`` found without."""
    count = f"{least} {most}"
    args = ("EVALSHA", _SEARCH_SHA, 1, key, lon, lat, count, from_km, radii, int(distances))
    try:
        text = _text(_call(redis, *args))
    except NoScriptError:  # a new or wiped server: load the script and ask again
        redis.script_load(_SEARCH_LUA)
        text = _text(_call(redis, *args))
    head, _, body = text.partition("\n")
    found, radius, *last = head.split(" ")
    farthest = None
    if distances:
        kms, _, ids = body.partition("\n")
        hits: list[tuple[str, float | None]] = list(
            zip(ids.split("\n"), map(float, kms.split(" ")), strict=True) if kms else ()
        )
        farthest = float(last[0]) if last else None
    else:
        hits = list(zip(body.split("\n"), repeat(None))) if body else []
        if last:
            farthest = distance_km(lat, lon, float(last[1]), float(last[0]))
    return int(found), float(radius), farthest, hits


@lru_cache(maxsize=64)
def _ladder(radii: tuple[float, ...]) -> tuple[float, ...]:
    return (*sorted({float(r) for r in radii if 0 < r < WHOLE_EARTH_KM}), WHOLE_EARTH_KM)


@lru_cache(maxsize=1024)
def _steps_text(steps: tuple[float, ...]) -> str:
    return " ".join(map(repr, steps))


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
    distances: bool = True,
) -> Iterator[Batch]:
    """Fablabs around ``(lat, lon)`` in batches, nearest first, widening the radius as pulled.

    The first search starts where a search here ended before (``start``, ``(km, fablabs)``
    from router.placement.RadiusHints) or at :data:`START_KM`, widens in Redis along the ladder
    (``radii``, then the whole Earth) until a radius holds a few fablabs (half of ``batch``,
    a quarter without a hint), and answers up to twice as many as the last search here
    considered (at least ``batch``; twice ``batch`` without a hint). Each later one widens
    from the distance seen so far, up to ``need_km()`` when the caller knows how far it must
    still look (the placement, once it has its winner and fallbacks, needs every fablab that
    could beat the winner) and to the whole Earth otherwise, and answers only the fablabs not
    yet seen. With ``distances=False`` the hits come without their index distance (the
    placement measures each record exactly anyway), which costs Redis less; the batch's
    ``measure`` answers them on demand and ``farthest_km`` bounds them all.
    """
    lat, lon = check_location(lat, lon)
    centre_lat = _indexable(lat)
    clamped_km = distance_km(lat, lon, centre_lat, lon)
    ladder = _ladder(tuple(radii))

    def widening(km: float) -> list[float]:
        first = min(km, WHOLE_EARTH_KM)
        return [first, *(r for r in ladder if r > first)]

    def measure(ids: Sequence[str]) -> dict[str, float]:
        """Index distances of these ids (those the index still holds)."""
        found = zip(ids, redis.geopos(key, *ids) if ids else [], strict=True)
        return {i: distance_km(centre_lat, lon, float(p[1]), float(p[0])) for i, p in found if p}

    if start is None:
        steps, least, most = widening(START_KM), max(1, batch // 4), 2 * batch
    else:
        # 30 % beyond where the last search here ended, answering up to twice as many as it
        # considered: widening again costs a round trip, answering more costs little.
        steps = widening(1.3 * start[0] + 0.1)
        least, most = max(1, batch // 2), max(2 * start[1], batch)
    seen: set[str] = set()
    from_km = 0.0
    while True:
        search = [min(r + clamped_km, WHOLE_EARTH_KM) for r in steps] if clamped_km else steps
        # The ladder's part of the steps is the same from search to search.
        text = (
            f"{search[0]!r} {_steps_text(tuple(search[1:]))}"
            if len(search) > 1
            else repr(search[0])
        )
        found, search_km, farthest, answer = _search(
            redis, key, lon, centre_lat, text, least, most, from_km, distances
        )
        radius = steps[search.index(search_km)] if search_km in search else steps[-1]
        full = found >= most and farthest is not None
        whole = radius >= WHOLE_EARTH_KM
        hits = answer if not seen else [hit for hit in answer if hit[0] not in seen]
        last = farthest
        # Every fablab not yet answered is at least this far, as Redis measures from the centre.
        farthest = farthest if full else search_km
        from_km = max(farthest - INDEX_SLACK_KM, 0.0)
        reached = max(farthest - clamped_km, 0.0) if full else radius
        covered = min(max(reached - INDEX_SLACK_KM, 0.0), radius) if full else radius
        exhausted = whole and not full
        yield Batch(hits, covered, radius, exhausted, None if distances else measure, last)
        if exhausted:
            return
        # Pulled again: remember what was seen (most decisions never get here).
        seen.update(fablab_id for fablab_id, _ in hits)
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
        least = most = len(seen) + more


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
