"""Every real mesh in the shared test data gets a verdict consistent with its known traits
(shared/testdata/SOURCES.md), through the same validate_model the registry's jobs run."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.geometry.validate import validate_model

SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "meshes"

# file: (verdict, codes). Why, where it is not obvious:
# - 3DBenchy: 8 collapsed facets (the "6 non-manifold edges" others count) and folds 2 um deep.
# - box_sides.STEP, counter.unitsmm.STL: solids that pass through one another (an assembly).
# - busted.STL: an odd header and every stored normal zero; the triangles are a sound solid
#   (admesh and trimesh agree), and no check relies on stored normals.
# - self_intersectA/B: cross themselves by under 0.008 mm: a warning, not a failure.
# - teapot: 64 open edges; soup: a triangle soup; shared: an edge of 4 faces; multibody: bodies
#   with inconsistent winding; octagonal_pocket: drawn in metres.
EXPECTED = {
    "1002_tray_bottom.STL": ("pass", set()),
    "20mm-xyz-cube.stl": ("pass", set()),
    "3DBenchy.3mf": ("warn", {"DEGENERATE_FACES", "SELF_INTERSECTIONS"}),
    "base_interface_AP214.STEP": ("pass", set()),
    "box.3mf": ("pass", set()),
    "box_sides.STEP": ("warn", {"MULTIPLE_BODIES", "OVERLAPPING_BODIES"}),
    "busted.STL": ("pass", set()),
    "counter.unitsmm.STL": ("warn", {"MULTIPLE_BODIES", "OVERLAPPING_BODIES"}),
    "cube_gears.3mf": ("warn", {"DEGENERATE_FACES", "MULTIPLE_BODIES", "SELF_INTERSECTIONS"}),
    "empty.stl": ("unreadable", {"UNREADABLE"}),
    "featuretype.3MF": ("fail", {"OPEN_EDGES"}),
    "featuretype.STEP": ("pass", set()),
    "featuretype.STL": ("pass", set()),
    "heartgears.3mf": ("warn", {"DEGENERATE_FACES"}),
    "idler_riser.STL": ("pass", set()),
    "multibody.stl": ("fail", {"INCONSISTENT_WINDING", "MULTIPLE_BODIES"}),
    "octagonal_pocket.stl": ("warn", {"DEGENERATE_FACES", "UNITS_SUSPECT"}),
    "plate_holes.STL": ("pass", set()),
    "pyramids.3mf": ("warn", {"MULTIPLE_BODIES"}),
    "round.stl": ("pass", set()),
    "self_intersectA.obj": ("warn", {"SELF_INTERSECTIONS"}),
    "self_intersectB.obj": ("warn", {"SELF_INTERSECTIONS"}),
    "shared.STL": ("fail", {"NON_MANIFOLD_EDGES"}),
    "soup.stl": ("fail", {"MULTIPLE_BODIES", "OPEN_EDGES", "OVERLAPPING_BODIES"}),
    "teapot.stl": (
        "fail",
        {"MULTIPLE_BODIES", "OPEN_EDGES", "OVERLAPPING_BODIES", "SELF_INTERSECTIONS"},
    ),
    "torus.3mf": ("pass", set()),
    "torus.STL": ("pass", set()),
    "tube.obj": ("pass", set()),
    "two_objects.obj": ("fail", {"NON_MANIFOLD_EDGES"}),
    "unit_cube.STL": ("pass", set()),
    "wallhole.obj": ("fail", {"DEGENERATE_FACES", "DUPLICATE_FACES", "NON_MANIFOLD_EDGES"}),
}

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/testdata is not beside")


def test_every_shared_mesh_is_in_the_table():
    assert {p.name for p in SHARED.iterdir()} == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict_matches_the_known_traits(name):
    verdict, codes = EXPECTED[name]
    report = validate_model(SHARED / name, name)
    assert report.verdict.value == verdict
    assert {issue.code.value for issue in report.issues} == codes
