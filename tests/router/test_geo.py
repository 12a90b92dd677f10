"""The geo index in a real Redis, loaded with the real French fablabs, and the distance helpers."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from redis import ConnectionPool, Redis

from dgml.errors import Invalid
from router import geo
from router.geo import InvalidCoordinates

BREST = (48.3904, -4.4861)
PARIS = (48.8566, 2.3522)


@pytest.mark.parametrize(
    ("lat", "lon", "says"),
    [
        (math.nan, 2.0, "finite"),
        (48.0, math.inf, "finite"),
        (91, 2.0, "latitude 91.0 is outside [-90, 90]"),
        (-90.5, 2.0, "latitude -90.5 is outside"),
        (48.0, -181, "longitude -181.0 is outside [-180, 180]"),
        (48.0, 180.01, "longitude 180.01 is outside"),
        ("north", 2.0, "must be numbers"),
        (None, 2.0, "must be numbers"),
    ],
)
def test_bad_coordinates_are_a_clear_error(lat, lon, says):
    with pytest.raises(InvalidCoordinates) as caught:
        geo.check_location(lat, lon)
    assert says in str(caught.value)
    # An input error the API answers with 422, and a ValueError for plain Python callers.
    assert isinstance(caught.value, Invalid) and isinstance(caught.value, ValueError)
    assert caught.value.to_dict()["error"] == "invalid_coordinates"


@pytest.mark.parametrize(("lat", "lon"), [(90, 180), (-90, -180), (0, 0)])
def test_edges_of_the_globe_are_valid(lat, lon):
    assert geo.check_location(lat, lon) == (float(lat), float(lon))


def test_round_location_keeps_two_decimals_within_a_kilometre():
    assert geo.round_location(48.399548, -4.472441) == (48.4, -4.47)
    rng = np.random.default_rng(7)
    lats, lons = rng.uniform(-89, 89, 2000), rng.uniform(-179, 179, 2000)
    moved = [
        geo.distance_km(lat, lon, *geo.round_location(lat, lon))
        for lat, lon in zip(lats, lons, strict=True)
    ]
    # At most 0.005 degree on each axis: 0.556 km north-south, 0.79 km in all.
    assert max(moved) <= 0.79
    assert max(moved) > 0.5


def test_haversine_known_distance_and_agreement():
    # Paris to Brest, about 505 km along the great circle.
    assert geo.distance_km(*PARIS, *BREST) == pytest.approx(505, abs=3)
    # A quarter of a meridian.
    assert geo.distance_km(0, 0, 90, 0) == pytest.approx(geo.WHOLE_EARTH_KM / 2)
    rng = np.random.default_rng(1)
    lats, lons = rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)
    vector = geo.haversine_km(*BREST, lats, lons)
    scalar = [geo.distance_km(*BREST, a, b) for a, b in zip(lats, lons, strict=True)]
    assert np.allclose(vector, scalar, rtol=1e-12, atol=1e-9)
    assert geo.haversine_km(*BREST, [BREST[0]], [BREST[1]])[0] == 0.0


def test_rebuild_indexes_every_french_lab(redis, geo_key, french_labs):
    assert geo.rebuild(redis, french_labs, key=geo_key) == 129
    assert redis.zcard(geo_key) == 129
    first = redis.geosearch(
        geo_key, longitude=BREST[1], latitude=BREST[0], radius=25, unit="km", sort="ASC", count=1
    )
    assert first == [b"tyfabbrest"]
    assert list(redis.scan_iter(match=f"{geo_key}:rebuild:*")) == []


def test_rebuild_replaces_the_whole_index(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    assert geo.rebuild(redis, french_labs[:10], key=geo_key) == 10
    members = {m.decode() for m in redis.zrange(geo_key, 0, -1)}
    assert members == {lab.id for lab in french_labs[:10]}


def test_rebuild_with_a_bad_lab_leaves_the_index_as_it_was(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    bad = replace(french_labs[0], lat=95.0)
    with pytest.raises(InvalidCoordinates, match=r"latitude 95\.0"):
        geo.rebuild(redis, [*french_labs[1:], bad], key=geo_key)
    assert redis.zcard(geo_key) == 129


def test_wiped_index_is_restored_by_ensure(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    assert not geo.ensure(redis, lambda: pytest.fail("must not reload"), key=geo_key)
    redis.delete(geo_key)  # Redis wiped
    assert geo.ensure(redis, lambda: french_labs, key=geo_key)
    assert redis.zcard(geo_key) == 129


def test_add_and_remove_follow_single_changes(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    geo.add(redis, "new-lab", *BREST, key=geo_key)
    geo.remove(redis, "tyfabbrest", key=geo_key)
    hits = next(geo.nearest(redis, *BREST, key=geo_key)).hits
    assert hits[0][0] == "new-lab"
    assert "tyfabbrest" not in {fablab_id for fablab_id, _ in hits}


@pytest.mark.parametrize("centre", [BREST, PARIS, (43.30, 5.37), (42.0, 9.0), (-33.9, 151.2)])
def test_nearest_yields_every_lab_once_in_the_brute_force_order(
    redis, geo_key, french_labs, centre
):
    geo.rebuild(redis, french_labs, key=geo_key)
    seen: list[tuple[str, float]] = []
    covered = 0.0
    for batch in geo.nearest(redis, *centre, key=geo_key, batch=8):
        # Every lab nearer than the covered distance has been yielded.
        assert all(km >= covered - 1e-3 for _, km in batch.hits)
        seen += batch.hits
        covered = batch.covered_km
        if batch.exhausted:
            break
    ids = [fablab_id for fablab_id, _ in seen]
    assert sorted(ids) == sorted(lab.id for lab in french_labs)
    indexed = np.array([km for _, km in seen])
    assert np.all(np.diff(indexed) >= -1e-3)
    exact = {lab.id: geo.distance_km(*centre, lab.lat, lab.lon) for lab in french_labs}
    assert np.allclose(indexed, [exact[i] for i in ids], atol=2e-3)


def test_nearest_widens_the_radius_only_as_far_as_pulled(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    batches = geo.nearest(redis, *BREST, key=geo_key, batch=4)
    first = next(batches)
    # Widened inside Redis along the ladder until a radius held a quarter of the batch: nobody
    # within 1.15 km of Brest, two labs within 2.31 km, all of them answered.
    assert first.radius_km == geo.RADII_KM[1] == first.covered_km
    assert [i for i, _ in first.hits] == ["tyfabbrest", "lesfabriquesduponant"]
    rest = list(batches)
    assert rest[-1].radius_km == pytest.approx(geo.WHOLE_EARTH_KM) and rest[-1].exhausted
    covered = [first.covered_km] + [b.covered_km for b in rest]
    assert covered == sorted(covered)
    # Each later search stops at a step of the ladder that holds 4 more labs, or at the whole
    # Earth.
    ladder = {*geo.RADII_KM, geo.WHOLE_EARTH_KM}
    for batch in rest:
        assert batch.radius_km in ladder
        assert len(batch.hits) >= 4 or batch.exhausted


def test_the_ladder_steps_are_the_widest_radii_of_redis_search_levels():
    """A GEOSEARCH of radius r measures the geohash cells of the level Redis derives from r:
    the level whose radii run from M / 2^(level+1) to M / 2^level (M half the equator, in
    Redis's geohash helper). Each step sits in a level of its own, at the height of its cells:
    the widest radius whose neighbouring cells still cover the circle at that level."""
    mercator_max_km = 20037.72637
    for level, radius in zip(range(14, 0, -1), geo.RADII_KM, strict=True):
        assert mercator_max_km / 2 ** (level + 1) < radius < mercator_max_km / 2**level
        cell_height_km = math.radians(2 * geo.MAX_INDEX_LAT / 2**level) * geo.EARTH_RADIUS_KM
        assert radius == pytest.approx(cell_height_km, rel=1e-5) and radius < cell_height_km
    assert geo.RADII_KM[0] == geo.START_KM


@pytest.mark.parametrize("centre", [BREST, PARIS, (43.30, 5.37), (45.76, 4.84), (20.0, -40.0)])
def test_a_search_without_distances_yields_the_same_labs(redis, geo_key, french_labs, centre):
    """The flat reply (ids only, costs Redis less) and the one with distances agree."""
    geo.rebuild(redis, french_labs, key=geo_key)
    with_km = list(geo.nearest(redis, *centre, key=geo_key, batch=8))
    flat = list(geo.nearest(redis, *centre, key=geo_key, batch=8, distances=False))
    assert [[i for i, _ in b.hits] for b in flat] == [[i for i, _ in b.hits] for b in with_km]
    # The same bound to a millimetre or so: Redis writes its distances to 0.1 m, the flat reply
    # measures the farthest lab's position itself.
    assert [b.covered_km for b in flat] == pytest.approx([b.covered_km for b in with_km], abs=1e-3)
    assert [b.radius_km for b in flat] == [b.radius_km for b in with_km]
    assert all(km is None for b in flat for _, km in b.hits)
    assert all(b.measure is None for b in with_km)
    # Each batch says how far its farthest hit is, as the index measures.
    for f, w in zip(flat, with_km, strict=True):
        if w.hits:
            assert f.farthest_km == pytest.approx(max(km for _, km in w.hits), abs=1e-3)
            assert w.farthest_km == max(km for _, km in w.hits)
    # measure answers the index distance of any id, and leaves out those the index lacks.
    wanted = [i for i, _ in with_km[0].hits][:3]
    measured = flat[0].measure([*wanted, "not-indexed"])
    assert set(measured) == set(wanted)
    assert [measured[i] for i in wanted] == pytest.approx(
        [km for i, km in with_km[0].hits[:3]], abs=1e-3
    )


def test_a_search_survives_a_flushed_script_and_a_killed_connection(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    expected = [i for i, _ in next(geo.nearest(redis, *BREST, key=geo_key)).hits]
    redis.script_flush()  # a restarted or wiped server has no scripts
    assert [i for i, _ in next(geo.nearest(redis, *BREST, key=geo_key)).hits] == expected
    # Another client kills this one's pooled connection: the next search reconnects.
    other = Redis(connection_pool=ConnectionPool(**redis.connection_pool.connection_kwargs))
    try:
        assert other.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        other.close()
    assert [i for i, _ in next(geo.nearest(redis, *BREST, key=geo_key)).hits] == expected


def test_a_search_through_a_single_connection_client(redis_url, geo_key, french_labs):
    client = Redis.from_url(redis_url, single_connection_client=True, decode_responses=True)
    try:
        geo.rebuild(client, french_labs, key=geo_key)
        hits = next(geo.nearest(client, *BREST, key=geo_key, distances=False)).hits
        assert hits[0] == ("tyfabbrest", None)
    finally:
        client.delete(geo_key)
        client.close()


def test_nearest_stays_small_in_a_dense_city_and_skips_seen_labs(redis, geo_key):
    from router.records import Fablab

    rng = np.random.default_rng(3)
    dense = [
        Fablab(f"d{i}", f"d{i}", 48.85 + dy, 2.35 + dx, "nonprofit")
        for i, (dy, dx) in enumerate(rng.normal(0, 0.05, (3000, 2)))
    ]
    geo.rebuild(redis, dense, key=geo_key)
    batches = geo.nearest(redis, 48.85, 2.35, key=geo_key, batch=16)
    first, second = next(batches), next(batches)
    # The first radius of the ladder holds more than a quarter of the batch: it answers twice
    # the batch, the nearest.
    assert len(first.hits) == 32 and first.radius_km == geo.START_KM
    # The 16 nearest lie within a few km: the next search does not measure all of 25 km.
    assert second.radius_km < 10
    ids = [i for i, _ in first.hits + second.hits]
    assert len(ids) == len(set(ids))
    # When the caller says how far it needs to look, the search widens up to there, no farther.
    need = geo.nearest(redis, 48.85, 2.35, key=geo_key, batch=16, need_km=lambda: 3.0)
    radii = []
    for batch in need:
        radii.append(batch.radius_km)
        if batch.covered_km >= 3.0:
            break
    assert radii[-1] == pytest.approx(3.0 + geo.INDEX_SLACK_KM)
    assert max(radii) == radii[-1]


def test_nearest_starts_where_the_hint_says(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    first = next(geo.nearest(redis, *BREST, key=geo_key, batch=4, start=(90.0, 0)))
    assert first.radius_km == pytest.approx(117.1)  # 30 % beyond where the last search ended
    # A hinted search stops at the first radius holding half the batch and answers up to the
    # batch: here all of them (the 4 nearest, Lannion the 4th at 85 km).
    assert len(first.hits) == 4 and first.hits[-1][0] == "fablablannion"
    assert first.covered_km == pytest.approx(85.128, abs=1e-2)
    # Or up to twice as many as the search that ended there considered: only 4 labs lie within
    # the radius, so all of it is covered.
    wide = next(geo.nearest(redis, *BREST, key=geo_key, batch=4, start=(90.0, 3)))
    assert len(wide.hits) == 4 and wide.covered_km == wide.radius_km == pytest.approx(117.1)


def test_search_near_a_pole_is_clamped_not_refused(redis, geo_key, french_labs):
    geo.rebuild(redis, french_labs, key=geo_key)
    geo.add(redis, "arctic", 89.5, 10.0, key=geo_key)
    hits = [h for b in geo.nearest(redis, 89.9, 0.0, key=geo_key) for h in b.hits]
    assert hits[0][0] == "arctic"
    assert len(hits) == 130


def test_an_empty_or_missing_index_yields_nothing_and_ends(redis, geo_key):
    batches = list(geo.nearest(redis, *BREST, key=geo_key))
    assert all(not b.hits for b in batches)
    assert batches[-1].exhausted
    assert geo.rebuild(redis, [], key=geo_key) == 0
    assert not redis.exists(geo_key)


def test_brute_force_batches_match_a_full_sort(french_labs):
    ids = [lab.id for lab in french_labs]
    lats = np.array([lab.lat for lab in french_labs])
    lons = np.array([lab.lon for lab in french_labs])
    pulled = [h for b in geo.nearest_brute_force(ids, lats, lons, *BREST, batch=5) for h in b.hits]
    distances = geo.haversine_km(*BREST, lats, lons)
    assert [fablab_id for fablab_id, _ in pulled] == [ids[i] for i in np.argsort(distances)]


@pytest.mark.parametrize("key", ["dgml:fablabs:geo", "clé:géo", b"raw:bytes"])
def test_a_search_command_is_packed_as_redis_py_packs_it(redis, key):
    args = ("EVALSHA", "0" * 40, 1, key, 2.35, -48.5, "16 32", 0.0, "1.15 2.3", 0)
    conn = redis.connection_pool.get_connection()
    try:
        expected = b"".join(conn.pack_command(*args))
    finally:
        redis.connection_pool.release(conn)
    assert geo._pack(args, "utf-8") == expected
