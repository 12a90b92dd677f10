"""Previews: the PNG thumbnail drawn here and the GLB for web viewers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from registry.geometry import preview
from registry.geometry.checks import Tolerances, collapsed_faces, measure, weld
from registry.geometry.mesh import MeshData
from registry.geometry.preview import crease_normals, render_png, render_previews
from registry.geometry.readers import read_model

DATA = Path(__file__).resolve().parents[1] / "data"


def mesh_of(solid: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(solid.vertices, float), np.asarray(solid.faces), "stl-binary")


def pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def load_glb(glb: bytes) -> trimesh.Trimesh:
    assert glb.startswith(b"glTF")
    return trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh", process=False)


def test_a_box_shows_three_shades_on_the_background():
    shown = pixels(render_previews(mesh_of(trimesh.creation.box((30, 30, 30)))).png)
    assert shown.shape == (256, 256, 3)
    for corner in (shown[0, 0], shown[0, -1], shown[-1, 0], shown[-1, -1]):
        assert tuple(corner) == preview.BACKGROUND
    colours, counts = np.unique(shown.reshape(-1, 3), axis=0, return_counts=True)
    assert tuple(colours[counts.argmax()]) == preview.BACKGROUND
    # the three faces seen, each one flat colour (edges are blended)
    faces_seen = colours[(counts > 1000) & (colours != preview.BACKGROUND).any(axis=1)]
    assert len(faces_seen) == 3
    assert len({int(c.sum()) for c in faces_seen}) == 3  # three different brightnesses


def test_the_size_is_the_one_asked_for_and_the_part_fills_it():
    shown = pixels(render_png(*weld_box(), size=100))
    assert shown.shape == (100, 100, 3)
    drawn = (shown != preview.BACKGROUND).any(axis=2)
    rows, columns = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    assert max(rows[-1] - rows[0], columns[-1] - columns[0]) >= 80


def weld_box():
    solid = trimesh.creation.box((10, 20, 30))
    return np.asarray(solid.vertices, float), np.asarray(solid.faces)


def test_the_glb_holds_the_welded_mesh_in_metres_with_y_up():
    mesh = read_model(DATA / "20mm-xyz-cube.stl", "cube.stl")
    vertices, faces = weld(mesh.vertices, mesh.faces, Tolerances())
    faces = faces[~collapsed_faces(faces)]
    loaded = load_glb(render_previews(mesh).glb)
    assert len(loaded.faces) == len(faces)
    volume = abs(measure(vertices, faces, Tolerances()).signed_volume)
    assert loaded.volume * 1e9 == pytest.approx(volume, rel=1e-4)
    # a 10 x 20 x 30 mm box (x, y, z) is 10 wide, 30 high and 20 deep in glTF's frame
    extents = load_glb(render_previews(mesh_of(trimesh.creation.box((10, 20, 30)))).glb).extents
    assert extents == pytest.approx([0.010, 0.030, 0.020])


def test_normals_are_split_at_sharp_edges_only():
    box = trimesh.creation.box((10, 10, 10))
    split, normals, faces = crease_normals(np.asarray(box.vertices, float), np.asarray(box.faces))
    assert len(split) == 24  # each corner of the box once per side it bounds
    # each vertex's normal is its side's
    face_normal = np.cross(
        split[faces[:, 1]] - split[faces[:, 0]], split[faces[:, 2]] - split[faces[:, 0]]
    )
    face_normal /= np.linalg.norm(face_normal, axis=1)[:, None]
    assert np.allclose(normals[faces], face_normal[:, None, :])
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10)
    vertices, faces = np.asarray(sphere.vertices, float), np.asarray(sphere.faces)
    split, normals, _ = crease_normals(vertices, faces)
    assert len(split) == len(vertices)  # smooth everywhere
    radial = split / np.linalg.norm(split, axis=1)[:, None]
    assert np.einsum("ij,ij->i", normals, radial).min() > 0.999


def test_an_open_mesh_still_renders():
    teapot = read_model(DATA / "teapot.stl", "teapot.stl")  # 64 open edges
    previews = render_previews(teapot)
    shown = pixels(previews.png)
    assert (shown != preview.BACKGROUND).any(axis=2).mean() > 0.2
    assert len(load_glb(previews.glb).faces) == teapot.triangle_count


def test_faces_with_a_corner_that_is_not_finite_are_left_out():
    box = mesh_of(trimesh.creation.box((10, 10, 10)))
    vertices = np.vstack([box.vertices, [[np.nan, 0, 0]]])
    faces = np.vstack([box.faces, [[0, 1, len(vertices) - 1]]])
    previews = render_previews(MeshData(vertices, faces, "obj"))
    assert any("not finite" in note for note in previews.notes)
    assert len(load_glb(previews.glb).faces) == 12


def test_a_mesh_past_the_glb_bound_is_simplified(monkeypatch):
    monkeypatch.setattr(preview, "MAX_GLB_TRIANGLES", 2000)
    monkeypatch.setattr(preview, "GLB_TARGET_TRIANGLES", 1000)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=20)  # 5120 faces
    previews = render_previews(mesh_of(sphere))
    loaded = load_glb(previews.glb)
    assert 200 < len(loaded.faces) <= 1000
    assert loaded.volume * 1e9 == pytest.approx(sphere.volume, rel=0.1)
    assert any("simplified from 5,120" in note for note in previews.notes)


@pytest.mark.slow
def test_a_million_face_preview():
    sphere = mesh_of(trimesh.creation.icosphere(subdivisions=8, radius=50))
    previews = render_previews(sphere)
    assert len(load_glb(previews.glb).faces) == sphere.triangle_count
    assert (pixels(previews.png) != preview.BACKGROUND).any(axis=2).mean() > 0.5
