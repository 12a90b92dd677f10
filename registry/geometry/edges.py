"""Topology of a welded mesh: how its faces use their edges, its bodies, its repeated faces.

Each of these groups equal integer pairs: an edge's uses, a face's sorted corners. Instead of
sorting packed keys (numpy sorts 64-bit integers at about 60 ns each here), the pairs become
the entries of a scipy sparse matrix, one row per vertex: converting COO to CSR places them by
row with a counting sort in C, each row's handful of entries is then sorted and duplicates are
summed. The summed values count the uses, and the CSR array is the vertex graph the bodies are
labelled on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array, csr_array
from scipy.sparse.csgraph import connected_components

from registry.geometry.weld import CHUNK

# A directed edge's value: 1, plus 2**31 when it runs from the higher vertex to the lower one.
# Summed in uint32 (modulo 2**32) over an edge's uses, the low 31 bits count the uses (fewer
# than 2**31 faces) and the top bit says whether an odd number of them are reversed.
_USES = np.uint32((1 << 31) - 1)
_REVERSED = np.uint32(31)


@dataclass(frozen=True)
class EdgeCounts:
    """How the faces use their edges.

    open_edges : (k, 2) int64 — vertex pairs of edges used by one face;
    non_manifold_edges : (j, 2) int64 — edges used by more than two faces;
    inconsistent_edges : (i, 2) int64 — two-face edges both faces walk the same way;
    graph : (n, n) CSR array — every edge once, from its lower vertex (row) to its higher one
        (column, sorted within the row); its uint32 value holds its uses (``uses``).
    Each list of pairs is sorted, lower vertex first.
    """

    open_edges: np.ndarray
    non_manifold_edges: np.ndarray
    inconsistent_edges: np.ndarray
    graph: csr_array

    @property
    def uses(self) -> np.ndarray:
        """(e,) uint32: how many faces use each edge of ``graph``, in its order."""
        return self.graph.data & _USES


def _pairs(graph: csr_array, positions: np.ndarray) -> np.ndarray:
    """(k, 2) int64 (row, column) of the entries at ``positions`` (k,) of ``graph``'s arrays."""
    rows = np.searchsorted(graph.indptr, positions, side="right") - 1
    return np.stack([rows, graph.indices[positions]], axis=1).astype(np.int64)


def analyse_edges(faces: np.ndarray, vertex_count: int) -> EdgeCounts:
    """Count the uses of every undirected edge of welded ``faces`` (m, 3) int.

    Each directed edge is an entry (lower vertex, higher vertex) worth ``1`` plus ``2**31`` when
    it runs from the higher vertex to the lower one; summing an edge's entries gives its uses
    and, for a two-face edge, whether the faces walk it both ways (one reversed use) or not.
    """
    if vertex_count >= 1 << 31:
        raise ValueError("more than 2**31 vertices: edge indices would overflow")
    m = faces.shape[0]
    low = np.empty((3, m), np.int32)
    high = np.empty((3, m), np.int32)
    value = np.empty((3, m), np.uint32)
    for start in range(0, m, CHUNK):
        chunk = faces[start : start + CHUNK]
        stop = start + chunk.shape[0]
        for corner in range(3):
            a, b = chunk[:, corner], chunk[:, (corner + 1) % 3]
            np.minimum(a, b, out=low[corner, start:stop])
            np.maximum(a, b, out=high[corner, start:stop])
            reversed_use = value[corner, start:stop]
            np.greater(a, b, out=reversed_use, casting="unsafe")
            reversed_use <<= _REVERSED
            reversed_use += 1
    graph = coo_array(
        (value.reshape(-1), (low.reshape(-1), high.reshape(-1))), shape=(vertex_count,) * 2
    ).tocsr()
    del low, high, value
    uses = graph.data & _USES
    # both walked the same way: no reversed use or two, an even number
    inconsistent = (uses == 2) & (graph.data >> _REVERSED == 0)
    return EdgeCounts(
        open_edges=_pairs(graph, np.flatnonzero(uses == 1)),
        non_manifold_edges=_pairs(graph, np.flatnonzero(uses > 2)),
        inconsistent_edges=_pairs(graph, np.flatnonzero(inconsistent)),
        graph=graph,
    )


def count_non_manifold_with(edges: EdgeCounts, faces: np.ndarray, vertex_count: int) -> int:
    """How many edges are non-manifold once ``faces`` (k, 3), a few more faces over the same
    vertices, are counted with those ``edges`` was made of; as ``analyse_edges`` of all of them
    would say, without counting the others again."""
    added = analyse_edges(faces, vertex_count).graph.tocoo()
    before = edges.graph[added.row, added.col] & _USES
    after = before + (added.data & _USES)
    return int(
        edges.non_manifold_edges.shape[0]
        - np.count_nonzero(before > 2)
        + np.count_nonzero(after > 2)
    )


def count_bodies(faces: np.ndarray, edges: EdgeCounts, vertex_count: int) -> int:
    """How many connected pieces ``faces`` (m, 3) int make: faces that share a vertex (and so
    any edge) are one body. ``edges`` are the faces' edges from ``analyse_edges``."""
    if faces.shape[0] == 0:
        return 0
    count, label = connected_components(edges.graph, directed=True, connection="weak")
    # vertices no face here uses are pieces of their own: count only the faces' pieces
    return int(np.count_nonzero(np.bincount(label[faces[:, 0]], minlength=count)))


def collapsed_faces(faces: np.ndarray) -> np.ndarray:
    """(m,) bool: faces of welded ``faces`` (m, 3) int whose corners repeat a vertex."""
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    return (a == b) | (b == c) | (a == c)


def count_duplicate_faces(faces: np.ndarray, vertex_count: int) -> int:
    """How many faces of welded ``faces`` (m, 3) int repeat an earlier face's vertex set.

    A face is the entry (lowest corner, middle corner * vertex_count + highest corner); the
    entries left once duplicates are summed are the distinct faces.
    """
    m = faces.shape[0]
    if m == 0:
        return 0
    low = np.empty(m, faces.dtype)
    rest = np.empty(m, np.int64)
    for start in range(0, m, CHUNK):
        chunk = faces[start : start + CHUNK]
        stop = start + chunk.shape[0]
        a, b, c = chunk[:, 0], chunk[:, 1], chunk[:, 2]
        lowest = np.minimum(np.minimum(a, b), c)
        highest = np.maximum(np.maximum(a, b), c)
        low[start:stop] = lowest
        # the middle corner is the one that is neither (exact, no overflow)
        middle = rest[start:stop]
        np.bitwise_xor(a ^ b ^ c, lowest ^ highest, out=middle, casting="unsafe")
        middle *= vertex_count
        middle += highest
    distinct = coo_array(
        (np.ones(m, np.int32), (low, rest)), shape=(vertex_count, vertex_count**2)
    ).tocsr()
    return int(m - distinct.nnz)
