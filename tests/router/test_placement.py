"""The placement policy over the real French fablabs, through the Redis geo index and without."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from dgml.errors import Invalid
from router import geo
from router.decision import passing, refused
from router.geo import InvalidCoordinates
from router.placement import (
    Candidate,
    Decision,
    Policy,
    RadiusHints,
    Weights,
    decide,
    place,
    place_from,
    split_quantity,
)
from router.records import Fablab, Machine, OrderRequest, fablabs_by_id, offer_key

BREST = (48.3904, -4.4861)
DISTANCE_ONLY = Policy(weights=Weights(wait_per_hour=0.0, price_per_eur=0.0))


def order(**changes) -> OrderRequest:
    base = dict(
        process="fdm",
        material="PLA",
        quantity=1,
        lat=BREST[0],
        lon=BREST[1],
        purpose="personal",
        licence="CERN-OHL-S-2.0",
        extents_mm=(40.0, 30.0, 20.0),
    )
    return OrderRequest(**{**base, **changes})


def lab(fablab_id: str, lat: float, lon: float, *machines: Machine, **changes) -> Fablab:
    return Fablab(
        id=fablab_id,
        name=changes.pop("name", fablab_id),
        lat=lat,
        lon=lon,
        legal_form=changes.pop("legal_form", "nonprofit"),
        machines=machines,
        **changes,
    )


def printer(volume=(220, 220, 250), *, count=1, queue=0, materials=("pla",)) -> Machine:
    return Machine("fdm", frozenset(materials), tuple(map(float, volume)), count=count, queue=queue)


@pytest.fixture
def indexed(redis, geo_key, french_labs):
    """place() over the French labs in the geo index."""
    geo.rebuild(redis, french_labs, key=geo_key)
    records = fablabs_by_id(french_labs)

    def run(request: OrderRequest, policy: Policy = Policy(), **kwargs) -> Decision:
        load = kwargs.pop("load", lambda ids: {i: records[i] for i in ids if i in records})
        return place(redis, request, load, policy, key=geo_key, **kwargs)

    return run


def brute_force(labs, request: OrderRequest, policy: Policy = Policy()) -> Decision:
    records = fablabs_by_id(labs)
    ids = list(records)
    lats = np.array([records[i].lat for i in ids])
    lons = np.array([records[i].lon for i in ids])
    return place_from(
        request,
        lambda lat, lon, need_km: geo.nearest_brute_force(ids, lats, lons, lat, lon),
        lambda wanted: {i: records[i] for i in wanted},
        policy,
    )


def nearest_able(labs, request: OrderRequest) -> str:
    """By hand: every lab with the process and material, the nearest by haversine."""
    able = [
        lab
        for lab in labs
        if any(
            m.process == request.process and request.material in m.materials for m in lab.machines
        )
    ]
    lat, lon = geo.round_location(request.lat, request.lon)
    distances = geo.haversine_km(lat, lon, [x.lat for x in able], [x.lon for x in able])
    return able[int(np.argmin(distances))].id


# --- the nearest lab that can make it -----------------------------------------------------------


def test_an_order_near_brest_goes_to_tyfab(indexed, french_labs):
    decision = indexed(order(), DISTANCE_ONLY)
    assert decision.winner.fablab_id == "tyfabbrest" == nearest_able(french_labs, order())
    assert decision.winner.distance_km < 2
    assert decision.location == (48.39, -4.49)


@pytest.mark.parametrize(
    ("process", "material"), [("fdm", "pla"), ("laser", "mdf-3mm"), ("pcb", "fr1"), ("cnc", "mdf")]
)
@pytest.mark.parametrize(
    "where", [BREST, (47.99, -4.10), (48.58, 7.75), (43.30, 5.37), (45.76, 4.84), (41.9, 8.7)]
)
def test_the_nearest_lab_with_the_process_matches_brute_force(
    indexed, french_labs, process, material, where
):
    flat = (40.0, 30.0, 1.6)  # a laser-cut plate or a circuit board
    extents = flat if process in ("laser", "pcb") else (40.0, 30.0, 20.0)
    request = order(
        process=process, material=material, lat=where[0], lon=where[1], extents_mm=extents
    )
    decision = indexed(request, DISTANCE_ONLY)
    assert decision.winner.fablab_id == nearest_able(french_labs, request)


def test_early_stopping_never_changes_the_winner(indexed, french_labs):
    """With waits and prices in the score, the index, a brute-force scan and a full look at
    every lab agree on random orders (the stopping bound is sound)."""
    rng = np.random.default_rng(2024)
    kinds = [("fdm", "pla"), ("fdm", "petg"), ("laser", "plywood-3mm"), ("cnc", "plywood")]
    for _ in range(60):
        process, material = kinds[rng.integers(len(kinds))]
        request = order(
            process=process,
            material=material,
            extents_mm=(60.0, 40.0, 3.0) if process == "laser" else (60.0, 40.0, 30.0),
            quantity=int(rng.integers(1, 30)),
            lat=float(rng.uniform(42.5, 50.5)),
            lon=float(rng.uniform(-4.5, 7.5)),
            volume_cm3=float(rng.uniform(1, 200)),
        )
        ours = indexed(request)
        full = decide(request, french_labs)
        brute = brute_force(french_labs, request)
        assert ours.winner == full.winner == brute.winner
        assert ours.lines == full.lines == brute.lines
        assert ours.winner is not None
        assert len(ours.candidates) <= len(full.candidates)


def test_the_search_stops_early_and_says_how_far_it_looked(indexed):
    decision = indexed(order(), hints=None)
    assert 5 <= sum(c.ok for c in decision.candidates) < 129
    # It looked as far as the winner's score (no lab beyond could have beaten it) and as far
    # as it took to find 5 labs that can make the part.
    assert decision.winner.score <= decision.considered_km
    fifth = sorted(c.distance_km for c in decision.candidates if c.ok)[4]
    assert fifth <= decision.considered_km < 250
    assert max(c.distance_km for c in decision.candidates) <= decision.considered_km
    assert decision.considered_km <= decision.radius_km
    assert not decision.exhausted and not decision.truncated


def test_hints_change_the_path_not_the_decision(indexed):
    hints = RadiusHints()
    first = indexed(order(), hints=hints)
    assert hints.start(*first.location, "fdm")[0] == first.candidates[-1].distance_km
    # Only the radius of the last search, and so how far it looked, may differ.
    same = {"exclude": {"radius_km", "considered_km"}}
    assert indexed(order(), hints=hints).model_dump(**same) == first.model_dump(**same)
    assert indexed(order(), hints=None).model_dump(**same) == first.model_dump(**same)


# --- filters --------------------------------------------------------------------------------


def test_a_long_bar_is_accepted_by_a_lab_whose_bed_fits_it_diagonally(redis, geo_key):
    bar = order(extents_mm=(300.0, 10.0, 10.0))
    small = lab("small-bed", 48.40, -4.48, printer((200, 150, 20)))
    wide = lab("wide-bed", 48.45, -4.40, printer((250, 210, 50)))  # 300 > 250: only diagonally
    far = lab("far-away", 48.00, -3.00, printer((350, 350, 350)))
    labs = [small, wide, far]
    geo.rebuild(redis, labs, key=geo_key)
    records = fablabs_by_id(labs)
    decision = place(redis, bar, lambda ids: records, key=geo_key)
    assert decision.winner.fablab_id == "wide-bed"
    rejected = {c.fablab_id: c for c in decision.candidates if not c.ok}
    assert rejected["small-bed"].reason == "build_volume"
    assert "300 x 10 x 10 mm" in rejected["small-bed"].detail
    # The same bar given as the hull points of a mesh, turned arbitrarily.
    points = trimesh.creation.box((300, 10, 10)).vertices
    turned = points @ Rotation.from_euler("xyz", [10, 35, 70], degrees=True).as_matrix().T
    decision = decide(order(hull_points=turned, extents_mm=None), labs)
    assert decision.winner.fablab_id == "wide-bed"


def test_non_commercial_design_for_a_commercial_purpose_is_refused_everywhere(indexed, french_labs):
    decision = indexed(order(licence="CC-BY-NC-4.0", purpose="commercial"))
    assert decision.winner is None
    assert decision.refused == "licence:non-commercial"
    assert "CC-BY-NC-4.0 allows only personal orders" in decision.refused_detail
    assert "commercial order, which no fablab may take" in decision.refused_detail
    # Refused at every legal form, so no fablab is even searched.
    assert decision.candidates == [] and not decision.exhausted
    assert decision.lines == [] and decision.unassigned == 1
    assert decide(order(licence="CC-BY-NC-4.0", purpose="commercial"), french_labs) == decision


def test_a_refusal_at_some_legal_forms_is_a_reason_per_candidate(indexed, french_labs):
    """The PPL refuses commercial orders at companies and individuals only."""
    forms = {x.id: x.legal_form.value for x in french_labs}
    decision = decide(order(licence="LicenseRef-PPL", purpose="commercial"), french_labs)
    assert decision.refused is None
    refused = {c.fablab_id for c in decision.candidates if c.reason == "licence:peer-production"}
    assert refused == {i for i, form in forms.items() if form in {"commercial", "individual"}}
    assert forms[decision.winner.fablab_id] in {"cooperative", "nonprofit"}
    sentence = next(c.detail for c in decision.candidates if c.fablab_id in refused)
    assert "commercial order and a" in sentence
    assert indexed(order(licence="LicenseRef-PPL", purpose="commercial")).winner == decision.winner


def test_non_commercial_personal_order_goes_to_a_nonprofit_or_individual_lab(indexed, french_labs):
    forms = {x.id: x.legal_form.value for x in french_labs}
    decision = indexed(order(licence="CC-BY-NC-SA-4.0"))
    assert forms[decision.winner.fablab_id] in {"nonprofit", "individual"}
    everywhere = decide(order(licence="CC-BY-NC-SA-4.0"), french_labs)
    refused = {c.fablab_id for c in everywhere.candidates if c.reason == "licence:non-commercial"}
    assert refused == {i for i, form in forms.items() if form in {"commercial", "cooperative"}}
    assert everywhere.winner == decision.winner


def test_modified_no_derivatives_design_is_refused_with_the_rule(indexed):
    decision = indexed(order(licence="CC-BY-ND-4.0", modified=True))
    assert decision.winner is None
    assert decision.refused == "licence:no-derivatives"
    assert "without parameters" in decision.refused_detail
    assert indexed(order(licence="CC-BY-ND-4.0")).winner is not None


def test_excluded_labs_are_skipped(indexed):
    decision = indexed(order(excluded={"tyfabbrest", "lesfabriquesduponant"}), DISTANCE_ONLY)
    assert decision.winner.fablab_id not in {"tyfabbrest", "lesfabriquesduponant"}
    reasons = {c.fablab_id: c.reason for c in decision.candidates}
    assert reasons["tyfabbrest"] == reasons["lesfabriquesduponant"] == "excluded"


def test_offline_labs_are_skipped(french_labs):
    labs = [replace(x, online=x.id != "tyfabbrest") for x in french_labs]
    decision = decide(order(), labs, DISTANCE_ONLY)
    assert decision.winner.fablab_id != "tyfabbrest"
    assert {c.fablab_id: c.reason for c in decision.candidates}["tyfabbrest"] == "offline"


def test_an_order_nobody_can_make_lists_every_candidate_with_its_reason(indexed):
    decision = indexed(order(process="sls", material="pa12"))
    assert decision.winner is None and decision.km_avoided is None
    assert decision.exhausted and decision.radius_km == pytest.approx(geo.WHOLE_EARTH_KM)
    assert len(decision.candidates) == len({c.fablab_id for c in decision.candidates}) == 129
    assert all(not c.ok and c.reason == "process" and c.detail for c in decision.candidates)


def test_reasons_for_material_and_unknown_labs(indexed, french_labs):
    decision = indexed(order(material="carbon-fibre-nylon"))
    assert {c.reason for c in decision.candidates} == {"process", "material"}
    known = {x.id: x for x in french_labs if x.id != "tyfabbrest"}  # the index is behind
    decision = indexed(order(), load=lambda ids: {i: known[i] for i in ids if i in known})
    first = decision.candidates[0]
    assert (first.fablab_id, first.reason, first.ok) == ("tyfabbrest", "unknown", False)


def test_max_considered_truncates(indexed):
    decision = indexed(order(process="sls"), replace(Policy(), max_considered=10))
    assert decision.truncated and not decision.exhausted
    assert len(decision.candidates) == 10


# --- ranking ----------------------------------------------------------------------------------


def test_ties_are_broken_by_distance_then_id_whatever_the_input_order():
    # Two labs at the same place, and one as far on the other side: the same distance.
    east = lab("b-east", 48.0, 2.1, printer())
    same_place = lab("c-east-twin", 48.0, 2.1, printer())
    west = lab("a-west", 48.0, 1.9, printer())
    request = order(lat=48.0, lon=2.0)
    for labs in ([east, same_place, west], [west, same_place, east], [same_place, east, west]):
        decision = decide(request, labs)
        assert decision.winner.fablab_id == "a-west"
        ranked = [c.fablab_id for c in sorted(decision.candidates, key=lambda c: c.score)]
        assert sorted(ranked[:3]) == ranked[:3]
    # Equal scores (distance not weighed): the nearer wins, whatever the ids.
    wait_only = Policy(weights=Weights(distance_per_km=0.0, price_per_eur=0.0))
    near = lab("z-near", 48.0, 2.05, printer(queue=1))
    far = lab("a-far", 48.0, 2.5, printer(queue=1))
    assert decide(request, [far, near], wait_only).winner.fablab_id == "z-near"


def test_queue_and_price_weigh_against_distance():
    request = order(lat=48.0, lon=2.0, volume_cm3=10.0)
    near_busy = lab("near-busy", 48.0, 2.01, printer(queue=12))  # 12 jobs x 3 h ahead
    farther_idle = lab("farther-idle", 48.0, 2.2, printer())
    decision = decide(request, [near_busy, farther_idle])
    assert decision.winner.fablab_id == "farther-idle"
    candidate = {c.fablab_id: c for c in decision.candidates}["near-busy"]
    assert candidate.expected_wait_h == 36.0
    from router.records import PriceModel

    dear = replace(farther_idle, id="dear", price=PriceModel(per_job_eur=100.0))
    decision = decide(request, [dear, lab("cheap", 48.0, 2.25, printer())])
    assert decision.winner.fablab_id == "cheap"
    assert {c.fablab_id: c for c in decision.candidates}["dear"].price_eur == 100.0


def test_km_avoided_is_the_central_distance_minus_the_winners(indexed):
    decision = indexed(order(), DISTANCE_ONLY)
    central = geo.distance_km(*Policy().central, *decision.location)
    assert decision.km_avoided == pytest.approx(central - decision.winner.distance_km, abs=1e-3)
    assert decision.km_avoided > 490
    at_brest = indexed(order(), replace(DISTANCE_ONLY, central=BREST))
    assert at_brest.km_avoided < 0  # the central factory would have been nearer


# --- quantities ---------------------------------------------------------------------------------


def test_quantity_beyond_capacity_is_split_across_the_next_best_labs():
    labs = [
        lab("one", 48.0, 2.01, printer(count=2)),
        lab("two", 48.0, 2.05, printer(count=1)),
        lab("three", 48.0, 2.10, printer(count=3)),
    ]
    decision = decide(order(lat=48.0, lon=2.0, quantity=45), labs)
    assert [(x.fablab_id, x.quantity) for x in decision.lines] == [
        ("one", 20),
        ("two", 10),
        ("three", 15),
    ]
    assert decision.unassigned == 0
    short = decide(order(lat=48.0, lon=2.0, quantity=45), labs[:2])
    assert sum(x.quantity for x in short.lines) == 30 and short.unassigned == 15


def test_place_keeps_looking_until_there_is_room_for_the_quantity(indexed):
    decision = indexed(order(quantity=400))
    assert sum(x.quantity for x in decision.lines) == 400
    assert decision.unassigned == 0
    assert len(decision.lines) > 5


def test_split_quantity_alone():
    ranked = [
        Candidate(fablab_id="a", name="A", distance_km=1, ok=True, detail="", machines=1),
        Candidate(fablab_id="b", name="B", distance_km=2, ok=False, detail="", reason="offline"),
        Candidate(fablab_id="c", name="C", distance_km=3, ok=True, detail="", machines=2),
    ]
    split = split_quantity(7, ranked, per_machine_batch=3)
    assert [(x.fablab_id, x.quantity) for x in split.lines] == [("a", 3), ("c", 4)]
    assert split_quantity(2, ranked, per_machine_batch=3).lines[0].quantity == 2
    with pytest.raises(ValueError):
        split_quantity(0, ranked, per_machine_batch=3)


# --- inputs and outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [(math.nan, 2.0), (91.0, 2.0), (48.0, -181.0)])
def test_bad_order_coordinates_are_a_clear_error(lat, lon):
    with pytest.raises(InvalidCoordinates, match=r"outside|finite"):
        order(lat=lat, lon=lon)


@pytest.mark.parametrize(
    "changes",
    [
        {"quantity": 0},
        {"purpose": "resale"},
        {"extents_mm": (10.0, -1.0, 3.0)},
        {"extents_mm": None},
        {"hull_points": np.array([[0.0, 0.0, math.nan]])},
    ],
)
def test_bad_orders_are_refused(changes):
    with pytest.raises(Invalid):
        order(**changes)


def test_a_wiped_index_is_rebuilt_by_place(redis, geo_key, french_labs):
    records = fablabs_by_id(french_labs)
    decision = place(
        redis,
        order(),
        lambda ids: {i: records[i] for i in ids},
        DISTANCE_ONLY,
        key=geo_key,
        load_all_fablabs=lambda: french_labs,
    )
    assert decision.winner.fablab_id == "tyfabbrest"
    assert redis.zcard(geo_key) == 129


def test_records_may_be_given_as_plain_mappings(redis, geo_key):
    plain = {
        "id": "m1",
        "name": "Mapped",
        "location": {"lat": 48.39, "lon": -4.48},
        "legal_form": "cooperative",
        "machines": [
            {"process": "FDM", "materials": ["PLA"], "build_volume_mm": [200, 200, 200], "queue": 2}
        ],
        "price": {"per_job_eur": 5, "per_cm3_eur": 0.1},
    }
    geo.rebuild(redis, [Fablab.from_dict(plain)], key=geo_key)
    decision = place(redis, order(volume_cm3=10), lambda ids: {"m1": plain}, key=geo_key)
    assert decision.winner.fablab_id == "m1"
    assert decision.winner.price_eur == 6.0
    assert decision.winner.expected_wait_h == 6.0


def test_decision_round_trips_as_json(indexed):
    decision = indexed(order(quantity=3))
    text = decision.model_dump_json()
    again = Decision.model_validate_json(text)
    assert again.model_dump_json() == text
    assert again.winner.fablab_id == decision.winner.fablab_id
    # Distances are written to the metre.
    assert again.candidates[0].distance_km == round(decision.candidates[0].distance_km, 3)
    assert again.weights == {"distance_per_km": 1.0, "wait_per_hour": 2.0, "price_per_eur": 0.5}


def test_a_true_price_floor_changes_nothing_but_the_work(indexed, french_labs):
    from router.placement import price_floor

    floor = replace(Policy(), price_floor=price_floor(french_labs))
    assert floor.price_floor.per_job_eur == min(
        (x.price or Policy().assumed_price).per_job_eur for x in french_labs
    )
    rng = np.random.default_rng(5)
    for _ in range(20):
        request = order(
            quantity=int(rng.integers(1, 60)),
            lat=float(rng.uniform(43, 50)),
            lon=float(rng.uniform(-4, 7)),
            volume_cm3=float(rng.uniform(1, 300)),
        )
        with_floor, without = indexed(request, floor), indexed(request)
        assert with_floor.winner == without.winner == decide(request, french_labs).winner
        assert len(with_floor.candidates) <= len(without.candidates)


def test_a_lab_without_prices_is_scored_at_the_assumed_price():
    from router.records import PriceModel

    request = order(lat=48.0, lon=2.0, volume_cm3=10.0)
    unpriced = lab("unpriced", 48.0, 2.01, printer())
    # Cheaper than the assumed 5 EUR + 0.10 EUR/cm3, a little farther: it wins.
    cheap = lab("cheap", 48.0, 2.02, printer(), price=PriceModel(per_job_eur=1.0))
    decision = decide(request, [unpriced, cheap])
    assert decision.winner.fablab_id == "cheap"
    shown = {c.fablab_id: c for c in decision.candidates}
    assert shown["unpriced"].price_eur is None
    assert shown["unpriced"].score == pytest.approx(shown["unpriced"].distance_km + 0.5 * 6.0)


# --- how the work is done ---------------------------------------------------------------------


def test_radius_hints_remember_each_place_and_guess_from_the_cells_around():
    hints = RadiusHints(size=2)
    assert hints.start(*BREST, "fdm") is None
    hints.learn(*BREST, "fdm", 90.0, 12)
    assert hints.start(*BREST, "fdm") == (90.0, 12)
    # Another kind of order here, or any order a cell away, starts at half the shortest radius
    # a search of any kind needed around, asking for no particular number of labs.
    assert hints.start(*BREST, "laser") == (45.0, 0)
    assert hints.start(BREST[0] + 1, BREST[1] - 1, "fdm") == (45.0, 0)
    assert hints.start(BREST[0] + 2, BREST[1], "fdm") is None  # two cells away: no guess
    hints.learn(BREST[0] - 1, BREST[1], "cnc", 30.0, 4)
    assert hints.start(*BREST, "laser") == (15.0, 0)
    hints.learn(0, 0, "fdm", 1.0, 1)  # the oldest is forgotten, in both tables
    assert hints.start(*BREST, "fdm") == (15.0, 0)
    hints.learn(1, 1, "fdm", 1.0, 1)
    assert hints.start(*BREST, "fdm") is None


def test_every_candidate_is_at_the_scalar_great_circle_distance(french_labs):
    """The policy's loop computes geo.distance_km inline: to the last bit the same."""
    where = {lab.id: lab for lab in french_labs}
    rng = np.random.default_rng(11)
    for lat, lon in zip(rng.uniform(42, 51, 10), rng.uniform(-5, 8, 10), strict=True):
        decision = decide(order(lat=float(lat), lon=float(lon)), french_labs)
        for c in decision.candidates:
            lab = where[c.fablab_id]
            assert c.distance_km == geo.distance_km(*decision.location, lab.lat, lab.lon)


def test_candidates_made_without_init_equal_the_dataclass_s():
    fast = passing("a", "A", 1.5, 9.25, 2.0, None, 3)
    slow = Candidate(
        fablab_id="a", name="A", distance_km=1.5, ok=True, detail="can make it", score=9.25,
        expected_wait_h=2.0, price_eur=None, machines=3,
    )  # fmt: skip
    assert fast == slow and dataclasses.asdict(fast) == dataclasses.asdict(slow)
    fast = refused("b", None, 2.0, "offline", "offline: no agent connected")
    slow = Candidate(
        fablab_id="b", name=None, distance_km=2.0, ok=False, reason="offline",
        detail="offline: no agent connected",
    )  # fmt: skip
    assert fast == slow and dataclasses.asdict(fast) == dataclasses.asdict(slow)
    assert [f.name for f in dataclasses.fields(Candidate)] == list(dataclasses.asdict(fast))


def test_the_offers_table_holds_every_machine_and_shares_equal_volumes(french_labs):
    volumes = {}
    for lab in french_labs:
        expected = {}
        for m in lab.machines:
            for material in m.materials:
                entry = (m.build_volume_mm, m.count, m.queue, m.job_hours * m.count)
                expected.setdefault(offer_key(m.process, material), []).append(entry)
            # Machines of the same size share one volume tuple.
            assert volumes.setdefault(m.build_volume_mm, m.build_volume_mm) is m.build_volume_mm
        assert lab.able == {k: tuple(v) for k, v in expected.items()}
    assert len(volumes) < sum(len(lab.machines) for lab in french_labs)


def test_a_lab_missing_from_the_directory_is_reported_at_its_index_distance(redis, geo_key):
    labs = [lab("near", 48.40, -4.48, printer()), lab("far", 48.45, -4.30, printer())]
    geo.rebuild(redis, labs, key=geo_key)
    geo.add(redis, "ghost", 48.392, -4.487, key=geo_key)  # indexed, not in the directory
    records = fablabs_by_id(labs)
    decision = place(redis, order(), lambda ids: {i: records[i] for i in ids if i in records},
                     key=geo_key)  # fmt: skip
    ghost = decision.candidates[0]
    assert (ghost.fablab_id, ghost.reason, ghost.name) == ("ghost", "unknown", None)
    assert ghost.distance_km == pytest.approx(
        geo.distance_km(*decision.location, 48.392, -4.487), abs=1e-3
    )


def test_records_are_loaded_for_the_first_candidates_and_the_rest_only_if_needed(redis, geo_key):
    """A batch of 40 labs in a town: the 5 nearest settle the order, so only the first 32
    records are loaded; an order only the farthest can make loads the rest too."""
    town = [lab(f"t{i:02d}", 48.0 + 0.001 * i, 2.0, printer()) for i in range(39)]
    town.append(lab("t39-big", 48.039, 2.0, printer((500, 500, 500))))
    geo.rebuild(redis, town, key=geo_key)
    records = fablabs_by_id(town)
    asked: list[list[str]] = []

    def load(ids):
        asked.append(list(ids))
        return {i: records[i] for i in ids}

    start = (10.0, 40)  # a search here considered 40 labs within 10 km before
    place(redis, order(lat=48.0, lon=2.0), load, DISTANCE_ONLY, key=geo_key, hints=_hinted(start))
    assert [len(ids) for ids in asked] == [32]
    asked.clear()
    big = order(lat=48.0, lon=2.0, extents_mm=(400.0, 400.0, 400.0))
    decision = place(redis, big, load, DISTANCE_ONLY, key=geo_key, hints=_hinted(start))
    assert [len(ids) for ids in asked] == [32, 8]
    assert decision.winner.fablab_id == "t39-big"


def _hinted(start: tuple[float, int]) -> RadiusHints:
    hints = RadiusHints()
    hints.learn(48.0, 2.0, "fdm", *start)
    return hints


def test_a_lab_moved_since_it_was_indexed_does_not_end_the_search_early(redis, geo_key):
    """The index is behind: it still has "moved" 2 km away, its record says 300 km. How far the
    search has looked never goes past what the batch covered, so the idle lab just beyond is
    still considered, and wins as an exhaustive look at the records says."""
    busy = [lab(f"busy{i}", 48.0 + 0.002 * i, 2.0137, printer(queue=8)) for i in range(5)]
    moved = lab("moved", 48.0, 6.0, printer())  # about 300 km east of the order
    idle = lab("idle", 48.0, 2.04, printer())
    geo.rebuild(redis, [*busy, idle], key=geo_key)
    geo.add(redis, "moved", 48.0, 2.027, key=geo_key)
    records = fablabs_by_id([*busy, moved, idle])
    request = order(lat=48.0, lon=2.0)
    decision = place(
        redis, request, lambda ids: {i: records[i] for i in ids}, key=geo_key, hints=None
    )
    assert [c.fablab_id for c in decision.candidates][-2:] == ["moved", "idle"]
    assert decision.winner.fablab_id == "idle" == decide(request, records.values()).winner.fablab_id
