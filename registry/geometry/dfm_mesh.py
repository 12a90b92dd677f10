"""The welded mesh the process checks share, and the topology they read from it.

The readers give STL triangles their own three corners; the process checks need to know which
faces meet (shells for trapped volumes, the two faces of an edge for internal corners, the
outline of a sheet), so they weld once with the mesh checks' tolerance (``checks.weld``) and
leave out faces whose corners collapsed to one point, as the mesh checks do. The ray engine
(Embree through trimesh where it installs, an R-tree otherwise) is built once on the welded
mesh, which has a third of the vertices and builds about twice as fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.geometry.checks import Tolerances, collapsed_faces, weld
from registry.geometry.mesh import MeshData

# Faces handled at once by the chunked loops.
_CHUNK = 1 << 16


@dataclass
class Solid:
    """A closed mesh ready for the process checks.

    vertices : (n, 3) float64 mm, welded; faces : (m, 3) int64, none collapsed;
    normals : (m, 3) unit normals (zero for faces without area); areas : (m,) mm2.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    areas: np.ndarray
    _ray: Any = field(default=None, repr=False)

    @classmethod
    def from_mesh(cls, mesh: MeshData, tol: Tolerances = Tolerances()) -> Solid:
        vertices, faces = weld(mesh.vertices, mesh.faces, tol)
        faces = faces[~collapsed_faces(faces)].astype(np.int64)
        normals = np.empty((faces.shape[0], 3))
        areas = np.empty(faces.shape[0])
        for start in range(0, faces.shape[0], _CHUNK):
            chunk = faces[start : start + _CHUNK]
            p0, p1, p2 = (np.take(vertices, chunk[:, corner], axis=0) for corner in range(3))
            cross = np.cross(p1 - p0, p2 - p0)
            doubled = np.sqrt(np.einsum("ij,ij->i", cross, cross))
            safe = np.where(doubled > 0, doubled, 1.0)
            normals[start : start + chunk.shape[0]] = cross / safe[:, None]
            areas[start : start + chunk.shape[0]] = doubled / 2
        return cls(vertices, faces, normals, areas)

    @property
    def face_count(self) -> int:
        return int(self.faces.shape[0])

    def corners(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(k, 3, 3) corners of the faces ``rows`` selects."""
        return self.vertices[self.faces[rows]]

    def centres(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(k, 3) centres of the faces ``rows`` selects."""
        return self.corners(rows).mean(axis=1)

    @property
    def ray(self):
        """trimesh's ray engine over this mesh, built on first use."""
        if self._ray is None:
            import trimesh

            self._ray = trimesh.Trimesh(self.vertices, self.faces, process=False).ray
        return self._ray


def sample_faces(areas: np.ndarray, rows: np.ndarray, limit: int, seed: int = 0):
    """At most ``limit`` of the faces ``rows``, drawn with probability proportional to their
    area (with replacement), so that the share of drawn faces with a property estimates the
    share of the area that has it. All of ``rows`` when there are no more than ``limit``.
    Returns (sampled face indices, weights): the weights are the faces' areas when every face
    is kept, else all ones (each draw stands for an equal share of the area)."""
    if rows.shape[0] <= limit:
        return rows, areas[rows]
    weights = areas[rows]
    cumulative = np.cumsum(weights)
    draws = np.random.default_rng(seed).random(limit) * cumulative[-1]
    picked = rows[np.minimum(np.searchsorted(cumulative, draws, side="right"), rows.shape[0] - 1)]
    return picked, np.ones(limit)


@dataclass(frozen=True)
class EdgeFaces:
    """Every edge shared by exactly two faces, once.

    start, end : (e,) int64 vertex indices, as the first face walks the edge;
    first, second : (e,) int64 the two faces (``second`` walks it from ``end`` to ``start`` on a
    consistently wound mesh); first_apex, second_apex : (e,) int64 the vertex of each face
    opposite the edge.
    """

    start: np.ndarray
    end: np.ndarray
    first: np.ndarray
    second: np.ndarray
    first_apex: np.ndarray
    second_apex: np.ndarray


def _sort_order(keys: np.ndarray, key_bits: int) -> np.ndarray:
    """The order that sorts non-negative int64 ``keys`` (a stable argsort). When the key and the
    row number fit in 63 bits together they are packed and sorted as plain integers, which
    numpy does several times faster than an argsort."""
    count = keys.shape[0]
    index_bits = max(1, (count - 1).bit_length())
    if key_bits + index_bits > 63:
        return np.argsort(keys, kind="stable")
    packed = keys << index_bits
    packed |= np.arange(count, dtype=np.int64)
    packed.sort()
    packed &= (1 << index_bits) - 1
    return packed


def directed_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, apex) of the 3m edges of ``faces`` (m, 3) as the faces walk them: edge
    ``3 * f + c`` runs from corner c of face f to the next corner, ``apex`` the third corner."""
    return faces.ravel(), faces[:, [1, 2, 0]].ravel(), faces[:, [2, 0, 1]].ravel()


def edge_faces(faces: np.ndarray, vertex_count: int, keep: np.ndarray | None = None) -> EdgeFaces:
    """Pair the faces of every edge of welded ``faces`` (m, 3) int64 that exactly two faces use
    (on a closed manifold mesh: every edge). Edges used once or more than twice are left out.
    ``keep`` (3m,) bool, indexed as ``directed_edges``, limits the pairing to the edges it
    selects (both walks of an edge must be selected for it to pair)."""
    start, end, apex = directed_edges(faces)
    rows = np.arange(start.shape[0]) if keep is None else np.flatnonzero(keep)
    start, end, apex = start[rows], end[rows], apex[rows]
    n = np.int64(vertex_count)
    keys = np.minimum(start, end) * n + np.maximum(start, end)
    order = _sort_order(keys, 2 * max(1, int(vertex_count - 1).bit_length()))
    sorted_keys = keys[order]
    same_as_next = sorted_keys[1:] == sorted_keys[:-1]
    # a pair is two equal keys whose run is exactly two long
    first_of_pair = np.flatnonzero(same_as_next)
    if first_of_pair.shape[0]:
        before = np.zeros_like(first_of_pair, dtype=bool)
        before[first_of_pair > 0] = same_as_next[first_of_pair[first_of_pair > 0] - 1]
        after_index = first_of_pair + 1
        after = np.zeros_like(before)
        inside = after_index < same_as_next.shape[0]
        after[inside] = same_as_next[after_index[inside]]
        first_of_pair = first_of_pair[~before & ~after]
    a = order[first_of_pair]
    b = order[first_of_pair + 1]
    return EdgeFaces(
        start=start[a],
        end=end[a],
        first=rows[a] // 3,
        second=rows[b] // 3,
        first_apex=apex[a],
        second_apex=apex[b],
    )
