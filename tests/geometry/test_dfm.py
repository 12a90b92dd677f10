"""Design-for-manufacturing checks per process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from registry.geometry.checks import check_mesh
from registry.geometry.dfm import PROCESS_RULES, check_process
from registry.geometry.mesh import MeshData
from registry.geometry.readers import read_model

DATA = Path(__file__).resolve().parents[1] / "data"


def report_for(solid: trimesh.Trimesh, process: str = "fdm"):
    mesh = MeshData(np.asarray(solid.vertices, float), np.asarray(solid.faces), "stl-binary")
    report = check_mesh(mesh)
    check_process(mesh, report, process)
    return report.decide()


def codes(report) -> set[str]:
    return {issue.code.value for issue in report.issues}


def test_every_process_has_rules():
    assert set(PROCESS_RULES) == {"fdm", "sla", "sls", "cnc", "laser"}


def test_each_process_runs_its_own_checks():
    rules = PROCESS_RULES
    assert rules["sla"].escape_hole_mm == 3.5 and rules["sls"].escape_hole_mm == 5.0
    assert "resin" in rules["sla"].trapped and "powder" in rules["sls"].trapped
    assert rules["cnc"].three_axis and rules["cnc"].min_internal_radius_mm == 1.0
    assert rules["laser"].max_sheet_mm == 10.0 and rules["laser"].min_wall_mm is None
    assert not any(rules[p].three_axis or rules[p].escape_hole_mm for p in ("fdm", "laser"))
    block = trimesh.creation.box((30, 20, 10))
    added = {
        process: set(report_for(block, process).metrics.model_dump())
        - set(check_mesh(MeshData(block.vertices, block.faces, "stl-binary")).metrics.model_dump())
        for process in rules
    }
    assert added["fdm"] == {"overhang_area_mm2", "bed_contact_area_mm2", "min_wall_mm"}
    assert added["sla"] == added["sls"] == {"min_wall_mm", "trapped_volume_mm3", "trapped_voids"}
    assert added["cnc"] == {
        "min_wall_mm",
        "undercut_area_mm2",
        "sharp_internal_corners",
        "sharp_corner_length_mm",
    }
    assert added["laser"] == {
        "sheet_thickness_mm",
        "sheet_size_mm",
        "profile_loops",
        "cut_length_mm",
    }
    # a plain block is fine for every process (a 10 mm sheet is within the laser's reach)
    assert {report_for(block, process).verdict.value for process in rules} == {"pass"}


def test_solid_block_has_nothing_to_say():
    report = report_for(trimesh.creation.box((30, 20, 10)))
    assert report.verdict.value == "pass"
    assert report.metrics.min_wall_mm == pytest.approx(10, abs=0.01)
    assert report.metrics.overhang_area_mm2 == 0
    assert report.metrics.bed_contact_area_mm2 == pytest.approx(600)
    assert report.process == "fdm"


def test_thin_plate_has_thin_walls_for_fdm_but_not_for_sla():
    plate = trimesh.creation.box((40, 40, 0.5))
    fdm = report_for(plate, "fdm")
    assert "THIN_WALLS" in codes(fdm)
    issue = next(i for i in fdm.issues if i.code.value == "THIN_WALLS")
    assert issue.min_wall_mm == pytest.approx(0.5, abs=0.01)
    assert issue.required_mm == 0.8
    assert "THIN_WALLS" not in codes(report_for(plate, "sla"))


def test_t_shape_overhangs_need_supports():
    stem = trimesh.creation.box((10, 10, 20))
    stem.apply_translation((0, 0, 10))
    bar = trimesh.creation.box((60, 10, 5))
    bar.apply_translation((0, 0, 22.5))
    tee = trimesh.boolean.union([stem, bar], engine="manifold")
    report = report_for(tee)
    assert "OVERHANGS" in codes(report)
    # The two undersides of the bar, 25 x 10 mm each; the stem's foot stands on the bed.
    assert report.metrics.overhang_area_mm2 == pytest.approx(500, rel=0.01)
    assert report.metrics.bed_contact_area_mm2 == pytest.approx(100, rel=0.01)


def test_sphere_touches_the_bed_at_a_point():
    report = report_for(trimesh.creation.icosphere(subdivisions=3, radius=15))
    assert "SMALL_BED_CONTACT" in codes(report)


def test_open_mesh_gets_no_process_checks():
    tube = read_model(DATA / "teapot.stl", "teapot.stl")
    report = check_mesh(tube)
    check_process(tube, report, "fdm")
    assert not codes(report) & {"THIN_WALLS", "OVERHANGS", "SMALL_BED_CONTACT"}


def test_real_cube_walls_are_thick_enough():
    mesh = read_model(DATA / "20mm-xyz-cube.stl", "cube.stl")
    report = check_mesh(mesh)
    check_process(mesh, report, "fdm")
    assert "THIN_WALLS" not in codes(report)
    assert report.metrics.min_wall_mm > 0.8


@pytest.mark.slow
def test_every_process_is_bounded_on_a_million_triangles():

    outer = trimesh.creation.icosphere(subdivisions=8, radius=40)
    void = trimesh.creation.icosphere(subdivisions=5, radius=20)
    void.invert()
    both = trimesh.util.concatenate([outer, void])
    corners = both.triangles.reshape(-1, 3)
    mesh = MeshData(corners, np.arange(len(corners)).reshape(-1, 3), "stl-binary")
    assert mesh.triangle_count > 1_300_000
    base = check_mesh(mesh)
    for process in PROCESS_RULES:
        report = base.model_copy(deep=True)
        check_process(mesh, report, process)
        if process in ("sla", "sls"):
            assert report.metrics.trapped_voids == 1
        if process == "laser":
            assert "NOT_FLAT" in codes(report)
