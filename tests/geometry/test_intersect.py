"""Self-intersections: real files, boxes made here, a brute-force reference and manifold3d."""

from __future__ import annotations

from pathlib import Path

import manifold3d
import numpy as np
import pytest
import trimesh

from registry.geometry import intersect
from registry.geometry.checks import Tolerances, check_mesh, weld
from registry.geometry.intersect import check_self_intersections, self_intersections
from registry.geometry.mesh import MeshData
from registry.geometry.readers import read_model
from registry.geometry.report import Code, Severity, Verdict
from registry.geometry.validate import validate_model

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "meshes"


def found_in(*solids: trimesh.Trimesh, **options) -> intersect.Intersections:
    """What the check finds in the solids put together as one mesh (not united)."""
    joined = trimesh.util.concatenate(list(solids))
    vertices, faces = weld(np.asarray(joined.vertices), np.asarray(joined.faces), Tolerances())
    return self_intersections(vertices, faces, **options)


def box(size=(20.0, 20.0, 20.0), at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    solid = trimesh.creation.box(extents=size)
    solid.apply_translation(at)
    return solid


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "name",
    [
        "20mm-xyz-cube.stl",
        "unit_cube.STL",
        "featuretype.STL",
        "featuretype.3MF",
        "torus.3mf",
        "box.3mf",
        "round.stl",
        "octagonal_pocket.stl",
        "plate_holes.STL",
        "idler_riser.STL",
        "tube.obj",
    ],
)
def test_clean_solids_do_not_cross_themselves(name):
    mesh = read_model(DATA / name, name)
    report = check_mesh(mesh)
    check_self_intersections(mesh, report)
    assert report.metrics.self_intersecting_faces == 0
    assert Code.SELF_INTERSECTIONS not in {issue.code for issue in report.issues}


@pytest.mark.parametrize("name", ["self_intersectA.obj", "self_intersectB.obj"])
def test_manifold_test_models_cross_where_edge_checks_see_nothing(name):
    mesh = read_model(DATA / name, name)
    report = check_mesh(mesh)
    assert report.verdict is Verdict.PASS  # every edge has two faces, wound alike
    found = check_self_intersections(mesh, report)
    assert (found.pair_count, found.face_count) == (261, 318)
    issue = next(i for i in report.issues if i.code is Code.SELF_INTERSECTIONS)
    # under 0.008 mm deep: finer than any process resolves, so a warning
    assert issue.deepest_mm < intersect.SHALLOW_CROSSING_MM
    assert issue.severity is Severity.WARN
    assert issue.pairs == 261 and issue.faces == 318
    assert report.decide().verdict is Verdict.WARN
    assert report.metrics.self_intersecting_faces == 318
    # every pair found crosses by exact orientation tests as well
    vertices, faces = weld(mesh.vertices, mesh.faces, Tolerances())
    old, intersect.SAMPLE_PAIRS = intersect.SAMPLE_PAIRS, 10**6
    try:
        pairs = self_intersections(vertices, faces).sample_pairs
    finally:
        intersect.SAMPLE_PAIRS = old
    assert reference_crosses(vertices, faces, pairs[:, 0], pairs[:, 1]).all()


def test_validate_model_runs_the_check():
    report = validate_model(DATA / "self_intersectA.obj", "self_intersectA.obj")
    assert report.verdict is Verdict.WARN
    assert report.metrics.self_intersecting_faces == 318
    clean = validate_model(DATA / "20mm-xyz-cube.stl", "cube.stl")
    assert clean.verdict is Verdict.PASS and clean.metrics.self_intersecting_faces == 0
    empty = validate_model(DATA / "empty.stl", "empty.stl")
    assert "self_intersecting_faces" not in empty.metrics.model_dump()


# ----------------------------------------------------------------------------- boxes


def test_overlapping_boxes_cross():
    found = found_in(box(), box(at=(10, 5, 3)))
    assert found.pair_count > 0
    assert found.deepest_mm > 1


def test_overlapping_separate_bodies_warn_rather_than_fail():
    both = trimesh.util.concatenate([box(), box(at=(10, 5, 3))])
    mesh = MeshData(np.asarray(both.vertices, float), np.asarray(both.faces), "stl-binary")
    report = check_mesh(mesh)
    check_self_intersections(mesh, report)
    codes = {i.code: i for i in report.issues}
    assert Code.SELF_INTERSECTIONS not in codes
    overlap = codes[Code.OVERLAPPING_BODIES]
    assert overlap.severity is Severity.WARN and overlap.bodies == 2 and overlap.deepest_mm > 1


def test_a_body_folded_deep_through_itself_fails():
    solid = box()
    vertices = np.asarray(solid.vertices, float).copy()
    corner = int(np.argmax(vertices.sum(axis=1)))  # (10, 10, 10)
    vertices[corner] = (-25.0, -25.0, -25.0)  # pulled through the opposite corner
    mesh = MeshData(vertices, np.asarray(solid.faces), "stl-binary")
    report = check_mesh(mesh)
    check_self_intersections(mesh, report)
    issue = next(i for i in report.issues if i.code is Code.SELF_INTERSECTIONS)
    assert issue.severity is Severity.FAIL and issue.deepest_mm > 1
    assert Code.OVERLAPPING_BODIES not in {i.code for i in report.issues}
    assert report.decide().verdict is Verdict.FAIL


def test_boxes_sharing_face_planes_still_overlap():
    # the second box's faces lie in the first's planes: the overlap is seen as coplanar faces
    # facing the same way
    found = found_in(box(), box(at=(10, 0, 0)))
    assert found.pair_count > 0


def test_disjoint_boxes_do_not_cross():
    assert found_in(box(), box(at=(25, 0, 0))).pair_count == 0


def test_a_box_inside_another_does_not_cross():
    # nested shells: the edge checks and the volume speak for this, the surfaces do not cross
    assert found_in(box(), box(size=(5, 5, 5))).pair_count == 0


@pytest.mark.parametrize("at", [(20, 0, 0), (20, 5, 3), (20, 20, 20)])
def test_boxes_touching_along_a_face_edge_or_corner_do_not_cross(at):
    assert found_in(box(), box(at=at)).pair_count == 0


def test_a_face_folded_through_its_neighbour_at_a_shared_vertex_crosses():
    # a fan around vertex 0: face 1 lies flat, face 0 dips through it beyond the shared vertex
    vertices = np.array(
        [[0, 0, 0], [10, -5, -2], [10, 5, 2], [10, 2, -4], [10, -2, 4]], dtype=float
    )
    faces = np.array([[0, 1, 2], [0, 3, 4]])
    assert self_intersections(vertices, faces).pair_count == 1
    # the same two faces turned apart only meet at the vertex
    vertices[3:, 0] = -10
    assert self_intersections(vertices, faces).pair_count == 0


def test_a_stack_of_long_faces_stops_at_max_pairs():
    # 2000 long faces sharing one vertex, every box overlapping every other: no crossings, but
    # two million pairs to look at
    angle = np.linspace(0, np.pi, 2001)
    rim = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], axis=1) * 100
    vertices = np.vstack([[[0, 0, 1]], rim])
    faces = np.stack([np.zeros(2000, int), np.arange(1, 2001), np.arange(2, 2002)], axis=1)
    found = self_intersections(vertices, faces, max_pairs=50_000)
    assert not found.complete and found.pair_count == 0
    mesh = MeshData(vertices, faces, "stl-binary")
    report = check_mesh(mesh)
    check_self_intersections(mesh, report, max_pairs=50_000)
    issue = next(i for i in report.issues if i.code is Code.SELF_INTERSECTIONS)
    assert issue.severity is Severity.INFO and not issue.complete


# ----------------------------------------------------------------------------- references


def orient(a, b, c, d):
    return np.einsum("ij,ij->i", np.cross(b - a, c - a), d - a)


def reference_crosses(vertices, faces, i, j) -> np.ndarray:
    """(k,) bool: an edge of one face passes strictly through the inside of the other (the
    textbook test; in general position it is what ``self_intersections`` counts)."""
    tri = vertices[faces]
    hit = np.zeros(len(i), bool)
    for s, t in ((i, j), (j, i)):
        a, b, c = (tri[t][:, k] for k in range(3))
        for k in range(3):
            p, q = tri[s][:, k], tri[s][:, (k + 1) % 3]
            through = orient(a, b, c, p) * orient(a, b, c, q) < 0
            sides = np.stack([orient(p, q, a, b), orient(p, q, b, c), orient(p, q, c, a)])
            hit |= through & ((sides > 0).all(axis=0) | (sides < 0).all(axis=0))
    return hit


def reference_pairs(vertices, faces) -> set[tuple[int, int]]:
    i, j = np.triu_indices(len(faces), 1)
    shared = sum((faces[i][:, a] == faces[j][:, b]).astype(int) for a in range(3) for b in range(3))
    i, j = i[shared < 2], j[shared < 2]
    hit = reference_crosses(vertices, faces, i, j)
    return set(zip(i[hit].tolist(), j[hit].tolist(), strict=True))


def random_meshes(rng):
    # a crumpled sphere: folds between faces that share vertices
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=10)
    yield np.asarray(sphere.vertices) + rng.normal(0, 1.5, (len(sphere.vertices), 3)), sphere.faces
    # a soup of faces from 0.2 to 15 mm, a third of them slivers (some get covered by boxes)
    n = 300
    tri = rng.uniform(0, 20, (n, 1, 3)) + rng.normal(0, 1, (n, 3, 3)) * np.exp(
        rng.uniform(np.log(0.2), np.log(15), (n, 1, 1))
    )
    thin = rng.random(n) < 0.3
    tri[thin, 2] = tri[thin, 0] + (tri[thin, 2] - tri[thin, 0]) * 0.01
    yield tri.reshape(-1, 3), np.arange(3 * n).reshape(-1, 3)
    # a fan folding over itself around one vertex
    k = 60
    angle = np.sort(rng.uniform(0, 2 * np.pi, k))
    rim = np.c_[np.cos(angle), np.sin(angle), rng.normal(0, 0.4, k)] * rng.uniform(1, 8, (k, 1))
    step = rng.integers(1, 4, k)
    fan = np.c_[np.zeros(k, int), 1 + np.arange(k), 1 + (np.arange(k) + step) % k]
    yield np.vstack([[0, 0, 0], rim]), fan
    # big faces and slivers through a cloud of small ones: the big ones are searched in pieces
    small = rng.uniform(0, 20, (400, 1, 3)) + rng.normal(0, 0.4, (400, 3, 3))
    big = rng.uniform(0, 20, (12, 1, 3)) + rng.normal(0, 12, (12, 3, 3))
    big[::2, 2] = big[::2, 0] + (big[::2, 2] - big[::2, 0]) * 0.02
    tri = np.concatenate([small, big])
    yield tri.reshape(-1, 3), np.arange(3 * len(tri)).reshape(-1, 3)


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_a_brute_force_reference(seed):
    for vertices, faces in random_meshes(np.random.default_rng(seed)):
        faces = np.asarray(faces)
        if len(faces) == 412:  # the big faces are searched in pieces
            assert intersect._prepare(vertices, faces, Tolerances()).box_face is not None
        old, intersect.SAMPLE_PAIRS = intersect.SAMPLE_PAIRS, 10**6
        try:
            # a tolerance far below the data's spacing: the reference has none
            found = self_intersections(vertices, faces, tol=Tolerances(merge=1e-9))
        finally:
            intersect.SAMPLE_PAIRS = old
        assert set(map(tuple, found.sample_pairs.tolist())) == reference_pairs(vertices, faces)


def as_manifold(solid: trimesh.Trimesh) -> manifold3d.Manifold:
    return manifold3d.Manifold(
        manifold3d.Mesh(
            vert_properties=np.asarray(solid.vertices, np.float32),
            tri_verts=np.asarray(solid.faces, np.uint32),
        )
    )


def test_two_spheres_cross_exactly_when_manifold_says_they_partly_overlap():
    rng = np.random.default_rng(7)
    for _ in range(12):
        a = trimesh.creation.icosphere(subdivisions=2, radius=rng.uniform(2, 10))
        b = trimesh.creation.icosphere(subdivisions=2, radius=rng.uniform(2, 10))
        b.apply_translation(rng.uniform(-12, 12, 3))
        common = (as_manifold(a) ^ as_manifold(b)).volume()
        smaller = min(as_manifold(a).volume(), as_manifold(b).volume())
        partly = 1e-6 < common < smaller * (1 - 1e-6)  # overlapping, neither inside the other
        assert (found_in(a, b).pair_count > 0) == partly


# ----------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_a_million_face_sphere_has_no_crossings():
    sphere = trimesh.creation.icosphere(subdivisions=8, radius=50)
    vertices, faces = weld(np.asarray(sphere.vertices), np.asarray(sphere.faces), Tolerances())
    found = self_intersections(vertices, faces)
    assert found.pair_count == 0 and found.complete


def cross2(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


def overlap_area(first: np.ndarray, second: np.ndarray) -> float:
    """Area two coplanar triangles (3, 3) share: the first clipped by the second's edges."""
    normal = np.cross(second[1] - second[0], second[2] - second[0])
    keep = [axis for axis in range(3) if axis != int(np.abs(normal).argmax())]
    polygon, clip = [p[keep] for p in first], [p[keep] for p in second]
    turn = np.sign(cross2(clip[1] - clip[0], clip[2] - clip[0]))
    for k in range(3):
        a, b = clip[k], clip[(k + 1) % 3]

        def inside(p, a=a, b=b):
            return turn * cross2(b - a, p - a) >= 0

        out = []
        for p, q in zip(polygon, polygon[1:] + polygon[:1], strict=True):
            if inside(p):
                out.append(p)
            if inside(p) != inside(q):
                t = cross2(b - a, p - a) / cross2(b - a, p - q)
                out.append(p + t * (q - p))
        polygon = out
        if not polygon:
            return 0.0
    x, y = np.array(polygon).T
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "3DBenchy.3mf").exists(), reason="3DBenchy.3mf is absent")
def test_3dbenchy_has_a_few_micrometre_deep_crossings():
    mesh = read_model(SHARED / "3DBenchy.3mf", "3DBenchy.3mf")
    vertices, faces = weld(mesh.vertices, mesh.faces, Tolerances())
    old, intersect.SAMPLE_PAIRS = intersect.SAMPLE_PAIRS, 10**6
    try:
        found = self_intersections(vertices, faces)
    finally:
        intersect.SAMPLE_PAIRS = old
    # genuine, but at most 2 micrometres deep, between faces a few hundredths of a mm across
    assert found.complete and (found.pair_count, found.face_count) == (111, 139)
    assert found.deepest_mm < 0.003
    i, j = found.sample_pairs.T
    crossing = reference_crosses(vertices, faces, i, j)
    assert crossing.sum() == 106
    # the other five lie in the bottom plane (z = 0.3 mm) and overlap there
    for a, b in zip(i[~crossing], j[~crossing], strict=True):
        first, second = vertices[faces[a]], vertices[faces[b]]
        assert np.allclose(first[:, 2], 0.3) and np.allclose(second[:, 2], 0.3)
        assert overlap_area(first, second) > 1e-8  # thin slivers of overlap
