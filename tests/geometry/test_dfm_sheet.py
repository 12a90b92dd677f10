"""Laser cutting: flatness, sheet thickness, the outline, and its DXF."""

from __future__ import annotations

import io
from pathlib import Path

import ezdxf
import numpy as np
import pytest
import trimesh

from registry.geometry.checks import check_mesh
from registry.geometry.dfm import check_process
from registry.geometry.dfm_mesh import Solid
from registry.geometry.dfm_sheet import (
    NotFlat,
    Profile,
    candidate_normals,
    laser_profile,
    signed_area,
)
from registry.geometry.dxf import NotFlatError, dxf_for, profile_to_dxf
from registry.geometry.mesh import MeshData
from registry.geometry.readers import read_model

DATA = Path(__file__).resolve().parents[1] / "data"


def as_mesh(solid: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(solid.vertices, float), np.asarray(solid.faces), "stl-binary")


def laser_report(mesh: MeshData):
    report = check_mesh(mesh)
    check_process(mesh, report, "laser")
    return report.decide()


def issue(report, code: str):
    found = [i for i in report.issues if i.code.value == code]
    return found[0] if found else None


def box(size, centre=(0, 0, 0)) -> trimesh.Trimesh:
    shape = trimesh.creation.box(size)
    shape.apply_translation(centre)
    return shape


def hole(radius: float, x: float, y: float) -> trimesh.Trimesh:
    cutter = trimesh.creation.cylinder(radius=radius, height=100, sections=64)
    cutter.apply_translation((x, y, 0))
    return cutter


def plate_with_holes(thickness: float = 3.0) -> trimesh.Trimesh:
    """An 80 x 50 mm plate, lower side on z = 0, with two 10 mm holes."""
    plate = box((80, 50, thickness), (0, 0, thickness / 2))
    return trimesh.boolean.difference([plate, hole(5, -20, 0), hole(5, 20, 0)], engine="manifold")


HOLE_AREA = 64 / 2 * 25 * np.sin(2 * np.pi / 64)  # a 64-sided polygon in a 5 mm circle


def test_plate_with_two_holes_is_a_3_mm_sheet_with_three_loops():
    report = laser_report(as_mesh(plate_with_holes()))
    assert report.verdict.value == "pass"
    assert report.metrics.sheet_thickness_mm == pytest.approx(3)
    assert report.metrics.profile_loops == 3
    assert report.metrics.sheet_size_mm == pytest.approx([80, 50])
    assert report.metrics.cut_length_mm == pytest.approx(
        2 * (80 + 50) + 2 * 64 * 2 * 5 * np.sin(np.pi / 64), abs=1e-3
    )


def test_profile_loops_run_outer_counter_clockwise_and_holes_clockwise():
    profile = laser_profile(as_mesh(plate_with_holes()))
    assert isinstance(profile, Profile)
    areas = sorted(profile.areas_mm2)
    assert areas == pytest.approx([-HOLE_AREA, -HOLE_AREA, 80 * 50])
    assert profile.thickness_mm == pytest.approx(3)
    assert profile.normal == pytest.approx([0, 0, 1])
    # the outer contour's box starts at (0, 0): its corner is the plate's corner, lower side
    outer = next(loop for loop in profile.loops if signed_area(loop) > 0)
    assert len(outer) == 4  # points along straight edges are dropped
    assert outer.min(axis=0) == pytest.approx([0, 0])
    corner = profile.origin + outer.min(axis=0) @ profile.axes
    assert corner == pytest.approx([-40, -25, 0])
    # the holes' centres map back to where they were cut
    centres = sorted(
        float((profile.origin + loop.mean(axis=0) @ profile.axes)[0])
        for loop in profile.loops
        if signed_area(loop) < 0
    )
    assert centres == pytest.approx([-20, 20], abs=1e-6)


def test_a_tilted_plate_is_found_along_its_own_normal():
    plate = plate_with_holes()
    turn = trimesh.transformations.rotation_matrix(0.7, [1, 2, 0.5])
    plate.apply_transform(turn)
    profile = laser_profile(as_mesh(plate))
    assert isinstance(profile, Profile)
    assert profile.thickness_mm == pytest.approx(3)
    assert abs(profile.normal @ turn[:3, 2]) == pytest.approx(1)
    assert sorted(profile.areas_mm2) == pytest.approx([-HOLE_AREA, -HOLE_AREA, 4000])


def test_dxf_reads_back_with_the_same_loops():
    profile = laser_profile(as_mesh(plate_with_holes()))
    data = profile_to_dxf(profile.loops)
    doc = ezdxf.read(io.StringIO(data.decode("ascii")))
    assert doc.header["$INSUNITS"] == 4
    assert doc.dxfversion == "AC1015"  # R2000
    lines = list(doc.modelspace().query("LWPOLYLINE"))
    assert len(lines) == 3
    assert all(line.closed for line in lines)
    areas = sorted(signed_area(np.array(line.get_points("xy"))) for line in lines)
    assert areas == pytest.approx(sorted(profile.areas_mm2))
    layers = sorted(line.dxf.layer for line in lines)
    assert layers == ["INNER", "INNER", "OUTER"]
    again = ezdxf.read(io.StringIO(dxf_for(as_mesh(plate_with_holes())).decode("ascii")))
    assert sorted(
        signed_area(np.array(line.get_points("xy")))
        for line in again.modelspace().query("LWPOLYLINE")
    ) == pytest.approx(areas)


def test_dxf_of_hand_made_loops():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    triangle = np.array([[2, 2], [4, 6], [6, 2]], float)  # clockwise: a hole
    doc = ezdxf.read(io.StringIO(profile_to_dxf([square, triangle]).decode("ascii")))
    lines = list(doc.modelspace().query("LWPOLYLINE"))
    assert [line.dxf.layer for line in lines] == ["OUTER", "INNER"]
    assert np.array(lines[1].get_points("xy")) == pytest.approx(triangle)
    assert doc.header["$EXTMIN"][:2] == pytest.approx((0, 0))
    assert doc.header["$EXTMAX"][:2] == pytest.approx((10, 10))
    with pytest.raises(ValueError):
        profile_to_dxf([square[:2]])


def test_sphere_is_not_flat():
    report = laser_report(as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=15)))
    found = issue(report, "NOT_FLAT")
    assert found is not None and found.severity.value == "fail"
    assert "neither parallel nor perpendicular" in found.reason
    assert report.verdict.value == "fail"
    assert "sheet_thickness_mm" not in report.metrics.model_dump()
    with pytest.raises(NotFlatError):
        dxf_for(as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=15)))


def test_blind_pocket_and_boss_are_steps():
    plate = box((60, 40, 6), (0, 0, 3))
    pocket = trimesh.boolean.difference([plate, box((20, 10, 4), (0, 0, 6))], engine="manifold")
    boss = trimesh.boolean.union([plate, box((10, 10, 4), (0, 0, 7))], engine="manifold")
    for part, level in ((pocket, "4"), (boss, "6")):
        result = laser_profile(as_mesh(part))
        assert isinstance(result, NotFlat)
        assert "between its two sides" in result.reason
        assert f"({level} mm above" in result.reason


def test_an_extruded_l_is_a_sheet_along_its_thinnest_direction():
    # an L in the XZ plane, 8 mm deep along Y: the three axes give 40, 8 and 20 mm
    ell = trimesh.boolean.union(
        [box((40, 8, 10), (0, 0, 5)), box((10, 8, 20), (15, 0, 10))], engine="manifold"
    )
    profile = laser_profile(as_mesh(ell))
    assert isinstance(profile, Profile)
    assert profile.thickness_mm == pytest.approx(8)
    assert abs(profile.normal[1]) == pytest.approx(1)
    assert profile.areas_mm2 == pytest.approx([40 * 10 + 10 * 10])


def test_thick_sheet_warns():
    report = laser_report(as_mesh(plate_with_holes(thickness=12)))
    found = issue(report, "SHEET_TOO_THICK")
    assert found is not None and found.severity.value == "warn"
    assert found.thickness_mm == pytest.approx(12)
    assert found.max_mm == 10
    assert report.metrics.sheet_thickness_mm == pytest.approx(12)


def test_open_mesh_has_no_profile():
    teapot = read_model(DATA / "teapot.stl", "teapot.stl")
    result = laser_profile(teapot)
    assert isinstance(result, NotFlat) and "not closed" in result.reason
    report = laser_report(teapot)
    assert issue(report, "NOT_FLAT") is None  # the mesh checks already fail it


def test_unit_cube_file_is_a_1_mm_sheet():
    profile = laser_profile(read_model(DATA / "unit_cube.STL", "unit_cube.STL"))
    assert isinstance(profile, Profile)
    assert profile.thickness_mm == pytest.approx(1)
    assert profile.areas_mm2 == pytest.approx([1])


@pytest.mark.parametrize(
    ("name", "factor", "why"),
    [
        # letters engraved in every face
        ("20mm-xyz-cube.stl", 1.0, "neither parallel nor perpendicular"),
        # the underside's rim slopes up to the edges
        ("plate_holes.STL", 1.0, "neither parallel nor perpendicular"),
        # chamfers, pockets and bosses at several heights
        ("featuretype.STL", 25.4, "neither parallel nor perpendicular"),
    ],
)
def test_real_parts_that_are_not_sheets(name, factor, why):
    mesh = read_model(DATA / name, name)
    mesh = MeshData(mesh.vertices * factor, mesh.faces, mesh.source_format)
    report = laser_report(mesh)
    found = issue(report, "NOT_FLAT")
    assert found is not None and why in found.reason


def test_sheet_normal_is_found_when_its_sides_are_cut_into_many_small_faces():
    # 400 small faces on the (tilted) sides, 40 large ones on the walls: the 32 largest faces
    # are all walls, yet the sides hold most of the area
    turn = trimesh.transformations.rotation_matrix(0.5, [1, 0.3, 0])[:3, :3]
    sides = np.repeat([[0, 0, 1.0], [0, 0, -1.0]], 200, axis=0)
    walls = np.repeat([[1.0, 0, 0], [0, 1.0, 0]], 20, axis=0)
    normals = np.concatenate([sides, walls]) @ turn.T
    areas = np.concatenate([np.full(400, 5.0), np.full(40, 20.0)])
    faces = np.zeros((440, 3), np.int64)
    found = candidate_normals(Solid(np.zeros((1, 3)), faces, normals, areas))
    assert abs(found[0] @ turn[:, 2]) == pytest.approx(1)
