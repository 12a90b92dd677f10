"""3-axis CNC: undercuts seen from the tool axis and sharp internal vertical corners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from registry.geometry import dfm_cnc
from registry.geometry.checks import check_mesh
from registry.geometry.dfm import check_process
from registry.geometry.dfm_cnc import sharp_internal_corners, undercuts
from registry.geometry.dfm_mesh import Solid
from registry.geometry.mesh import MeshData
from registry.geometry.readers import read_model

DATA = Path(__file__).resolve().parents[1] / "data"


def as_mesh(solid: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(solid.vertices, float), np.asarray(solid.faces), "stl-binary")


def cnc_report(mesh: MeshData):
    report = check_mesh(mesh)
    check_process(mesh, report, "cnc")
    return report.decide()


def issue(report, code: str):
    found = [i for i in report.issues if i.code.value == code]
    return found[0] if found else None


def box(size, centre=(0, 0, 0)) -> trimesh.Trimesh:
    shape = trimesh.creation.box(size)
    shape.apply_translation(centre)
    return shape


def real_file(name: str, factor: float = 1.0) -> MeshData:
    mesh = read_model(DATA / name, name)
    return MeshData(mesh.vertices * factor, mesh.faces, mesh.source_format)


def tee() -> trimesh.Trimesh:
    return trimesh.boolean.union(
        [box((10, 10, 20), (0, 0, 10)), box((60, 10, 5), (0, 0, 22.5))], engine="manifold"
    )


BLOCK = box((60, 40, 20), (0, 0, 10))


def square_pocket() -> trimesh.Trimesh:
    # 30 x 20 mm, 5 mm deep, from the top face
    return trimesh.boolean.difference([BLOCK, box((30, 20, 10), (0, 0, 20))], engine="manifold")


def round_pocket(radius: float) -> trimesh.Trimesh:
    """The same 30 x 20 x 5 mm pocket with its vertical corners rounded to ``radius``."""
    pieces = [
        box((30, 20 - 2 * radius, 10), (0, 0, 20)),
        box((30 - 2 * radius, 20, 10), (0, 0, 20)),
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            corner = trimesh.creation.cylinder(radius=radius, height=10, sections=64)
            corner.apply_translation((sx * (15 - radius), sy * (10 - radius), 20))
            pieces.append(corner)
    pocket = trimesh.boolean.union(pieces, engine="manifold")
    return trimesh.boolean.difference([BLOCK, pocket], engine="manifold")


def test_plain_box_is_reachable_and_has_no_inner_corners():
    report = cnc_report(as_mesh(box((30, 20, 10))))
    assert report.verdict.value == "pass"
    assert report.metrics.undercut_area_mm2 == 0
    assert report.metrics.sharp_internal_corners == 0


def test_tee_bar_undersides_and_the_stem_below_them_are_undercuts():
    report = cnc_report(as_mesh(tee()))
    found = issue(report, "UNDERCUTS")
    assert found is not None and found.severity.value == "warn"
    # the bar's two undersides (25 x 10 each) face down; the stem's two sides under them
    # (10 x 20 each) are reachable only from the side
    assert found.down_area_mm2 == pytest.approx(500)
    assert found.shadowed_area_mm2 == pytest.approx(400)
    assert found.area_mm2 == pytest.approx(900)
    total = report.metrics.area_mm2
    assert found.area_share == pytest.approx(900 / total, abs=1e-4)
    assert "another setup" in found.message


def test_a_step_cut_into_the_underside_is_an_undercut():
    # the right half of a block is hollowed from below, 10 mm up
    stepped = trimesh.boolean.difference(
        [box((40, 20, 20), (0, 0, 10)), box((20, 30, 10), (10, 0, 5))], engine="manifold"
    )
    cut = undercuts(Solid.from_mesh(as_mesh(stepped)))
    assert cut.down_mm2 == pytest.approx(20 * 20)  # the step's ceiling
    assert cut.shadowed_mm2 == pytest.approx(10 * 20)  # the wall under it
    # the same block standing on its full face has none
    assert undercuts(Solid.from_mesh(as_mesh(box((40, 20, 20))))).area_mm2 == 0


def test_sampled_rays_estimate_the_shadowed_area(monkeypatch):
    monkeypatch.setattr(dfm_cnc, "MAX_RAY_SAMPLES", 2000)
    fine = tee().subdivide().subdivide().subdivide().subdivide()
    assert len(fine.faces) > 2000
    cut = undercuts(Solid.from_mesh(as_mesh(fine)))
    assert cut.down_mm2 == pytest.approx(500)
    assert cut.shadowed_mm2 == pytest.approx(400, rel=0.15)


def test_square_pocket_has_four_sharp_corners():
    report = cnc_report(as_mesh(square_pocket()))
    found = issue(report, "SMALL_INTERNAL_RADII")
    assert found is not None and found.severity.value == "warn"
    assert found.corners == 4
    assert found.length_mm == pytest.approx(4 * 5)
    assert found.min_radius_mm == 1.0
    assert issue(report, "UNDERCUTS") is None


def test_a_corner_split_along_its_height_is_still_one_corner():
    corners = sharp_internal_corners(Solid.from_mesh(as_mesh(square_pocket().subdivide())))
    assert corners.count == 4
    assert corners.length_mm == pytest.approx(20)
    assert len(corners.edges) > 4


def test_pocket_with_rounded_corners_is_fine():
    report = cnc_report(as_mesh(round_pocket(3.0)))
    assert issue(report, "SMALL_INTERNAL_RADII") is None
    assert report.metrics.sharp_internal_corners == 0
    assert issue(report, "UNDERCUTS") is None


def test_convex_vertical_edges_are_not_internal_corners():
    boss = trimesh.boolean.union(
        [box((60, 40, 10), (0, 0, 5)), box((10, 10, 10), (0, 0, 15))], engine="manifold"
    )
    corners = sharp_internal_corners(Solid.from_mesh(as_mesh(boss)))
    assert corners.count == 0  # the boss's edges bulge outward; its foot is horizontal


def test_octagonal_pocket_file_has_rounded_corners_and_a_dovetail():
    mesh = read_model(DATA / "octagonal_pocket.stl", "octagonal_pocket.stl")
    units = issue(check_mesh(mesh), "UNITS_SUSPECT")
    assert units.likely_unit == "m"  # drawn in metres
    report = cnc_report(MeshData(mesh.vertices * units.factor, mesh.faces, "stl-binary"))
    # the pockets' corners are filleted: no single edge turns sharply
    assert issue(report, "SMALL_INTERNAL_RADII") is None
    # a 45 degree chamfer faces down along one edge, over a wall it hides
    found = issue(report, "UNDERCUTS")
    assert found.down_area_mm2 == pytest.approx(1109.4, abs=0.5)
    assert found.shadowed_area_mm2 == pytest.approx(784.5, abs=0.5)


def test_plate_holes_file_has_round_holes_and_a_sloped_underside():
    report = cnc_report(real_file("plate_holes.STL"))
    assert issue(report, "SMALL_INTERNAL_RADII") is None
    found = issue(report, "UNDERCUTS")
    # the underside's rim slopes up, facing down: reachable only once the plate is turned over
    assert found.down_area_mm2 == pytest.approx(9516.0, abs=1)
    assert found.shadowed_area_mm2 == 0


def test_featuretype_file_square_pocket_has_sharp_corners():
    report = cnc_report(real_file("featuretype.STL", 25.4))  # drawn in inches
    found = issue(report, "SMALL_INTERNAL_RADII")
    # the 1/2 inch square pocket, 1/8 inch deep, on the raised block
    assert found.corners == 4
    assert found.length_mm == pytest.approx(4 * 3.175, abs=0.01)
    assert issue(report, "UNDERCUTS") is not None  # a chamfer faces down


def test_calibration_cube_letters_on_its_sides_are_undercuts():
    report = cnc_report(real_file("20mm-xyz-cube.stl"))
    found = issue(report, "UNDERCUTS")
    # the X and Y engraved in the side faces have ceilings and floors hidden from above
    assert found.down_area_mm2 > 0 and found.shadowed_area_mm2 > 0
    assert found.area_share < 0.1
    # the engraved letters' vertical corners are sharp
    assert report.metrics.sharp_internal_corners == 20
