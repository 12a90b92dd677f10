"""Self-intersections: faces of one mesh that pass through each other.

Edge checks (``checks.py``) cannot see a surface crossing itself: two closed shells pushed into
each other, or a fold that passes through a neighbouring face, leave every edge with two faces.
A slicer cuts each layer into outlines; where the surface crosses itself the outlines cross,
and whether the overlap is filled, left empty or filled twice depends on the slicer's fill rule,
so the printed part is not the one drawn. That is why ``SELF_INTERSECTIONS`` fails.

What counts (the input is welded by ``checks.weld``; ``eps`` is ``Tolerances.merge``, the
distance under which two corners are one point):

- Faces with a repeated corner or (nearly) no area are left out: they have no plane.
- Two faces *cross* when each has corners farther than ``eps`` on both sides of the other's
  plane, and the segments where they meet the line common to both planes overlap by more than
  ``eps`` (Moeller's interval test; the segments' ends come from the signs of the distances,
  so a corner just off a nearly parallel plane does not stretch them). Touching is not
  crossing: a corner resting on a face, an edge lying in a face, faces meeting along a shared
  edge or at a shared vertex. How deep a crossing goes is how far the shallower face reaches
  through the other's plane (``Intersections.deepest_mm``).
- Faces sharing an edge never cross by that rule (both shared corners lie on the other's plane)
  and are skipped before the exact test. Faces sharing exactly one vertex are tested: a face
  folded through a neighbour in its vertex's ring crosses it beyond the shared vertex.
- Coplanar faces (each within ``eps`` of the other's plane) count when they face the same way
  and overlap by more than ``eps``: the solids behind them overlap (two bodies sharing a face
  plane, a surface drawn twice). Coplanar faces facing opposite ways are two solids touching
  along a face: not counted (the edge checks and ``MULTIPLE_BODIES`` speak for that case).

Finding the pairs (broad phase), vectorised with no Python loop per face:

- Boxes are sorted into size classes: class L holds those at most ``c * 2**L`` wide, ``c``
  being the 90th percentile of the faces' box sizes. Within a class, a box goes by its lowest
  corner into one cell of a grid of cubes of that side; two such boxes can only overlap when
  their cells are the same or neighbours (13 neighbours, each pair looked at once).
- A class meets all finer ones on its own grid: a finer box goes in by its lowest corner, a
  box of the class into every cell its box, grown below by the widest finer box, overlaps
  (two or three per axis), so each pair is made once.
- A face more than four times ``c`` across (long slivers, large flat faces of CAD exports)
  would meet everything near its box; it is searched as boxes over ``2c`` squares of its plane
  (the pairs its pieces make are tested once, as the face's). This took 3DBenchy from 500 to
  55 million candidate pairs.
- Pairs are made and tested in chunks of ``_CHUNK`` in two threads, faces are numbered in cell
  order so that lookups stay close in memory, and after ``max_pairs`` candidate pairs the
  search stops and says it is incomplete (thousands of faces piled in one spot).

A 1.3-million-face sphere takes about 1.2 s on two cores and 250 MB besides its mesh; 3DBenchy
(225,000 faces) about 1.4 s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from registry.geometry.checks import Tolerances, collapsed_faces, weld
from registry.geometry.mesh import MeshData
from registry.geometry.report import Code, GeometryReport, Severity

# Candidate pairs looked at before giving up: a 1.3-million-face sphere makes 22 million and
# 3DBenchy 55 million, tested at 20-40 million a second.
MAX_PAIRS = 200_000_000
# Crossings shallower than this (10 micrometres) are folds left by exporters (3DBenchy has
# some of 2 um): below the XY resolution of FDM, SLA and SLS alike (25 um and up), so they warn;
# deeper ones fail.
SHALLOW_CROSSING_MM = 0.01
# Crossing pairs kept as examples in the result.
SAMPLE_PAIRS = 20
# Candidate pairs made and tested at once.
_CHUNK = 1 << 18
# Size classes start at this quantile of the faces' box sizes ...
_BASE_QUANTILE = 0.9
# ... and faces over 2**_COVER_CLASSES times that are searched as boxes over pieces of their
# plane, no more boxes than faces (else the pieces are made larger).
_COVER_CLASSES = 2
# Bits per axis of a packed cell key (three fit in 63 bits); the finest grid has at most
# 2**19 cells along the part's longest side, so neighbours (one cell either side) fit too.
_AXIS_BITS = 21
_MAX_CELLS = 1 << 19
# the 13 neighbouring cells that, with a cell's own, pair each two neighbours once
_HALF = [
    (x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) > (0,) * 3
]


@dataclass(frozen=True)
class Intersections:
    """What ``self_intersections`` found.

    pair_count : face pairs that cross; faces : (k,) int64 the faces (indices into the faces
    given) in any crossing pair, sorted; sample_pairs : (s, 2) int64 up to ``SAMPLE_PAIRS`` of
    the pairs; deepest_mm : how far the deepest crossing goes (see ``_crossing``), 0 when none;
    candidate_pairs : pairs looked at; complete : False when ``max_pairs`` cut the search short
    (the counts are then a lower bound).
    """

    pair_count: int
    faces: np.ndarray
    sample_pairs: np.ndarray
    deepest_mm: float
    candidate_pairs: int
    complete: bool
    # every crossing pair (k, 2) int64 and how deep each goes (k,) float64
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    depths: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def face_count(self) -> int:
        return int(self.faces.shape[0])


@dataclass(frozen=True)
class _Faces:
    """The faces with a plane, in cell order: corner vertex ids (k, 3) into ``vertices``, unit
    normals (k, 3), plane offsets (k,) and index in the faces given (k,). The boxes searched,
    by size class and cell: lo/hi (3, b) float32 rounded outwards, the face of each (None when
    box i is face i), and per class its cell side, first and last box and sorted cell keys."""

    vertices: np.ndarray
    vids: np.ndarray
    normal: np.ndarray
    offset: np.ndarray
    face_id: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    box_face: np.ndarray | None
    classes: list[tuple[float, int, int, np.ndarray]]
    origin: np.ndarray

    def corners(self, faces: np.ndarray) -> np.ndarray:
        """(k, 9) float64 corners of ``faces``."""
        ids = np.take(self.vids, faces, axis=0).reshape(-1)
        return np.take(self.vertices, ids, axis=0).reshape(-1, 9)


# ----------------------------------------------------------------------------- boxes and cells


def _cell_keys(points: np.ndarray, origin: np.ndarray, cell: float) -> np.ndarray:
    """(k,) int64 packed cells of ``points`` (3, k), one cell of margin below zero so that a
    neighbour's key is the key plus ``_offset_key``."""
    key = np.zeros(points.shape[1], np.int64)
    for axis in range(3):
        key <<= _AXIS_BITS
        key |= np.floor((points[axis] - origin[axis]) / cell).astype(np.int64) + 1
    return key


def _offset_key(offset: tuple[int, int, int]) -> int:
    x, y, z = offset
    return (x << (2 * _AXIS_BITS)) + (y << _AXIS_BITS) + z


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct keys of ``sorted_keys`` with the start and length of each one's run."""
    new = np.empty(sorted_keys.shape[0], bool)
    new[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    start = np.flatnonzero(new)
    return sorted_keys[start], start, np.diff(start, append=sorted_keys.shape[0])


def _repeat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[0], starts[0] + 1, ... (counts[0] values), then the same for starts[1]..."""
    out = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    out += np.arange(out.shape[0])
    return out


def _cover(tri: np.ndarray, normal: np.ndarray, cap: float, limit: int):
    """Boxes no wider than ``cap`` that together hold the faces ``tri`` (k, 3, 3) with unit
    ``normal`` (k, 3): a face is seen along the axis its normal leans on most, cut into squares
    of ``cap / 2`` on the other two (squares clear of it dropped), and each box spans the face's
    plane over its square. Returns lo, hi (p, 3) and the face (row) of each; None when that
    takes more than ``limit`` boxes."""
    w = np.abs(normal).argmax(axis=1)
    axes = np.stack([(w + 1) % 3, (w + 2) % 3, w], axis=1)  # u, v, w per face
    p = np.take_along_axis(tri, axes[:, None, :], axis=2)  # (k, corner, uvw)
    low, high = p.min(axis=1), p.max(axis=1)
    step = cap / 2
    count = np.maximum(np.ceil((high[:, :2] - low[:, :2]) / step).astype(np.int64), 1)
    squares = count[:, 0] * count[:, 1]
    if int(squares.sum()) > limit:
        return None
    face = np.repeat(np.arange(tri.shape[0]), squares)
    local = _repeat_ranges(np.zeros(tri.shape[0], np.int64), squares)
    square_lo = (
        low[face, :2] + np.stack([local // count[face, 1], local % count[face, 1]], 1) * step
    )
    square_hi = np.minimum(square_lo + step, high[face, :2])
    centre, half = (square_lo + square_hi) / 2, (square_hi - square_lo) / 2
    clear = np.zeros(face.shape[0], bool)
    for c in range(3):  # a square wholly beyond one edge of the seen triangle is clear of it
        a, b, other = p[face, c, :2], p[face, (c + 1) % 3, :2], p[face, (c + 2) % 3, :2]
        out = np.stack([b[:, 1] - a[:, 1], a[:, 0] - b[:, 0]], axis=1)
        out *= np.where(np.einsum("ij,ij->i", out, other - a) > 0, -1.0, 1.0)[:, None]
        nearest = np.einsum("ij,ij->i", out, centre - a) - (np.abs(out) * half).sum(axis=1)
        clear |= nearest > 1e-6 * step * np.abs(out).sum(axis=1)
    face, square_lo, square_hi = face[~clear], square_lo[~clear], square_hi[~clear]
    # the plane's w over the square's corners, within the face's own w range
    n = np.take_along_axis(normal, axes, axis=1)[face]
    level = np.einsum("ij,ij->i", n, p[face, 0])
    corner_w = [
        (level - n[:, 0] * u - n[:, 1] * v) / n[:, 2]
        for u in (square_lo[:, 0], square_hi[:, 0])
        for v in (square_lo[:, 1], square_hi[:, 1])
    ]
    w_lo = np.maximum(np.minimum.reduce(corner_w), low[face, 2])
    w_hi = np.maximum(np.minimum(np.maximum.reduce(corner_w), high[face, 2]), w_lo)
    box_lo, box_hi = np.empty((face.shape[0], 3)), np.empty((face.shape[0], 3))
    rows = np.arange(face.shape[0])[:, None]
    box_lo[rows, axes[face]] = np.column_stack([square_lo, w_lo])
    box_hi[rows, axes[face]] = np.column_stack([square_hi, w_hi])
    return box_lo, box_hi, face


def _planes(vertices: np.ndarray, faces: np.ndarray):
    """Boxes lo, hi (3, m) and normals (m, 3) with their lengths (m,) of ``faces``, a chunk at
    a time so that the temporary arrays stay small."""
    m = faces.shape[0]
    lo, hi, normal = np.empty((3, m)), np.empty((3, m)), np.empty((m, 3))
    for start in range(0, m, 1 << 16):
        rows = slice(start, min(start + (1 << 16), m))
        tri = np.take(vertices, faces[rows].reshape(-1), axis=0).reshape(-1, 3, 3)
        lo[:, rows] = np.minimum(np.minimum(tri[:, 0], tri[:, 1]), tri[:, 2]).T
        hi[:, rows] = np.maximum(np.maximum(tri[:, 0], tri[:, 1]), tri[:, 2]).T
        normal[rows] = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return lo, hi, normal, np.sqrt(np.einsum("ij,ij->i", normal, normal))


def _prepare(vertices: np.ndarray, faces: np.ndarray, tol: Tolerances) -> _Faces:
    """The faces with a plane, and their boxes by size class and cell (``_Faces``)."""
    lo, hi, normal, length = _planes(vertices, faces)
    keep = ~collapsed_faces(faces) & (length >= 2 * tol.degenerate_area)
    normal /= np.maximum(length, 1e-300)[:, None]
    face_id = np.arange(faces.shape[0])
    if not keep.all():
        face_id = np.flatnonzero(keep)
        normal, lo, hi = normal[face_id], lo[:, face_id], hi[:, face_id]
    size = np.max(hi - lo, axis=0) if face_id.size else np.zeros(0)
    origin = lo.min(axis=1) if face_id.size else np.zeros(3)
    span = float((hi.max(axis=1) - origin).max()) if face_id.size else 1.0
    # the boxes are kept in float32 rounded outwards: the grid starts a little lower
    origin -= 1e-6 * (np.abs(origin) + span)
    base = max(float(np.quantile(size, _BASE_QUANTILE)) if face_id.size else 1.0, 1e-300)
    box_face = None
    cap = base * 2.0**_COVER_CLASSES
    while (big := np.flatnonzero(size > cap)).size:
        tri = vertices[faces[face_id[big]]]
        pieces = _cover(tri, normal[big], cap, max(face_id.size, 4 * big.size))
        if pieces is not None:
            small = np.flatnonzero(size <= cap)
            lo = np.concatenate([lo[:, small], pieces[0].T], axis=1)
            hi = np.concatenate([hi[:, small], pieces[1].T], axis=1)
            box_face = np.concatenate([small, big[pieces[2]]])
            size = np.max(hi - lo, axis=0)
            break
        cap *= 2
    # class L: boxes at most base * 2**L wide (the margin covers rounding); the finest class
    # keeps the grid under _MAX_CELLS cells across
    finest = int(np.ceil(np.log2(max(span / _MAX_CELLS, 1e-300) / base)))
    level = np.ceil(np.log2(np.maximum(size / base, 2.0**finest))).astype(np.int64)
    base *= 1 + 1e-9
    order, classes, start = [], [], 0
    for value in np.unique(level):
        members = np.flatnonzero(level == value)
        keys = _cell_keys(lo[:, members], origin, base * 2.0**value)
        by_key = np.argsort(keys)
        order.append(members[by_key])
        classes.append((base * 2.0**value, start, start + members.shape[0], keys[by_key]))
        start += members.shape[0]
    order = np.concatenate(order) if order else np.zeros(0, np.int64)
    del level, size
    # float32 rounded outwards: a box never shrinks
    lo = np.stack([np.nextafter(np.take(v, order).astype(np.float32), -np.inf) for v in lo])
    hi = np.stack([np.nextafter(np.take(v, order).astype(np.float32), np.inf) for v in hi])
    face_order = order
    if box_face is not None:  # faces numbered in the order of their first box
        box_face = box_face[order]
        _, first = np.unique(box_face, return_index=True)
        face_order = np.argsort(first)
        rank = np.empty_like(face_order)
        rank[face_order] = np.arange(face_order.shape[0])
        box_face = rank[box_face]
    normal = np.take(normal, face_order, axis=0)
    face_id = face_id[face_order]
    vids = np.take(faces, face_id, axis=0)
    return _Faces(
        vertices=vertices,
        vids=vids,
        normal=normal,
        offset=np.einsum("ij,ij->i", normal, np.take(vertices, vids[:, 0], axis=0)),
        face_id=face_id,
        lo=lo,
        hi=hi,
        box_face=box_face,
        classes=classes,
        origin=origin,
    )


# ----------------------------------------------------------------------------- candidate pairs


@dataclass(frozen=True)
class _Job:
    """Boxes a against boxes b, each sorted by cell key and given as runs (key, start, count);
    position p of a sorted list is box ``positions[p]`` (or ``first + p``). ``same``: a is b,
    each two paired once."""

    cells_a: tuple[np.ndarray, np.ndarray, np.ndarray]
    cells_b: tuple[np.ndarray, np.ndarray, np.ndarray]
    positions_a: np.ndarray | int
    positions_b: np.ndarray | int
    same: bool


def _class_job(data: _Faces, index: int) -> _Job:
    """The boxes of one class with each other, by the lowest corner's cell."""
    _, start, _, keys = data.classes[index]
    cells = _runs(keys)
    return _Job(cells, cells, start, start, same=True)


def _entries(data: _Faces, start: int, stop: int, cell: float, margin: float):
    """Every cell of the grid of ``cell`` that boxes start..stop, grown by ``margin`` below,
    overlap: sorted keys as runs, and the box of each."""
    grown = data.lo[:, start:stop].astype(np.float64) - margin
    lo = _cell_keys(grown, data.origin, cell)
    hi = _cell_keys(data.hi[:, start:stop].astype(np.float64), data.origin, cell)
    mask = (1 << _AXIS_BITS) - 1
    extra = [((hi >> shift) & mask) - ((lo >> shift) & mask) for shift in (42, 21, 0)]
    keys, boxes = [], []
    for dx in range(int(extra[0].max(initial=0)) + 1):
        for dy in range(int(extra[1].max(initial=0)) + 1):
            for dz in range(int(extra[2].max(initial=0)) + 1):
                box = np.flatnonzero((extra[0] >= dx) & (extra[1] >= dy) & (extra[2] >= dz))
                keys.append(lo[box] + _offset_key((dx, dy, dz)))
                boxes.append(box + start)
    key, box = np.concatenate(keys), np.concatenate(boxes)
    by_key = np.argsort(key)
    return _runs(key[by_key]), box[by_key]


def _finer_job(data: _Faces, index: int) -> _Job:
    """The boxes of all finer classes against one class's, on that class's grid: a finer box
    by its lowest corner's cell, a box of the class in every cell its box, grown below by the
    widest finer box, overlaps (so each pair is made once)."""
    cell, start, stop, _ = data.classes[index]
    keys = _cell_keys(data.lo[:, :start].astype(np.float64), data.origin, cell)
    by_key = np.argsort(keys)
    margin = float((data.hi[:, :start] - data.lo[:, :start]).max())
    cells_b, positions_b = _entries(data, start, stop, cell, margin * (1 + 1e-6))
    return _Job(_runs(keys[by_key]), cells_b, by_key, positions_b, same=False)


class _Budget:
    """Candidate pairs left to look at, shared by the threads."""

    def __init__(self, pairs: int) -> None:
        self.left = pairs
        self.used = 0
        self.complete = True
        self._lock = threading.Lock()

    def take(self, pairs: int) -> bool:
        with self._lock:
            if pairs > self.left:
                self.complete = False
                self.left = 0
                return False
            self.left -= pairs
            self.used += pairs
            return True


def _ranges(sizes: np.ndarray) -> Iterator[tuple[int, int]]:
    """Runs [first, last) of ``sizes`` summing to at most ``_CHUNK`` (or one item)."""
    ends = np.cumsum(sizes)
    first = 0
    while first < sizes.shape[0]:
        reached = int(ends[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(ends, reached + _CHUNK, side="right")))
        yield first, last
        first = last


def _candidates(job: _Job, offset, budget: _Budget):
    """Chunks of (a, b) box pairs in cells ``offset`` apart."""
    ua, sa, ca = job.cells_a
    ub, sb, cb = job.cells_b
    target = ua + _offset_key(offset)
    at = np.minimum(np.searchsorted(ub, target), ub.shape[0] - 1)
    hit = np.flatnonzero(ub[at] == target)
    a_start, a_count = sa[hit], ca[hit]
    at = at[hit]
    b_start, b_count = sb[at], cb[at]
    within = job.same and offset == (0, 0, 0)
    sizes = a_count * (a_count - 1) // 2 if within else a_count * b_count
    for first, last in _ranges(sizes):
        if not budget.take(int(sizes[first:last].sum())):
            return
        # one row per box of a: the run of b's boxes it is paired with
        blocks = slice(first, last)
        a = _repeat_ranges(a_start[blocks], a_count[blocks])
        b_from = np.repeat(b_start[blocks], a_count[blocks])
        b_n = np.repeat(b_count[blocks], a_count[blocks])
        if within:  # only the boxes after it in its own cell
            b_n += b_from
            b_from = a + 1
            b_n -= b_from
        for row_first, row_last in _ranges(b_n):
            rows = slice(row_first, row_last)
            pair_a = np.repeat(a[rows], b_n[rows])
            pair_b = _repeat_ranges(b_from[rows], b_n[rows])
            for pair, positions in ((pair_a, job.positions_a), (pair_b, job.positions_b)):
                if isinstance(positions, int):
                    pair += positions
                else:
                    pair[:] = positions[pair]
            yield pair_a, pair_b


# ----------------------------------------------------------------------------- exact tests


def _plane_distances(corners: np.ndarray, normal: np.ndarray, offset: np.ndarray):
    """(k, 3) signed distances of faces' ``corners`` (k, 9) from planes (``normal`` (k, 3),
    ``offset`` (k,)), and their least and greatest (k,)."""
    distance = np.empty((corners.shape[0], 3))
    for c in range(3):
        column = distance[:, c]
        np.multiply(corners[:, 3 * c], normal[:, 0], out=column)
        column += corners[:, 3 * c + 1] * normal[:, 1]
        column += corners[:, 3 * c + 2] * normal[:, 2]
        column -= offset
    low = np.minimum(np.minimum(distance[:, 0], distance[:, 1]), distance[:, 2])
    high = np.maximum(np.maximum(distance[:, 0], distance[:, 1]), distance[:, 2])
    return distance, low, high


def _interval(corners: np.ndarray, distance: np.ndarray, direction: np.ndarray):
    """Where faces with ``corners`` (k, 9), straddling a plane at ``distance`` (k, 3), meet it,
    as (low, high) positions along ``direction`` (k, 3) on the plane. The points come from the
    distances' signs, not from the tolerance: a corner just off a nearly parallel plane is not
    where the face meets it."""
    along = np.stack(
        [np.einsum("ij,ij->i", corners[:, 3 * c : 3 * c + 3], direction) for c in range(3)], axis=1
    )
    side = np.sign(distance)
    low = np.full(corners.shape[0], np.inf)
    high = np.full(corners.shape[0], -np.inf)
    for c in range(3):
        n = (c + 1) % 3
        on = side[:, c] == 0  # a corner on the plane
        low = np.where(on, np.minimum(low, along[:, c]), low)
        high = np.where(on, np.maximum(high, along[:, c]), high)
        crosses = side[:, c] * side[:, n] < 0  # an edge through it
        with np.errstate(divide="ignore", invalid="ignore"):
            at = along[:, c] + (along[:, n] - along[:, c]) * (
                distance[:, c] / (distance[:, c] - distance[:, n])
            )
        low = np.where(crosses, np.minimum(low, at), low)
        high = np.where(crosses, np.maximum(high, at), high)
    return low, high


def _coplanar_overlap(pi: np.ndarray, pj: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """(k,) how far coplanar faces with corners ``pi``, ``pj`` (k, 3, 3) in planes of
    ``normal`` overlap: the least overlap along the separating axes (the in-plane normals of
    the six edges); zero or less when they do not."""
    overlap = np.full(pi.shape[0], np.inf)
    for points in (pi, pj):
        for c in range(3):
            axis = np.cross(normal, points[:, (c + 1) % 3] - points[:, c])
            axis /= np.maximum(np.linalg.norm(axis, axis=1), 1e-300)[:, None]
            on_i = np.einsum("kcj,kj->kc", pi, axis)
            on_j = np.einsum("kcj,kj->kc", pj, axis)
            overlap = np.minimum(overlap, on_i.max(1) - on_j.min(1))
            overlap = np.minimum(overlap, on_j.max(1) - on_i.min(1))
    return overlap


def _crossing(data: _Faces, i: np.ndarray, j: np.ndarray, eps: float):
    """The pairs of faces whose candidate boxes ``i``, ``j`` overlap and that cross (see the
    module's rules), as face positions, and how deep each crossing is: how far the shallower
    face passes through the other's plane (for coplanar faces, how far they overlap)."""
    overlap = np.take(data.lo[0], i) <= np.take(data.hi[0], j)
    overlap &= np.take(data.lo[0], j) <= np.take(data.hi[0], i)
    for axis in (1, 2):
        lo, hi = data.lo[axis], data.hi[axis]
        overlap &= np.take(lo, i) <= np.take(hi, j)
        overlap &= np.take(lo, j) <= np.take(hi, i)
    i, j = i[overlap], j[overlap]
    if data.box_face is not None:  # boxes over pieces of faces: to faces, each pair once
        i, j = np.take(data.box_face, i), np.take(data.box_face, j)
        key = np.unique(np.minimum(i, j) << 32 | np.maximum(i, j))
        i, j = key >> 32, key & 0xFFFFFFFF
        i, j = i[i != j], j[i != j]
    # faces sharing an edge only touch (both shared corners lie on the other's plane)
    vi, vj = np.take(data.vids, i, axis=0), np.take(data.vids, j, axis=0)
    shared = np.zeros(i.shape[0], np.int8)
    for a in range(3):
        for b in range(3):
            shared += vi[:, a] == vj[:, b]
    i, j = i[shared < 2], j[shared < 2]

    normal_j = np.take(data.normal, j, axis=0)
    corners_i = data.corners(i)
    d_i, low, high = _plane_distances(corners_i, normal_j, np.take(data.offset, j))
    straddle_i = (high > eps) & (low < -eps)
    keep = straddle_i | ((high <= eps) & (low >= -eps))
    i, j, d_i, straddle_i = i[keep], j[keep], d_i[keep], straddle_i[keep]
    depth = np.minimum(high[keep], -low[keep])
    corners_i, normal_j = corners_i[keep], normal_j[keep]
    normal_i, corners_j = np.take(data.normal, i, axis=0), data.corners(j)
    d_j, low, high = _plane_distances(corners_j, normal_i, np.take(data.offset, i))
    straddle_j = (high > eps) & (low < -eps)
    flat_j = (high <= eps) & (low >= -eps)
    depth = np.minimum(depth, np.minimum(high, -low))

    # each face cuts through the other's plane: do the cuts overlap on the common line?
    both = np.flatnonzero(straddle_i & straddle_j)
    direction = np.cross(normal_i[both], normal_j[both])
    direction /= np.maximum(np.linalg.norm(direction, axis=1), 1e-300)[:, None]
    low_i, high_i = _interval(corners_i[both], d_i[both], direction)
    low_j, high_j = _interval(corners_j[both], d_j[both], direction)
    crossing = both[np.minimum(high_i, high_j) - np.maximum(low_i, low_j) > eps]

    # coplanar (what is left of i is flat on j's plane): facing the same way and overlapping
    flat = np.flatnonzero(~straddle_i & flat_j)
    flat = flat[np.einsum("ij,ij->i", normal_i[flat], normal_j[flat]) > 0]
    pi, pj = corners_i[flat].reshape(-1, 3, 3), corners_j[flat].reshape(-1, 3, 3)
    overlap = _coplanar_overlap(pi, pj, normal_j[flat])
    flat, overlap = flat[overlap > eps], overlap[overlap > eps]
    found = np.concatenate([crossing, flat])
    return i[found], j[found], np.concatenate([depth[crossing], overlap])


# ----------------------------------------------------------------------------- public


def self_intersections(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    tol: Tolerances = Tolerances(),
    max_pairs: int = MAX_PAIRS,
    parallel: bool = True,
) -> Intersections:
    """The face pairs of welded ``faces`` (m, 3) over ``vertices`` (n, 3) float64 that cross.

    Welding first (``checks.weld``) lets pairs sharing an edge be skipped by their indices;
    unwelded input gives the same answer, more slowly. With ``parallel`` two threads test the
    chunks (numpy lets go of the GIL).
    """
    data = _prepare(vertices, np.asarray(faces), tol)
    budget = _Budget(max_pairs)
    class_jobs = [_class_job(data, index) for index in range(len(data.classes))]

    def run(task) -> list[tuple[np.ndarray, np.ndarray]]:
        index, offset = task
        job = class_jobs[index] if offset else _finer_job(data, index)
        pairs = _candidates(job, offset or (0, 0, 0), budget)
        return [_crossing(data, a, b, tol.merge) for a, b in pairs]

    tasks = [(index, None) for index in range(1, len(class_jobs))]
    tasks += [(index, offset) for index in range(len(class_jobs)) for offset in [(0, 0, 0), *_HALF]]
    if parallel:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = [found for chunk in pool.map(run, tasks) for found in chunk]
    else:
        results = [found for task in tasks for found in run(task)]
    i, j, depth = (
        np.concatenate([r[k] for r in results]) if results else np.zeros(0, int) for k in range(3)
    )
    i, j = data.face_id[i], data.face_id[j]
    found, which = np.unique(
        np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1), axis=0, return_inverse=True
    )
    depths = np.zeros(found.shape[0])
    np.maximum.at(depths, which.ravel(), np.asarray(depth, float))
    return Intersections(
        pair_count=int(found.shape[0]),
        faces=np.unique(found).astype(np.int64),
        sample_pairs=found[:SAMPLE_PAIRS].astype(np.int64),
        deepest_mm=float(depth.max(initial=0.0)),
        candidate_pairs=budget.used,
        complete=budget.complete,
        pairs=found.astype(np.int64),
        depths=depths,
    )


def _body_of_face(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """(m,) the connected piece each face belongs to (faces sharing a vertex are one piece)."""
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_array(
        (np.ones(rows.shape[0], np.int8), (rows, cols)), shape=(vertex_count, vertex_count)
    )
    _, label = connected_components(graph, directed=True, connection="weak")
    return label[faces[:, 0]]


def check_self_intersections(
    mesh: MeshData,
    report: GeometryReport,
    welded: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    tol: Tolerances = Tolerances(),
    max_pairs: int = MAX_PAIRS,
) -> Intersections:
    """Add ``SELF_INTERSECTIONS`` to ``report`` when faces of ``mesh`` cross, and set
    ``metrics.self_intersecting_faces``. ``welded`` is ``checks.weld``'s result when the caller
    has it. The mesh must be non-empty with finite coordinates (what ``check_mesh`` passes)."""
    vertices, faces = welded if welded is not None else weld(mesh.vertices, mesh.faces, tol)
    found = self_intersections(vertices, faces, tol=tol, max_pairs=max_pairs)
    report.metrics.self_intersecting_faces = found.face_count
    if not found.complete:
        report.metrics.self_intersections_complete = False
    body = _body_of_face(faces, vertices.shape[0]) if found.pair_count else None
    within = body[found.pairs[:, 0]] == body[found.pairs[:, 1]] if body is not None else None
    at_least = "" if found.complete else "at least "
    if within is not None and within.any():
        pairs, depths = found.pairs[within], found.depths[within]
        crossing_faces = np.unique(pairs)
        deepest = float(depths.max())
        shallow = deepest < SHALLOW_CROSSING_MM
        consequence = (
            f"all shallower than {SHALLOW_CROSSING_MM} mm, finer than any process resolves: "
            "slicers close such folds"
            if shallow
            else "a slicer cannot tell inside from outside there"
        )
        report.add(
            Code.SELF_INTERSECTIONS,
            Severity.WARN if shallow else Severity.FAIL,
            f"The surface passes through itself: {at_least}{len(pairs)} pairs of faces "
            f"({len(crossing_faces)} faces) cross, by up to {deepest:.2g} mm; {consequence}.",
            pairs=len(pairs),
            faces=len(crossing_faces),
            deepest_mm=round(deepest, 6),
            sample_faces=[int(f) for f in crossing_faces[:10]],
            complete=found.complete,
        )
    if within is not None and not within.all():
        between = found.pairs[~within]
        bodies = np.unique(body[between])
        report.add(
            Code.OVERLAPPING_BODIES,
            Severity.WARN,
            f"{len(bodies)} separate bodies pass through each other ({at_least}{len(between)} "
            f"pairs of faces cross, by up to {float(found.depths[~within].max()):.2g} mm): "
            "slicers merge overlapping bodies into one solid; check that is what is meant.",
            bodies=len(bodies),
            pairs=len(between),
            deepest_mm=round(float(found.depths[~within].max()), 6),
        )
    if not found.pair_count and not found.complete:
        report.add(
            Code.SELF_INTERSECTIONS,
            Severity.INFO,
            f"Only {found.candidate_pairs} of the candidate face pairs were checked for "
            "self-intersections (too many overlap); none of them cross.",
            pairs=0,
            complete=False,
        )
    return found
