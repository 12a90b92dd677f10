"""Does a part fit a machine's build volume in some orientation?

Not only the axis-aligned ones: a long bar fits a printer diagonally, across the bed or along the
volume's space diagonal. The search runs on the part's convex hull (the only points that can
touch the walls) and tries, in order of how often they win:

1. the part's own axes and its minimum-volume oriented bounding box, each with the 24 rotations
   that map axes onto axes (every assignment of part axes to machine axes);
2. turns of those frames about each axis in 1 degree steps (the diagonal across one face);
3. the frame whose longest axis lies along the volume's space diagonal, turned about that
   diagonal in 5 degree steps.

It answers the first orientation that fits, with its rotation, so a slicer can use it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError


@dataclass(frozen=True)
class Fit:
    fits: bool
    # (3, 3) float64: rotate the part's points by ``points @ rotation.T`` to get the orientation.
    rotation: np.ndarray
    # The part's extents along the machine axes in that orientation, mm.
    extents: np.ndarray
    # Smallest clearance left to any wall (negative when it does not fit), mm.
    clearance: float


def _axis_rotations() -> np.ndarray:
    """(24, 3, 3): the proper rotations that permute and flip the coordinate axes."""
    found = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3))
            for row, (col, sign) in enumerate(zip(perm, signs, strict=True)):
                matrix[row, col] = sign
            if np.linalg.det(matrix) > 0:
                found.append(matrix)
    return np.array(found)


AXIS_ROTATIONS = _axis_rotations()


def _about(axis: int, angles: np.ndarray) -> np.ndarray:
    """(k, 3, 3): rotations by ``angles`` (radians) about coordinate ``axis``."""
    c, s = np.cos(angles), np.sin(angles)
    out = np.zeros((len(angles), 3, 3))
    i, j = [a for a in range(3) if a != axis]
    out[:, axis, axis] = 1
    out[:, i, i] = c
    out[:, i, j] = -s
    out[:, j, i] = s
    out[:, j, j] = c
    return out


def _about_vector(vector: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(k, 3, 3): rotations by ``angles`` about the unit ``vector`` (Rodrigues)."""
    x, y, z = vector
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    s, c = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3): a rotation taking unit vector ``a`` onto unit vector ``b``."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        # Half a turn about any axis perpendicular to a.
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        perp /= np.linalg.norm(perp)
        return _about_vector(perp, np.array([np.pi]))[0]
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k * (1 / (1 + c))


def hull_points(points: np.ndarray) -> np.ndarray:
    """(h, 3): the convex hull's vertices of ``points`` (all points when qhull cannot run)."""
    finite = points[np.isfinite(points).all(axis=1)]
    if len(finite) > 4:
        try:
            return finite[ConvexHull(finite).vertices]
        except (QhullError, ValueError):  # flat or degenerate parts
            pass
    return finite


def _oriented_frame(points: np.ndarray) -> np.ndarray:
    """(3, 3): rotation into the frame of the minimum-volume oriented bounding box."""
    try:
        import trimesh

        with np.errstate(invalid="ignore", divide="ignore"):  # flat parts have no volume
            transform, _ = trimesh.bounds.oriented_bounds(points)
        return np.asarray(transform)[:3, :3]
    except Exception:  # no OBB for degenerate input: the part's own axes remain candidates
        return np.eye(3)


def fit_in_volume(points: np.ndarray, volume_mm: tuple[float, float, float]) -> Fit:
    """Search orientations of ``points`` ((n, 3) float64, mm) inside the box ``volume_mm``."""
    box = np.asarray(volume_mm, dtype=float)
    hull = hull_points(np.asarray(points, dtype=float))
    if len(hull) == 0:
        return Fit(False, np.eye(3), np.zeros(3), -np.inf)
    hull = hull - hull.mean(axis=0)
    frames = [np.eye(3), _oriented_frame(hull)]
    best: Fit | None = None
    for candidates in _candidate_sets(frames, hull, box):
        rotated = np.einsum("kij,nj->kni", candidates, hull)
        extents = rotated.max(axis=1) - rotated.min(axis=1)
        clearance = (box - extents).min(axis=1)
        k = int(np.argmax(clearance))
        if best is None or clearance[k] > best.clearance:
            best = Fit(bool(clearance[k] >= 0), candidates[k], extents[k], float(clearance[k]))
        if best.fits:
            return best
    assert best is not None
    return best


def _candidate_sets(frames: list[np.ndarray], hull: np.ndarray, box: np.ndarray):
    """Batches of (k, 3, 3) rotations, cheapest and likeliest first."""
    bases = np.concatenate([AXIS_ROTATIONS @ frame for frame in frames])
    yield bases
    turns = np.radians(np.arange(1, 90))
    for axis in range(3):
        yield (_about(axis, turns)[:, None] @ bases[None]).reshape(-1, 3, 3)
    diagonal = box / np.linalg.norm(box)
    spins = _about_vector(diagonal, np.radians(np.arange(0, 360, 5)))
    for frame in frames:
        local = hull @ frame.T
        longest = np.eye(3)[int(np.argmax(local.max(axis=0) - local.min(axis=0)))]
        onto_diagonal = _align(longest, diagonal) @ frame
        yield spins @ onto_diagonal
