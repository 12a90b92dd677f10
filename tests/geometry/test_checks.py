"""Mesh checks on real files (tests/data, ../shared/testdata/meshes) and on meshes made here."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh

from registry.geometry.checks import (
    CHECKER_VERSION,
    Tolerances,
    analyse_edges,
    check_mesh,
    count_duplicate_faces,
    group_rows,
    units_suspect,
    weld,
)
from registry.geometry.mesh import MeshData
from registry.geometry.report import Code, Severity, Verdict

DATA = Path(__file__).parent.parent / "data"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "meshes"


def load(name: str) -> MeshData:
    mesh = trimesh.load(DATA / name, process=False, force="mesh")
    return MeshData(
        vertices=np.asarray(mesh.vertices, np.float64),
        faces=np.asarray(mesh.faces, np.int64),
        source_format="stl",
    )


def soup_of(mesh: trimesh.Trimesh) -> MeshData:
    """Every triangle with its own three vertices, as an STL reader gives them."""
    vertices = np.asarray(mesh.vertices, np.float64)[np.asarray(mesh.faces)].reshape(-1, 3)
    faces = np.arange(vertices.shape[0], dtype=np.int64).reshape(-1, 3)
    return MeshData(vertices=vertices, faces=faces, source_format="stl-binary")


def box(size: float = 20.0) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=(size, size, size))


def codes(report) -> set[Code]:
    return {issue.code for issue in report.issues}


def issue(report, code: Code):
    return next(i for i in report.issues if i.code is code)


# ----------------------------------------------------------------------------- real files


def test_20mm_cube_passes_with_its_volume_and_size():
    report = check_mesh(load("20mm-xyz-cube.stl"))
    assert report.verdict is Verdict.PASS
    assert report.checker_version == CHECKER_VERSION
    assert report.metrics.volume_mm3 == pytest.approx(8000, rel=0.01)
    assert report.metrics.size_mm == pytest.approx([20, 20, 20], abs=1e-3)
    assert report.metrics.bodies == 1
    assert report.metrics.watertight and report.metrics.winding_consistent


def test_teapot_has_64_open_edges_and_fails():
    report = check_mesh(load("teapot.stl"))
    assert report.verdict is Verdict.FAIL
    assert report.metrics.open_edges == 64
    assert issue(report, Code.OPEN_EDGES).severity is Severity.FAIL
    assert report.metrics.volume_mm3 is None  # an open surface has no volume


def test_soup_fails_on_open_edges():
    report = check_mesh(load("soup.stl"))
    assert report.verdict is Verdict.FAIL
    assert report.metrics.open_edges == 300  # 100 separate triangles
    assert report.metrics.bodies == 100


def test_shared_edge_between_two_cubes_is_non_manifold():
    report = check_mesh(load("shared.STL"))
    assert report.verdict is Verdict.FAIL
    assert report.metrics.non_manifold_edges == 1
    assert report.metrics.open_edges == 0
    # faces sharing a vertex are one body: the two cubes touch along an edge (admesh, which
    # joins facets through edges it can pair, counts 2 parts)
    assert report.metrics.bodies == 1
    assert report.metrics.volume_mm3 == pytest.approx(2.0)


def test_multibody_has_two_bodies_and_inconsistent_winding():
    report = check_mesh(load("multibody.stl"))
    assert report.verdict is Verdict.FAIL
    assert report.metrics.bodies == 2
    assert {Code.MULTIPLE_BODIES, Code.INCONSISTENT_WINDING} <= codes(report)
    assert report.metrics.open_edges == 0
    assert not report.metrics.winding_consistent


def test_unit_cube_is_one_mm_and_not_a_units_suspect():
    # 1 mm across is small but makeable; only parts under 0.5 mm are flagged
    report = check_mesh(load("unit_cube.STL"))
    assert report.metrics.size_mm == pytest.approx([1, 1, 1])
    assert Code.UNITS_SUSPECT not in codes(report)
    assert report.verdict is Verdict.PASS


@pytest.mark.parametrize(
    "name", ["20mm-xyz-cube.stl", "teapot.stl", "soup.stl", "shared.STL", "multibody.stl"]
)
def test_edge_counts_agree_with_trimesh(name):
    mesh = trimesh.load(DATA / name, force="mesh")  # trimesh merges vertices itself
    edges = np.sort(mesh.edges, axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    report = check_mesh(load(name))
    assert report.metrics.open_edges == int(np.count_nonzero(uses == 1))
    assert report.metrics.non_manifold_edges == int(np.count_nonzero(uses > 2))
    assert report.metrics.winding_consistent == mesh.is_winding_consistent


@pytest.mark.skipif(shutil.which("admesh") is None, reason="admesh is not installed")
@pytest.mark.parametrize(("name", "disconnected"), [("teapot.stl", 64), ("soup.stl", 100)])
def test_open_edges_match_admesh(name, disconnected):
    # the STL header is echoed back as it is, in whatever bytes it holds
    out = subprocess.run(
        ["admesh", str(DATA / name)], capture_output=True, check=True
    ).stdout.decode("latin-1")
    facets = [
        int(n) for n in re.findall(r"Facets with \d disconnected edges?\s+:\s+(\d+)", out)[:3]
    ]
    open_edges = facets[0] + 2 * facets[1] + 3 * facets[2]
    assert check_mesh(load(name)).metrics.open_edges == open_edges
    assert sum(facets) == disconnected


def read_3mf_single_object(path: Path) -> MeshData:
    with zipfile.ZipFile(path) as archive:
        model = archive.read("3D/3dmodel.model")
    vertices = np.array(
        re.findall(rb'<vertex\s+x="([^"]*)"\s+y="([^"]*)"\s+z="([^"]*)"', model), np.float64
    )
    faces = np.array(re.findall(rb'<triangle\s+v1="(\d+)"\s+v2="(\d+)"\s+v3="(\d+)"', model))
    return MeshData(vertices=vertices, faces=faces.astype(np.int64), source_format="3mf")


@pytest.mark.skipif(not (SHARED / "3DBenchy.3mf").exists(), reason="3DBenchy.3mf is absent")
def test_3dbenchy_is_a_closed_solid_with_a_few_collapsed_faces():
    # trimesh's 3MF loader needs networkx, which is not installed: the file is one object
    # without transforms, read directly
    mesh = read_3mf_single_object(SHARED / "3DBenchy.3mf")
    report = check_mesh(mesh)
    assert report.metrics.triangles == 225_154
    assert report.metrics.volume_mm3 == pytest.approx(15_550, rel=0.001)
    assert report.metrics.bodies == 1
    degenerate = issue(report, Code.DEGENERATE_FACES)
    assert degenerate.model_extra["collapsed"] == 8  # admesh: 8 degenerate facets
    # the 6 non-manifold edges trimesh reports come from those 8 collapsed faces; without
    # them every edge has exactly two faces, as admesh finds after removing them
    assert degenerate.model_extra["non_manifold_edges_with_collapsed"] == 6
    assert report.metrics.non_manifold_edges == 0
    assert report.metrics.open_edges == 0
    assert report.verdict is Verdict.WARN


# ----------------------------------------------------------------------------- made here


def test_closed_box_from_a_triangle_soup_passes():
    report = check_mesh(soup_of(box()))
    assert report.verdict is Verdict.PASS
    assert report.metrics.vertices == 8
    assert report.metrics.volume_mm3 == pytest.approx(8000)
    assert report.metrics.area_mm2 == pytest.approx(2400)
    assert report.metrics.center_of_mass_mm == pytest.approx([0, 0, 0], abs=1e-9)


def test_box_with_a_face_removed_has_three_open_edges():
    mesh = box()
    report = check_mesh(soup_of(trimesh.Trimesh(mesh.vertices, mesh.faces[1:], process=False)))
    assert report.verdict is Verdict.FAIL
    assert report.metrics.open_edges == 3
    assert report.metrics.volume_mm3 is None
    # an open surface: the centre is that of its area
    assert report.metrics.center_of_mass_mm is not None


def test_box_with_one_face_flipped_has_inconsistent_winding():
    mesh = box()
    faces = mesh.faces.copy()
    faces[0] = faces[0, ::-1]
    report = check_mesh(soup_of(trimesh.Trimesh(mesh.vertices, faces, process=False)))
    assert report.verdict is Verdict.FAIL
    assert issue(report, Code.INCONSISTENT_WINDING).model_extra["edges"] == 3
    assert report.metrics.open_edges == 0


def test_box_turned_inside_out_warns_of_inverted_normals():
    mesh = box()
    report = check_mesh(soup_of(trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1])))
    assert report.verdict is Verdict.WARN
    assert codes(report) == {Code.INVERTED_NORMALS}
    assert report.metrics.volume_mm3 == pytest.approx(8000)


def test_nan_vertex_fails_and_skips_the_other_checks():
    mesh = soup_of(box())
    mesh.vertices[4, 1] = np.nan
    report = check_mesh(mesh)
    assert report.verdict is Verdict.FAIL
    assert codes(report) == {Code.NON_FINITE}
    assert issue(report, Code.NON_FINITE).model_extra["vertices"] == 1
    assert report.metrics.volume_mm3 is None


def test_empty_mesh_fails():
    mesh = MeshData(np.zeros((0, 3)), np.zeros((0, 3), np.int64), source_format="stl-binary")
    report = check_mesh(mesh)
    assert report.verdict is Verdict.FAIL
    assert codes(report) == {Code.EMPTY}


def test_cube_drawn_in_metres_is_a_units_suspect_by_1000():
    mesh = box(0.02)  # a 20 mm cube whose numbers are metres
    report = check_mesh(soup_of(mesh))
    assert report.verdict is Verdict.WARN
    suspect = issue(report, Code.UNITS_SUSPECT)
    assert suspect.model_extra["factor"] == pytest.approx(1000)
    assert suspect.model_extra["likely_unit"] == "m"


def test_cube_1000_times_too_large_is_a_units_suspect_by_a_thousandth():
    report = check_mesh(soup_of(box(20_000)))
    suspect = issue(report, Code.UNITS_SUSPECT)
    assert suspect.model_extra["factor"] == pytest.approx(0.001)
    assert report.verdict is Verdict.WARN


def test_units_guess_picks_the_factor_nearest_a_typical_part():
    tol = Tolerances()
    # 0.4 in = 10 mm is nearer 50 mm (on a log scale) than 0.4 m = 400 mm or 0.4 cm = 4 mm
    assert units_suspect(0.4, tol).unit == "in"
    # 0.3 m = 300 mm is nearer than 0.3 in = 7.6 mm
    assert units_suspect(0.3, tol).unit == "m"
    assert units_suspect(30, tol) is None


def test_two_separate_boxes_are_two_bodies():
    two = trimesh.util.concatenate([box(), box().apply_translation([50, 0, 0])])
    report = check_mesh(soup_of(two))
    assert report.metrics.bodies == 2
    assert report.verdict is Verdict.WARN
    assert report.metrics.volume_mm3 == pytest.approx(16_000)


def test_duplicate_and_degenerate_faces_warn():
    mesh = box()
    # a copy of vertex 1: face 0-1-8 collapses to an edge once welded
    vertices = np.vstack([mesh.vertices, mesh.vertices[1]])
    extra = np.array([mesh.faces[0], [0, 1, 8]])
    faces = np.vstack([mesh.faces, extra])
    report = check_mesh(MeshData(vertices, faces.astype(np.int64), source_format="obj"))
    assert report.metrics.duplicate_faces == 1
    assert report.metrics.degenerate_faces == 1
    assert issue(report, Code.DEGENERATE_FACES).model_extra["collapsed"] == 1
    assert {Code.DUPLICATE_FACES, Code.DEGENERATE_FACES} <= codes(report)


def test_parallel_and_serial_checks_agree():
    mesh = load("teapot.stl")
    assert check_mesh(mesh, parallel=True) == check_mesh(mesh, parallel=False)


# ----------------------------------------------------------------------------- pieces


def test_weld_merges_corners_within_the_tolerance_and_drops_unused_vertices():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1e-6, 0, 0], [5, 5, 5]], float)
    faces = np.array([[0, 1, 2], [3, 2, 1]], np.int64)
    unique, welded = weld(vertices, faces, Tolerances())
    assert unique.shape == (3, 3)
    assert welded.tolist() == [[0, 1, 2], [0, 2, 1]]


def test_weld_of_a_wide_part_uses_the_hash_path():
    # 1 m on every axis with a 0.1 um grid needs 3 x 24 bits: more than 64
    mesh = soup_of(box(1000))
    unique, welded = weld(mesh.vertices, mesh.faces, Tolerances())
    assert unique.shape == (8, 3)
    assert analyse_edges(welded, 8).open_edges.shape == (0, 2)


def test_group_rows_tells_apart_rows_whose_codes_collide():
    rows = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3], [7, 8, 9], [4, 5, 6]], np.int64)

    def column(axis, selection):
        return rows[:, axis][selection].copy()

    # widths that are too small make different rows share a code: the rows still decide
    group, first = group_rows(rows.shape[0], column, [1, 1, 1])
    assert group.tolist() == [0, 1, 0, 2, 1]
    assert first.tolist() == [0, 1, 3]


def test_analyse_edges_counts_uses_and_directions():
    # two triangles sharing edge 1-2, walked the same way by both: inconsistent
    faces = np.array([[0, 1, 2], [3, 1, 2]], np.int64)
    edges = analyse_edges(faces, 4)
    assert edges.inconsistent_edges.tolist() == [[1, 2]]
    assert edges.open_edges.shape == (4, 2)
    assert edges.non_manifold_edges.shape == (0, 2)


def test_count_duplicate_faces_counts_either_orientation():
    faces = np.array([[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 1, 3]], np.int64)
    assert count_duplicate_faces(faces, 4) == 2
