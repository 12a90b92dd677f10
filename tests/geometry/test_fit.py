"""Build-volume fit in some orientation, not only the axis-aligned ones."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from registry.geometry.fit import AXIS_ROTATIONS, fit_in_volume


def box(x: float, y: float, z: float) -> np.ndarray:
    return trimesh.creation.box((x, y, z)).vertices


def assert_orientation_fits(points: np.ndarray, fit, volume) -> None:
    """The rotation the search answers really puts the part inside the volume."""
    rotated = points @ fit.rotation.T
    extents = rotated.max(axis=0) - rotated.min(axis=0)
    assert np.all(extents <= np.asarray(volume) + 1e-6)
    assert np.allclose(fit.rotation @ fit.rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)


def test_axis_rotations_are_the_24_proper_ones():
    assert len(AXIS_ROTATIONS) == 24
    assert len({m.tobytes() for m in AXIS_ROTATIONS}) == 24


def test_small_part_fits_as_it_is():
    fit = fit_in_volume(box(20, 20, 20), (250, 210, 210))
    assert fit.fits
    assert fit.clearance == pytest.approx(190)


def test_tall_part_fits_lying_down():
    points = box(10, 10, 240)
    volume = (250, 210, 100)
    fit = fit_in_volume(points, volume)
    assert fit.fits
    assert_orientation_fits(points, fit, volume)


def test_long_bar_fits_diagonally_across_the_bed():
    points = box(300, 10, 10)  # longer than any side of the volume
    volume = (250, 210, 20)
    fit = fit_in_volume(points, volume)
    assert fit.fits
    assert_orientation_fits(points, fit, volume)


def test_longer_bar_fits_along_the_space_diagonal():
    points = box(400, 10, 10)  # the 250 mm cube's space diagonal is 433 mm
    fit = fit_in_volume(points, (250, 250, 250))
    assert fit.fits
    assert_orientation_fits(points, fit, (250, 250, 250))


def test_bar_longer_than_the_space_diagonal_does_not_fit():
    fit = fit_in_volume(box(450, 10, 10), (250, 250, 250))
    assert not fit.fits
    assert fit.clearance < 0


def test_cube_larger_than_the_volume_does_not_fit_in_any_orientation():
    fit = fit_in_volume(box(260, 260, 260), (250, 250, 250))
    assert not fit.fits


def test_rotated_part_is_found_in_its_natural_orientation():
    # A 200x100x50 block turned by an odd rotation still fits a 210x110x60 box.
    rotation = Rotation.from_euler("xyz", [17, 41, 73], degrees=True).as_matrix()
    points = box(200, 100, 50) @ rotation.T
    fit = fit_in_volume(points, (210, 110, 60))
    assert fit.fits
    assert_orientation_fits(points, fit, (210, 110, 60))


def test_flat_part_and_empty_input():
    flat = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [100, 100, 0]], dtype=float)
    assert fit_in_volume(flat, (120, 120, 1)).fits
    assert not fit_in_volume(np.empty((0, 3)), (100, 100, 100)).fits
    with_nan = np.vstack([box(10, 10, 10), [[np.nan, 0, 0]]])
    assert fit_in_volume(with_nan, (20, 20, 20)).fits
