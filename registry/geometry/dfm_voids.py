"""Trapped volumes: closed voids inside a part, where SLA keeps uncured resin and SLS keeps
unsintered powder.

Decisions:

- A shell is a connected piece of the welded mesh (faces sharing a vertex). On a closed,
  consistently wound mesh a solid's shell encloses a positive signed volume and a void's shell,
  wound inward, a negative one.
- A negative shell is a void only when it lies inside material: the winding number of the
  other shells at a point of it is at least one. A negative shell that lies in the open is an
  inside-out body, which the mesh checks report, not a trapped volume.
- The winding number is counted along one ray: the signed crossings of the faces above the
  point. The ray leans slightly off the vertical (a shear of irrational-looking slopes), so it
  does not run along the edges and faces of axis-aligned CAD parts; the faces it may cross are
  found by their bounding boxes in the sheared frame, vectorised over the whole mesh.
- The ``MAX_TESTED_VOIDS`` largest negative shells are tested that way (each test reads every
  face once); any further ones count as voids when their bounding box lies inside the box of
  one of the as many largest solid shells, which keeps a mesh with thousands of inner shells
  (a scanned foam) bounded in time.
- Shells with less than ``MIN_VOID_MM3`` of volume are slivers left by a boolean operation,
  not cavities anything could fill.
- A void's volume is what its shell encloses: a loose body inside it (a rattle) is a solid
  shell of its own and is not subtracted.
- Only closed voids are found. A cavity open to the outside drains through its opening;
  whether that opening faces the right way in the printer (a cup opening toward an SLA build
  plate holds a suction) is not judged here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

MIN_VOID_MM3 = 1e-3
MAX_TESTED_VOIDS = 64
# Slopes of the ray that counts crossings: far from any simple ratio a CAD part would use.
_SHEAR = (0.1372549, 0.0561798)
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Voids:
    """The enclosed voids of a part: their volumes in mm3, largest first."""

    volumes_mm3: np.ndarray

    @property
    def count(self) -> int:
        return int(self.volumes_mm3.shape[0])

    @property
    def total_mm3(self) -> float:
        return float(self.volumes_mm3.sum())


def shells(faces: np.ndarray, vertex_count: int) -> tuple[int, np.ndarray]:
    """The number of shells of welded ``faces`` (m, 3) and each face's shell (m,) int64."""
    a = np.concatenate([faces[:, 0], faces[:, 1]])
    b = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_array(
        (np.ones(a.shape[0], np.int8), (a, b)), shape=(vertex_count, vertex_count)
    ).tocsr()
    count, vertex_label = connected_components(graph, directed=True, connection="weak")
    face_label = vertex_label[faces[:, 0]]
    if count == 1:
        return 1, face_label.astype(np.int64)
    # number the shells that have faces 0..k-1 (a vertex only collapsed faces used has none)
    present, face_label = np.unique(face_label, return_inverse=True)
    return int(present.shape[0]), face_label.astype(np.int64)


def shell_volumes(
    vertices: np.ndarray, faces: np.ndarray, label: np.ndarray, count: int
) -> np.ndarray:
    """(count,) signed volume (mm3) of each shell: tetrahedra from each face to the centre of
    the part's bounding box (the volume of a closed shell does not depend on that point)."""
    reference = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    six = np.zeros(count)
    for start in range(0, faces.shape[0], _CHUNK):
        chunk = faces[start : start + _CHUNK]
        p0, p1, p2 = (np.take(vertices, chunk[:, c], axis=0) - reference for c in range(3))
        det = np.einsum("ij,ij->i", p0, np.cross(p1, p2))
        six += np.bincount(label[start : start + _CHUNK], weights=det, minlength=count)
    return six / 6


def _shell_bounds(vertices: np.ndarray, faces: np.ndarray, label: np.ndarray, count: int):
    """(count, 3) lower and upper corners of each shell's bounding box."""
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(count))
    low = np.empty((count, 3))
    high = np.empty((count, 3))
    for axis in range(3):
        values = vertices[faces[order], axis]
        low[:, axis] = np.minimum.reduceat(values.min(axis=1), starts)
        high[:, axis] = np.maximum.reduceat(values.max(axis=1), starts)
    return low, high


class _Crossings:
    """Counts signed crossings of a sheared vertical ray with the faces of a mesh."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        sheared = vertices[:, :2] - vertices[:, 2:3] * np.array(_SHEAR)
        self.vertices = vertices
        self.sheared = sheared
        self.faces = faces
        corners = sheared[faces]  # (m, 3, 2)
        self.low = corners.min(axis=1)
        self.high = corners.max(axis=1)

    def winding(self, point: np.ndarray, skip: np.ndarray) -> int:
        """The winding number at ``point`` (3,) of every face where ``skip`` (m,) is False."""
        x, y = point[:2] - point[2] * np.array(_SHEAR)
        near = (
            (self.low[:, 0] <= x)
            & (self.high[:, 0] >= x)
            & (self.low[:, 1] <= y)
            & (self.high[:, 1] >= y)
        )
        near &= ~skip
        rows = np.flatnonzero(near)
        if rows.shape[0] == 0:
            return 0
        tri = self.faces[rows]
        a, b, c = (self.sheared[tri[:, k]] for k in range(3))

        def edge(p, q):  # twice the signed area of (p, q, point)
            return (q[:, 0] - p[:, 0]) * (y - p[:, 1]) - (q[:, 1] - p[:, 1]) * (x - p[:, 0])

        w_c, w_a, w_b = edge(a, b), edge(b, c), edge(c, a)
        inside = ((w_a > 0) & (w_b > 0) & (w_c > 0)) | ((w_a < 0) & (w_b < 0) & (w_c < 0))
        total = w_a + w_b + w_c
        z = self.vertices[:, 2]
        height = (w_a * z[tri[:, 0]] + w_b * z[tri[:, 1]] + w_c * z[tri[:, 2]]) / np.where(
            total != 0, total, 1.0
        )
        crossed = inside & (height > point[2])
        return int(np.sign(total[crossed]).sum())


def find_voids(vertices: np.ndarray, faces: np.ndarray) -> Voids:
    """The voids enclosed in the closed, consistently wound mesh ``faces`` (m, 3) int64 over
    welded ``vertices`` (n, 3)."""
    none = Voids(np.zeros(0))
    if faces.shape[0] == 0:
        return none
    count, label = shells(faces, vertices.shape[0])
    if count == 1:
        return none
    volumes = shell_volumes(vertices, faces, label, count)
    negative = np.flatnonzero(volumes < -MIN_VOID_MM3)
    if negative.shape[0] == 0:
        return none
    negative = negative[np.argsort(volumes[negative])]  # largest void first
    tested, rest = negative[:MAX_TESTED_VOIDS], negative[MAX_TESTED_VOIDS:]
    crossings = _Crossings(vertices, faces)
    _, first_face = np.unique(label, return_index=True)
    enclosed = []
    for shell in tested:
        point = vertices[faces[first_face[shell], 0]]
        if crossings.winding(point, label == shell) >= 1:
            enclosed.append(shell)
    if rest.shape[0]:
        low, high = _shell_bounds(vertices, faces, label, count)
        solid = np.flatnonzero(volumes > 0)
        solid = solid[np.argsort(volumes[solid])[::-1][:MAX_TESTED_VOIDS]]
        inside = (low[rest, None] >= low[None, solid]).all(axis=2) & (
            high[rest, None] <= high[None, solid]
        ).all(axis=2)
        enclosed.extend(rest[inside.any(axis=1)])
    return Voids(np.sort(-volumes[np.array(enclosed, np.int64)])[::-1])
