"""Welding and edge topology (weld.py, edges.py) against plain reference implementations.

The fast paths group rows through scipy's sparse conversions; each test here compares them with
a straightforward numpy or Python computation of the same thing on meshes built to hold the
cases that matter: corners within the tolerance, open, non-manifold and inconsistently wound
edges, collapsed and repeated faces, unused vertices, coordinates too wide to pack in 64 bits.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import trimesh

from registry.geometry import weld as weld_module
from registry.geometry.checks import (
    Tolerances,
    analyse_edges,
    check_mesh,
    collapsed_faces,
    count_bodies,
    count_duplicate_faces,
    count_non_manifold_with,
    group_rows,
    measure,
    weld,
)
from registry.geometry.mesh import MeshData


def reference_weld(vertices: np.ndarray, faces: np.ndarray, tol: Tolerances):
    """Corners in one grid cell are one vertex, numbered in the order of their first use."""
    used = np.unique(faces)
    corners = vertices[used]
    low = corners.min(axis=0)
    scale = 1.0 / max(tol.merge, float(np.abs([low, corners.max(axis=0)]).max()) * 2.0**-60)
    cells = np.rint(corners.astype(np.float64) * scale).astype(np.int64)
    _, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    number = np.empty(first.shape[0], np.int64)
    number[order] = np.arange(first.shape[0])
    remap = np.full(vertices.shape[0], -1)
    remap[used] = number[inverse.ravel()]
    return corners[first[order]], remap[faces]


def reference_edges(faces: np.ndarray):
    """Every undirected edge (low, high) with its uses and its reversed uses."""
    uses: Counter = Counter()
    reversed_uses: Counter = Counter()
    for face in faces.tolist():
        for a, b in zip(face, face[1:] + face[:1], strict=True):
            key = (min(a, b), max(a, b))
            uses[key] += 1
            reversed_uses[key] += a > b
    return uses, reversed_uses


def pairs(keys) -> list[list[int]]:
    return [list(key) for key in sorted(keys)]


def soup(vertices: np.ndarray, faces: np.ndarray, dtype=np.float32) -> MeshData:
    corners = np.asarray(vertices, dtype)[faces].reshape(-1, 3)
    stl_faces = np.arange(corners.shape[0], dtype=np.int32).reshape(-1, 3)
    return MeshData(vertices=corners, faces=stl_faces, source_format="stl-binary")


def jittered_soup(seed: int, scale: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """A sphere's triangle soup whose corners are moved by less than the weld tolerance, some
    by more: float64 corners, unshared faces."""
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=scale)
    corners = sphere.vertices[sphere.faces].reshape(-1, 3)
    corners = corners + rng.uniform(-2e-5, 2e-5, corners.shape)
    moved = rng.random(corners.shape[0]) < 0.01
    corners[moved] += 0.01
    return corners, np.arange(corners.shape[0]).reshape(-1, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weld_of_a_jittered_soup_matches_the_reference(seed):
    vertices, faces = jittered_soup(seed)
    tol = Tolerances()
    expected_vertices, expected_faces = reference_weld(vertices, faces, tol)
    unique, welded = weld(vertices, faces, tol)
    assert welded.dtype == np.int32
    assert np.array_equal(unique, expected_vertices)
    assert np.array_equal(welded, expected_faces)


def test_weld_of_float32_stl_corners_matches_the_reference():
    mesh = soup(*jittered_soup(3))
    tol = Tolerances()
    expected_vertices, expected_faces = reference_weld(mesh.vertices, mesh.faces, tol)
    unique, welded = weld(mesh.vertices, mesh.faces, tol)
    assert unique.dtype == np.float32
    assert np.array_equal(unique, expected_vertices)
    assert np.array_equal(welded, expected_faces)


def test_weld_of_shared_vertices_with_unused_ones_matches_the_reference():
    rng = np.random.default_rng(4)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=30)
    # every vertex twice (the copy a hair away), faces shuffled over both copies, and
    # vertices no face uses in between
    vertices = np.vstack([sphere.vertices, sphere.vertices + 3e-5, rng.uniform(-50, 50, (40, 3))])
    copies = rng.integers(0, 2, sphere.faces.shape) * sphere.vertices.shape[0]
    faces = (sphere.faces + copies)[rng.permutation(sphere.faces.shape[0])]
    tol = Tolerances()
    expected_vertices, expected_faces = reference_weld(vertices, faces, tol)
    unique, welded = weld(vertices, faces.astype(np.int64), tol)
    # a copy falls in its original's cell unless a cell boundary runs between them
    assert sphere.vertices.shape[0] < unique.shape[0] < 2 * sphere.vertices.shape[0]
    assert np.array_equal(unique, expected_vertices)
    assert np.array_equal(welded, expected_faces)


def test_weld_too_wide_to_pack_matches_the_reference():
    # 2 m across on a 0.1 um grid: 3 x 25 bits, hashed rather than packed
    vertices, faces = jittered_soup(5, scale=1000.0)
    tol = Tolerances()
    expected_vertices, expected_faces = reference_weld(vertices, faces, tol)
    unique, welded = weld(vertices, faces, tol)
    assert np.array_equal(unique, expected_vertices)
    assert np.array_equal(welded, expected_faces)


def test_weld_of_corners_all_in_one_cell_gives_one_vertex():
    vertices = np.full((6, 3), 7.0) + np.arange(6)[:, None] * 1e-6
    unique, welded = weld(vertices, np.arange(6).reshape(2, 3), Tolerances())
    assert unique.shape == (1, 3)
    assert welded.tolist() == [[0, 0, 0], [0, 0, 0]]


def test_group_rows_splits_rows_whose_hashes_collide(monkeypatch):
    rng = np.random.default_rng(6)
    rows = rng.integers(0, 4, (500, 3))

    def column(axis, selection):
        return rows[:, axis][selection].copy()

    # a hash of the first column only: rows differing elsewhere collide
    monkeypatch.setattr(
        weld_module, "_hashed", lambda column, rows: column(0, rows).view(np.uint64) * 7
    )
    group, first = group_rows(rows.shape[0], column, None)
    _, expected_first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(expected_first)
    number = np.empty(order.shape[0], np.int64)
    number[order] = np.arange(order.shape[0])
    assert first.tolist() == np.sort(expected_first).tolist()
    assert group.tolist() == number[inverse.ravel()].tolist()


def random_faces(seed: int, faces: int = 3000, vertices: int = 400) -> np.ndarray:
    """Faces over few vertices: edges used once, twice either way, and many times; some faces
    collapsed (a repeated corner) and some repeated."""
    rng = np.random.default_rng(seed)
    result = rng.integers(0, vertices, (faces, 3))
    result[:50, 1] = result[:50, 0]  # collapsed
    result[50:60] = result[60:70, ::-1]  # repeated, reversed
    result[70:75] = result[75:80]  # repeated, same way
    return result


@pytest.mark.parametrize("seed", [0, 1])
def test_analyse_edges_matches_a_count_of_every_edge(seed):
    faces = random_faces(seed)
    uses, reversed_uses = reference_edges(faces)
    edges = analyse_edges(faces, 400)
    assert edges.open_edges.tolist() == pairs(k for k, n in uses.items() if n == 1)
    assert edges.non_manifold_edges.tolist() == pairs(k for k, n in uses.items() if n > 2)
    assert edges.inconsistent_edges.tolist() == pairs(
        k for k, n in uses.items() if n == 2 and reversed_uses[k] != 1
    )
    rows, columns = edges.graph.nonzero()
    assert list(zip(rows.tolist(), columns.tolist(), strict=True)) == sorted(uses)
    assert edges.uses.tolist() == [uses[key] for key in sorted(uses)]


def test_an_edge_walked_twice_the_same_way_in_either_direction_is_inconsistent():
    # edge 1-2 walked 1->2 twice, edge 3-4 walked 4->3 twice, edge 5-6 both ways
    faces = np.array([[0, 1, 2], [7, 1, 2], [0, 4, 3], [7, 4, 3], [0, 5, 6], [0, 6, 5]])
    edges = analyse_edges(faces, 8)
    assert edges.inconsistent_edges.tolist() == [[1, 2], [3, 4]]
    assert edges.open_edges.shape == (8, 2)


def test_non_manifold_count_with_added_faces_matches_counting_them_all():
    for seed in range(3):
        faces = random_faces(seed)
        collapsed = collapsed_faces(faces)
        edges = analyse_edges(faces[~collapsed], 400)
        every = analyse_edges(faces, 400).non_manifold_edges.shape[0]
        assert count_non_manifold_with(edges, faces[collapsed], 400) == every


@pytest.mark.parametrize("seed", [0, 1])
def test_count_duplicate_faces_matches_a_set_of_corner_sets(seed):
    faces = random_faces(seed)
    distinct = {tuple(sorted(face)) for face in faces.tolist()}
    assert count_duplicate_faces(faces.astype(np.int32), 400) == faces.shape[0] - len(distinct)


def reference_bodies(faces: np.ndarray, vertex_count: int) -> int:
    parent = list(range(vertex_count))

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for a, b, c in faces.tolist():
        parent[root(b)] = root(a)
        parent[root(c)] = root(a)
    return len({root(a) for a in faces[:, 0].tolist()})


@pytest.mark.parametrize("vertex_count", [400, 5000])
def test_count_bodies_matches_a_union_find(vertex_count):
    faces = random_faces(7, faces=1500, vertices=vertex_count)
    solid = faces[~collapsed_faces(faces)]
    edges = analyse_edges(solid, vertex_count)
    assert count_bodies(solid, edges, vertex_count) == reference_bodies(solid, vertex_count)


@pytest.mark.parametrize("stl", [False, True])
def test_measure_matches_trimesh(stl):
    part = trimesh.creation.annulus(r_min=4, r_max=9, height=5, sections=64)
    part.apply_translation([100, -20, 3])
    mesh = (
        soup(part.vertices, part.faces, np.float64)
        if stl
        else MeshData(part.vertices, part.faces.astype(np.int64), source_format="obj")
    )
    measures = measure(mesh.vertices, mesh.faces, Tolerances())
    assert measures.signed_volume == pytest.approx(part.volume, rel=1e-12)
    assert measures.area == pytest.approx(part.area, rel=1e-12)
    assert measures.volume_centre == pytest.approx(part.center_mass, rel=1e-12)
    assert not measures.zero_area.any()


def test_measure_flags_faces_without_area():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0]], float)
    faces = np.array([[0, 1, 2], [0, 1, 3], [2, 2, 2]])
    assert measure(vertices, faces, Tolerances()).zero_area.tolist() == [False, True, True]


def test_check_of_a_soup_with_collapsed_faces_counts_what_keeping_them_would_give():
    faces = random_faces(8, faces=600, vertices=200)
    rng = np.random.default_rng(8)
    vertices = rng.uniform(0, 20, (200, 3))
    report = check_mesh(soup(vertices, faces, np.float64))
    degenerate = next(i for i in report.issues if i.code.value == "DEGENERATE_FACES")
    every = analyse_edges(faces, 200).non_manifold_edges.shape[0]
    assert degenerate.model_extra["non_manifold_edges_with_collapsed"] == every


def test_codes_in_neighbouring_buckets_with_equal_rests_stay_apart():
    # bucket 0 ends and bucket 2 starts with rest 5, bucket 1 is empty (40 rows: 2 bucket bits)
    bucket = np.array([0, 2, 0, 2] + [3] * 36, np.int32)
    rest = np.array([5, 5, 1, 5] + [0] * 36, np.int32)
    buckets = weld_module._Buckets(8, bucket, rest)
    assert buckets.bucket_bits == 2
    group, first = weld_module._group(buckets)
    assert group.tolist() == [0, 1, 2, 1] + [3] * 36
    assert first.tolist() == [0, 1, 2, 4]


def test_non_manifold_count_with_a_collapsed_face_on_a_non_manifold_edge():
    # edge 0-1 has three faces; the collapsed face 0-1-1 adds two more uses of it
    faces = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 3, 4]])
    edges = analyse_edges(faces, 5)
    assert edges.non_manifold_edges.tolist() == [[0, 1]]
    assert count_non_manifold_with(edges, np.array([[0, 1, 1]]), 5) == 1
    assert count_non_manifold_with(edges, np.array([[2, 3, 3], [3, 2, 2]]), 5) == 2


@pytest.mark.parametrize("count", [1, 255, 256, 1000])
def test_bounds_match_numpy_and_keep_nan(count):
    points = np.random.default_rng(count).normal(size=(count, 3)).astype(np.float32)
    low, high = weld_module.bounds(points)
    assert np.array_equal(low, points.min(axis=0))
    assert np.array_equal(high, points.max(axis=0))
    points[count // 2, 1] = np.nan
    low, high = weld_module.bounds(points)
    assert np.isnan(low[1]) and np.isnan(high[1])
    assert not np.isnan(low[[0, 2]]).any()
