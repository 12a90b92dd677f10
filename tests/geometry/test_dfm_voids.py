"""Trapped volumes for SLA and SLS: closed voids inside a part."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from registry.geometry import dfm_voids
from registry.geometry.checks import check_mesh
from registry.geometry.dfm import check_process
from registry.geometry.dfm_mesh import Solid
from registry.geometry.dfm_voids import find_voids
from registry.geometry.mesh import MeshData


def as_mesh(solid: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(solid.vertices, float), np.asarray(solid.faces), "stl-binary")


def report_for(solid: trimesh.Trimesh, process: str):
    mesh = as_mesh(solid)
    report = check_mesh(mesh)
    check_process(mesh, report, process)
    return report.decide()


def issue(report, code: str):
    found = [i for i in report.issues if i.code.value == code]
    return found[0] if found else None


def box(size, centre=(0, 0, 0), inward=False) -> trimesh.Trimesh:
    shape = trimesh.creation.box(size)
    shape.apply_translation(centre)
    if inward:
        shape.invert()
    return shape


def voids_of(solid: trimesh.Trimesh):
    return find_voids(*_welded(solid))


def _welded(solid: trimesh.Trimesh):
    welded = Solid.from_mesh(as_mesh(solid))
    return welded.vertices, welded.faces


HOLLOW_CUBE = trimesh.util.concatenate([box((30, 30, 30)), box((10, 10, 10), inward=True)])


@pytest.mark.parametrize(
    ("process", "hole", "trapped"), [("sla", 3.5, "resin"), ("sls", 5.0, "powder")]
)
def test_hollow_cube_traps_its_void(process, hole, trapped):
    report = report_for(HOLLOW_CUBE, process)
    found = issue(report, "TRAPPED_VOLUME")
    assert found is not None and found.severity.value == "warn"
    assert found.voids == 1
    assert found.volume_mm3 == pytest.approx(1000)
    assert found.escape_hole_mm == hole
    assert trapped in found.message and f"{hole:g} mm" in found.message
    assert report.metrics.trapped_volume_mm3 == pytest.approx(1000)
    assert report.metrics.trapped_voids == 1
    # the wall between the void and the outside is 10 mm
    assert report.metrics.min_wall_mm == pytest.approx(10, abs=0.01)


def test_solid_cube_traps_nothing():
    report = report_for(box((30, 30, 30)), "sla")
    assert issue(report, "TRAPPED_VOLUME") is None
    assert report.metrics.trapped_volume_mm3 == 0
    assert report.verdict.value == "pass"


def test_processes_without_a_powder_or_a_vat_do_not_look_for_voids():
    for process in ("fdm", "cnc", "laser"):
        report = report_for(HOLLOW_CUBE, process)
        assert issue(report, "TRAPPED_VOLUME") is None
        assert "trapped_volume_mm3" not in report.metrics.model_dump()


def test_two_voids_cut_by_a_boolean_are_counted_and_measured():
    block = box((60, 30, 30))
    cavities = [box((6, 6, 6), (-15, 0, 0)), box((4, 4, 4), (15, 0, 0))]
    part = trimesh.boolean.difference([block, *cavities], engine="manifold")
    voids = voids_of(part)
    assert voids.count == 2
    assert voids.volumes_mm3 == pytest.approx([216, 64])
    assert voids.total_mm3 == pytest.approx(280)


def test_a_drain_hole_opens_the_void():
    shell = trimesh.boolean.difference([box((30, 30, 30)), box((20, 20, 20))], engine="manifold")
    drain = trimesh.creation.cylinder(radius=2.5, height=20)
    drain.apply_translation((0, 0, 12))
    opened = trimesh.boolean.difference([shell, drain], engine="manifold")
    assert voids_of(shell).count == 1
    assert voids_of(opened).count == 0
    assert issue(report_for(opened, "sls"), "TRAPPED_VOLUME") is None


def test_an_inside_out_body_in_the_open_is_not_a_void():
    apart = trimesh.util.concatenate([box((30, 30, 30)), box((5, 5, 5), (40, 0, 0), inward=True)])
    assert voids_of(apart).count == 0


def test_a_loose_ball_inside_a_void_is_a_body_not_a_second_void():
    ball = trimesh.creation.icosphere(subdivisions=2, radius=3)
    rattle = trimesh.util.concatenate([box((30, 30, 30)), box((12, 12, 12), inward=True), ball])
    voids = voids_of(rattle)
    assert voids.count == 1
    assert voids.volumes_mm3 == pytest.approx([12**3])


def test_voids_past_the_tested_ones_count_by_their_boxes(monkeypatch):
    monkeypatch.setattr(dfm_voids, "MAX_TESTED_VOIDS", 4)
    cells = [box((1 + 0.1 * i, 1, 1), (4 * i - 18, 0, 0), inward=True) for i in range(10)]
    foam = trimesh.util.concatenate([box((50, 10, 10)), *cells])
    voids = voids_of(foam)
    assert voids.count == 10
    assert voids.total_mm3 == pytest.approx(sum(1 + 0.1 * i for i in range(10)))
    assert voids.volumes_mm3[0] == pytest.approx(1.9)


def test_slivers_are_not_voids():
    speck = box((0.05, 0.05, 0.05), inward=True)
    assert voids_of(trimesh.util.concatenate([box((30, 30, 30)), speck])).count == 0


def test_winding_along_the_sheared_ray_tells_inside_from_outside():
    ball = trimesh.creation.icosphere(subdivisions=3, radius=10)
    ball.apply_transform(trimesh.transformations.rotation_matrix(0.4, [1, 1, 0]))
    vertices, faces = _welded(ball)
    crossings = dfm_voids._Crossings(vertices, faces)
    points = np.random.default_rng(1).uniform(-14, 14, (300, 3))
    radius = np.linalg.norm(points, axis=1)
    keep = np.abs(radius - 10) > 0.5  # clear of the tessellated surface
    skip = np.zeros(len(faces), bool)
    winding = [crossings.winding(point, skip) for point in points[keep]]
    assert winding == list((radius[keep] < 10).astype(int))


def test_rotated_hollow_cube_keeps_its_void():
    turned = HOLLOW_CUBE.copy()
    turned.apply_transform(trimesh.transformations.rotation_matrix(0.9, [0.3, 1, 0.2]))
    voids = voids_of(turned)
    assert voids.count == 1
    assert voids.volumes_mm3 == pytest.approx([1000])
