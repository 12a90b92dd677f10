"""The geo index in a real Redis, loaded with the real French fablabs, and the distance helpers."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

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
    # Widened inside Redis along the ladder until a radius held 4 labs: Lannion is 85 km away.
    assert first.radius_km == 128
    assert [i for i, _ in first.hits] == ["tyfabbrest", "lesfabriquesduponant", "telefab",
                                          "fablablannion"]  # fmt: skip
    rest = list(batches)
    assert rest[-1].radius_km == pytest.approx(geo.WHOLE_EARTH_KM) and rest[-1].exhausted
    covered = [first.covered_km] + [b.covered_km for b in rest]
    assert covered == sorted(covered)
    # Each search stops at a step of the ladder that holds 4 more labs, or at the whole Earth.
    ladder = {*map(float, geo.RADII_KM), geo.WHOLE_EARTH_KM}
    for batch in rest:
        assert batch.radius_km in ladder
        assert len(batch.hits) >= 4 or batch.exhausted


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
    assert len(first.hits) == 16
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
    hints = geo.RadiusHints(size=2)
    assert hints.start(*BREST, "fdm") is None
    hints.learn(*BREST, "fdm", 90.0, 0)
    start = hints.start(*BREST, "fdm")
    first = next(geo.nearest(redis, *BREST, key=geo_key, batch=4, start=start))
    assert first.radius_km == pytest.approx(99.1)  # 10 % beyond where the last search ended
    assert len(first.hits) == 4
    hints.learn(0, 0, "fdm", 1.0, 1)
    hints.learn(1, 1, "fdm", 1.0, 1)
    assert hints.start(*BREST, "fdm") is None  # the oldest is forgotten


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
