"""Geometry diff between two versions of a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from registry.geometry.diff import model_diff
from registry.geometry.mesh import MeshData
from registry.geometry.readers import read_model

DATA = Path(__file__).resolve().parents[1] / "data"


def mesh_of(solid: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(solid.vertices, float), np.asarray(solid.faces), "stl-binary")


def test_identical_models_do_not_differ():
    cube = read_model(DATA / "20mm-xyz-cube.stl", "cube.stl")
    diff = model_diff(cube, cube, samples=500)
    assert diff.volume_delta_mm3 == 0
    assert diff.area_delta_mm2 == 0
    assert diff.size_delta_mm == [0, 0, 0]
    assert diff.distance.max_mm == pytest.approx(0, abs=1e-6)


def test_thicker_part_shows_in_volume_size_and_distance():
    old = mesh_of(trimesh.creation.box((40, 20, 4)))
    new = mesh_of(trimesh.creation.box((40, 20, 5)))  # one more millimetre, half on each side
    diff = model_diff(old, new, samples=1000)
    assert diff.volume_delta_mm3 == pytest.approx(800)
    assert diff.size_delta_mm == pytest.approx([0, 0, 1])
    assert diff.area_delta_mm2 == pytest.approx(2 * (40 + 20))
    assert diff.distance.max_mm == pytest.approx(0.5, abs=0.01)
    assert diff.distance.samples == 2000


def test_open_model_has_no_volume_delta():
    teapot = read_model(DATA / "teapot.stl", "teapot.stl")
    box = mesh_of(trimesh.creation.box((10, 10, 10)))
    diff = model_diff(teapot, box, samples=200)
    assert diff.volume_delta_mm3 is None
    assert diff.volume_mm3[0] is None
    assert diff.distance.max_mm > 0
