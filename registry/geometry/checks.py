"""Mesh checks: is a triangle mesh a solid a fablab can make, and how big is it?

Pure functions over numpy arrays, vectorised (no Python loop per triangle or edge), so a
million-triangle file is checked in about the time ``admesh`` takes (bench/bench_geometry.py):

- ``weld`` merges coincident corners (STL gives every triangle its own three);
- ``analyse_edges`` counts how often each undirected edge is used: once is an open (boundary)
  edge, more than twice a non-manifold one, and a two-face edge walked the same way by both
  faces means the faces disagree about which side is outside;
- ``collapsed_faces`` and ``count_duplicate_faces`` find faces with no surface or twice over;
- ``count_bodies`` labels the connected pieces, ``measure`` gives volume, area, bounding box and
  centre of mass, ``units_suspect`` guesses a units mistake from the part's size;
- ``check_mesh`` runs them all and fills a ``GeometryReport``.

Self-intersections are not looked for here: edge topology cannot see two closed shells passing
through each other, so that check runs separately on manifold3d.

Grouping equal rows (welding, duplicate faces) sorts 64-bit hashes with the row number packed
into the low bits, which lets numpy sort plain integers instead of running an argsort (several
times faster); rows whose hashes collide are then told apart exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from registry.geometry.mesh import MeshData
from registry.geometry.report import Code, GeometryReport, Metrics, Severity, Verdict

CHECKER_VERSION = "geometry-1"

# Rows handled at once by the chunked loops: their temporaries stay in the CPU cache.
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Tolerances:
    """Every threshold the mesh checks use, in millimetres."""

    # Corners closer than this are one vertex. Far below any process's resolution (FDM and SLA
    # resolve ~10-50 um), yet above the float32 rounding of STL coordinates for parts under ~1 m
    # (one float32 step at 1000 mm is 6e-5 mm).
    merge: float = 1e-4
    # A face with less area than this (mm2) is degenerate: 1e-8 mm2 is a 0.1 um x 0.2 um
    # triangle, so only faces whose corners are (nearly) collinear or coincident fall below it.
    degenerate_area: float = 1e-8
    # Units sanity. The smallest features FDM (0.4 mm nozzle) and hobby SLA (~0.05-0.1 mm)
    # can make are a few tenths of a millimetre, so a whole part under 0.5 mm across is almost
    # always a file drawn in metres, inches or centimetres and read as millimetres. The largest
    # machines a fablab has are a few metres (a CNC router for 2440 x 1220 mm sheets, large
    # format printers around 1 m), so a part over 5 m is almost always drawn in micrometres or
    # tenths of a millimetre.
    min_part_size: float = 0.5
    max_part_size: float = 5000.0
    # When several factors bring a suspect part into range, the one that lands its largest
    # dimension closest (on a log scale) to this typical size of a fablab part wins.
    typical_part_size: float = 50.0
    # (unit the file was probably drawn in, factor that turns its numbers into mm).
    unit_factors: tuple[tuple[str, float], ...] = (
        ("m", 1000.0),
        ("in", 25.4),
        ("cm", 10.0),
        ("0.1 mm", 0.1),
        ("mm declared as inches", 1 / 25.4),
        ("um", 0.001),
    )


# ----------------------------------------------------------------------------- grouping rows

_U64 = np.uint64
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_ROW_PRIMES = (_U64(0x9E3779B97F4A7C15), _U64(0xC2B2AE3D27D4EB4F), _U64(0x165667B19E3779F9))

# ``column(axis, rows)``: the exact int64 values of one column of the rows being grouped, for
# the rows ``rows`` selects (a slice or an index array).
Column = Callable[[int, slice | np.ndarray], np.ndarray]


def _mix(code: np.ndarray) -> np.ndarray:
    """Scramble (k,) uint64 in place so that the top bits depend on every bit; a bijection."""
    code ^= code >> _U64(31)
    code *= _MIX
    code ^= code >> _U64(29)
    return code


def _codes(column: Column, rows: slice | np.ndarray, widths: list[int] | None) -> np.ndarray:
    """(k,) uint64 codes of three-column rows: the row packed into 64 bits when ``widths``
    (bits per column) says it fits, else a hash; then mixed."""
    code = column(0, rows).view(np.uint64)
    for axis in (1, 2):
        values = column(axis, rows).view(np.uint64)
        if widths is None:
            code *= _ROW_PRIMES[axis]
            code += values
        else:
            code <<= _U64(widths[axis])
            code |= values
    return _mix(code)


def group_rows(
    count: int, column: Column, widths: list[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Number equal rows alike.

    ``column`` gives the ``count`` rows, three int64 columns; ``widths`` are the bits each
    column needs when the three fit in 64 bits together (then a row's code is the row itself),
    or None (then the code is a hash and equal codes are checked against the rows).
    Returns ``group`` (count,) int64, each row's group numbered in the order of the groups'
    first rows, and ``first`` (g,) int64, the first row of each group.

    Sorting int64 is several times faster than an argsort: the sort keys are the codes' top
    bits with the row number packed into the low bits, and the order is read back from them.
    Rows whose kept bits match but that differ are told apart afterwards (rare).
    """
    if count == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index_bits = max(1, (count - 1).bit_length())
    keys = np.empty(count, np.uint64)
    for start in range(0, count, _CHUNK):
        part = keys[start : start + _CHUNK]
        part[:] = _codes(column, slice(start, start + part.shape[0]), widths)
        part >>= _U64(index_bits)
        part <<= _U64(index_bits)
        part |= np.arange(start, start + part.shape[0], dtype=np.uint64)
    keys = keys.view(np.int64)
    keys.sort()
    order = keys & ((1 << index_bits) - 1)
    keys >>= index_bits
    new_group = np.empty(count, bool)
    new_group[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new_group[1:])
    sorted_group = np.cumsum(new_group, out=keys)
    sorted_group -= 1
    group = np.empty(count, np.int64)
    group[order] = sorted_group
    del sorted_group, keys
    first = order[new_group]
    del order, new_group
    # every row must equal its group's first row
    differs = np.zeros(count, bool)
    if widths is not None:
        first_code = _codes(column, first, widths)
        for start in range(0, count, _CHUNK):
            rows = slice(start, start + _CHUNK)
            differs[rows] = np.take(first_code, group[rows]) != _codes(column, rows, widths)
    else:
        for axis in range(3):
            first_value = column(axis, first)
            for start in range(0, count, _CHUNK):
                rows = slice(start, start + _CHUNK)
                differs[rows] |= np.take(first_value, group[rows]) != column(axis, rows)
    if differs.any():
        group, first = _split_groups(group, differs, column)
    return _number_by_first_row(group, first)


def _number_by_first_row(group: np.ndarray, first: np.ndarray):
    """Renumber groups in the order of their first rows, so that neighbouring rows of the input
    (the corners of neighbouring triangles) get nearby numbers: the steps that follow look
    vertices up far faster when neighbours sit close together in memory."""
    bits = max(1, (first.shape[0] - 1).bit_length())
    keys = first << bits
    keys |= np.arange(first.shape[0])
    keys.sort()
    old_number = keys & ((1 << bits) - 1)
    new_number = np.empty(first.shape[0], np.int64)
    new_number[old_number] = np.arange(first.shape[0])
    keys >>= bits
    return np.take(new_number, group), keys


def _split_groups(group: np.ndarray, differs: np.ndarray, column: Column):
    """Regroup, by the rows themselves, every row of a group that holds different rows."""
    rows = np.flatnonzero(np.isin(group, group[differs]))
    exact_rows = np.stack([column(axis, rows) for axis in range(3)], axis=1)
    _, sub_group = np.unique(exact_rows, axis=0, return_inverse=True)
    group = group.copy()
    group[rows] = int(group.max()) + 1 + sub_group.ravel()
    # renumber 0..g-1 (the split groups' old numbers are gone)
    present = np.zeros(int(group.max()) + 1, bool)
    present[group] = True
    group = (np.cumsum(present) - 1)[group]
    first = np.empty(int(np.count_nonzero(present)), np.int64)
    first[group] = np.arange(group.shape[0])
    return group, first


# ----------------------------------------------------------------------------- welding


def _cells(values: np.ndarray, scale: float, origin: int) -> np.ndarray:
    """(k,) int64: the grid cells of coordinates ``values`` (k,) along one axis (float32
    coordinates are scaled in float64: the grid is finer than float32 resolves)."""
    values = np.multiply(values, scale, dtype=np.float64)
    np.rint(values, out=values)
    cells = values.astype(np.int64)
    cells -= origin
    return cells


def _bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3,) minimum and (3,) maximum of ``points`` (n, 3); a column at a time, which numpy
    reduces several times faster than ``points.min(axis=0)``."""
    low = np.array([points[:, axis].min() for axis in range(3)])
    high = np.array([points[:, axis].max() for axis in range(3)])
    return low, high


def weld(vertices: np.ndarray, faces: np.ndarray, tol: Tolerances) -> tuple[np.ndarray, np.ndarray]:
    """Merge corners that fall in the same cell of a grid of ``tol.merge`` mm.

    vertices : (n, 3) float64, finite; faces : (m, 3) int64.
    Returns ``unique_vertices`` (u, 3) float64 — only vertices some face uses — and
    ``faces`` (m, 3) int32 indexing them (int64 past 2**31 vertices, which halves the memory
    the later checks need).
    """
    if faces.shape[0] == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    used = np.zeros(vertices.shape[0], bool)
    used[faces.ravel()] = True
    kept = None if used.all() else np.flatnonzero(used)
    corners = vertices if kept is None else np.take(vertices, kept, axis=0)
    del used
    # the grid widens for coordinates so large that tol.merge would overflow 64-bit integers
    low, high = _bounds(corners)
    step = max(tol.merge, float(np.abs([low, high]).max()) * 2.0**-60)
    scale = 1.0 / step
    origin = np.rint(low * scale).astype(np.int64)
    widths = [int(w).bit_length() for w in np.rint(high * scale).astype(np.int64) - origin]

    def snapped(axis: int, rows: slice | np.ndarray) -> np.ndarray:
        values = corners[rows, axis] if isinstance(rows, slice) else corners[:, axis][rows]
        return _cells(values, scale, origin[axis])

    # when the three cell numbers fit in 64 bits, a row's code is the row itself
    group, first = group_rows(corners.shape[0], snapped, widths if sum(widths) <= 64 else None)
    unique_vertices = np.take(corners, first, axis=0)
    if kept is not None:
        remap = np.empty(vertices.shape[0], np.int64)
        remap[kept] = group
        group = remap
    index_type = np.int32 if unique_vertices.shape[0] < 2**31 else np.int64
    return unique_vertices, np.take(group.astype(index_type), faces)


# ----------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class EdgeCounts:
    """How the faces use their edges.

    open_edges : (k, 2) int64 — vertex pairs of edges used by one face;
    non_manifold_edges : (j, 2) int64 — edges used by more than two faces;
    inconsistent_edges : (i, 2) int64 — two-face edges both faces walk the same way;
    edge_low, edge_high : (e,) int32 — every edge once, lower vertex index first, sorted.
    """

    open_edges: np.ndarray
    non_manifold_edges: np.ndarray
    inconsistent_edges: np.ndarray
    edge_low: np.ndarray
    edge_high: np.ndarray


def _edge_pairs(keys: np.ndarray, n: np.int64) -> np.ndarray:
    """(k, 2) int64 vertex pairs of directed-edge ``keys`` (k,) int64."""
    return np.stack(np.divmod(keys >> 1, n), axis=1)


def analyse_edges(faces: np.ndarray, vertex_count: int) -> EdgeCounts:
    """Count the uses of every undirected edge of welded ``faces`` (m, 3) int64.

    Each directed edge becomes one int64 key, ``(low * vertex_count + high) * 2 + reversed``,
    so a plain sort groups an edge's uses and the low bit keeps their directions.
    """
    if vertex_count >= 1 << 31:
        raise ValueError("more than 2**31 vertices: edge keys would overflow")
    m = faces.shape[0]
    n = np.int64(vertex_count)
    keys = np.empty((3, m), np.int64)
    for start in range(0, m, _CHUNK):
        chunk = faces[start : start + _CHUNK]
        for corner in range(3):
            a, b = chunk[:, corner], chunk[:, (corner + 1) % 3]
            part = keys[corner, start : start + chunk.shape[0]]
            np.minimum(a, b, out=part)
            part *= n
            part += np.maximum(a, b)
            part <<= 1
            part |= a > b
    keys = keys.reshape(-1)
    keys.sort()
    run_start = np.empty(keys.shape[0], bool)
    run_start[:1] = True
    for start in range(1, keys.shape[0], _CHUNK):
        stop = min(start + _CHUNK, keys.shape[0])
        # keys of one edge differ at most in the low (direction) bit
        np.greater(keys[start:stop] ^ keys[start - 1 : stop - 1], 1, out=run_start[start:stop])
    starts = np.flatnonzero(run_start)
    del run_start
    uses = np.diff(starts.astype(np.int32), append=np.int32(keys.shape[0]))
    # A run's keys are sorted, so the uses in one direction come before those in the other: a
    # two-face edge is walked both ways exactly when its two keys differ (in the low bit).
    two = starts[uses == 2]
    inconsistent = two[keys[two] == keys[two + 1]]
    del two

    open_edges = _edge_pairs(keys[starts[uses == 1]], n)
    non_manifold_edges = _edge_pairs(keys[starts[uses > 2]], n)
    inconsistent_edges = _edge_pairs(keys[inconsistent], n)
    del uses
    edge_key = keys[starts]
    del keys, starts
    edge_key >>= 1
    low = edge_key // n
    edge_key -= low * n
    # vertex indices fit int32 (checked above): half the memory for the rest of the checks
    return EdgeCounts(
        open_edges=open_edges,
        non_manifold_edges=non_manifold_edges,
        inconsistent_edges=inconsistent_edges,
        edge_low=low.astype(np.int32),
        edge_high=edge_key.astype(np.int32),
    )


def count_bodies(faces: np.ndarray, edges: EdgeCounts, vertex_count: int) -> int:
    """How many connected pieces ``faces`` (m, 3) int64 make: faces that share a vertex (and
    so any edge) are one body. ``edges`` are the faces' edges from ``analyse_edges``."""
    if faces.shape[0] == 0:
        return 0
    # the edges are sorted by row already, so the sparse graph is built without a sort
    row_starts = np.zeros(vertex_count + 1, np.int64)
    np.cumsum(np.bincount(edges.edge_low, minlength=vertex_count), out=row_starts[1:])
    index_type = np.int32 if edges.edge_low.shape[0] < 2**31 else np.int64
    graph = csr_array(
        (
            np.ones(edges.edge_low.shape[0], np.int8),
            edges.edge_high.astype(index_type),
            row_starts.astype(index_type),
        ),
        shape=(vertex_count, vertex_count),
    )
    count, label = connected_components(graph, directed=True, connection="weak")
    # vertices no face here uses are pieces of their own: count only the faces' pieces
    return int(np.count_nonzero(np.bincount(label[faces[:, 0]], minlength=count)))


# ----------------------------------------------------------------------------- faces


def collapsed_faces(faces: np.ndarray) -> np.ndarray:
    """(m,) bool: faces of welded ``faces`` (m, 3) int64 whose corners repeat a vertex."""
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    return (a == b) | (b == c) | (a == c)


def count_duplicate_faces(faces: np.ndarray, vertex_count: int) -> int:
    """How many faces of welded ``faces`` (m, 3) int repeat an earlier face's vertex set."""
    if faces.shape[0] == 0:
        return 0
    a, b, c = (faces[:, corner].astype(np.int64) for corner in range(3))
    low = np.minimum(np.minimum(a, b), c)
    high = np.maximum(np.maximum(a, b), c)
    middle = a + b + c
    middle -= low
    middle -= high
    bits = max(1, (vertex_count - 1).bit_length())
    if 3 * bits <= 63:
        # the sorted corners packed into one int64 say everything: count repeats after a sort
        key = low << (2 * bits)
        key |= middle << bits
        key |= high
        key.sort()
        return int(np.count_nonzero(key[1:] == key[:-1]))
    corners = (low, middle, high)

    def corner(axis: int, rows: slice | np.ndarray) -> np.ndarray:
        return corners[axis][rows]

    _, first = group_rows(faces.shape[0], corner, None)
    return int(faces.shape[0] - first.shape[0])


# ----------------------------------------------------------------------------- measures


@dataclass(frozen=True)
class Measures:
    """signed_volume in mm3 (meaningful for a closed mesh only), area in mm2, the centres of
    the volume and of the area (3,) float64 in mm (None when zero), and zero_area (m,) bool:
    the faces whose area is under ``tol.degenerate_area``."""

    signed_volume: float
    area: float
    volume_centre: np.ndarray | None
    area_centre: np.ndarray | None
    zero_area: np.ndarray


def measure(vertices: np.ndarray, faces: np.ndarray, tol: Tolerances) -> Measures:
    """Volume, area and centres of ``faces`` (m, 3) int64 over ``vertices`` (n, 3) float64,
    welded or not (only positions matter).

    The volume sums signed tetrahedra from each face to a corner of the part (not the origin,
    which loses precision for parts far from it); faces are taken in chunks so the temporary
    arrays stay small.
    """
    # float64 from here on, whatever the vertices are stored in
    reference = vertices[faces[0, 0]].astype(np.float64) if faces.shape[0] else np.zeros(3)
    volume6 = 0.0
    area2 = 0.0
    volume_moment = np.zeros(3)
    area_moment = np.zeros(3)
    zero_area = np.empty(faces.shape[0], bool)
    for start in range(0, faces.shape[0], _CHUNK):
        chunk = faces[start : start + _CHUNK]
        # (c, 3) float64 corners relative to the reference point; np.take gathers rows much
        # faster than fancy indexing
        p0, p1, p2 = (
            np.take(vertices, chunk[:, corner], axis=0) - reference for corner in range(3)
        )
        e1 = p1 - p0
        e2 = p2 - p0
        normal = np.empty_like(e1)
        normal[:, 0] = e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1]
        normal[:, 1] = e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2]
        normal[:, 2] = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        twice_area = np.sqrt(np.einsum("ij,ij->i", normal, normal))
        six_volume = np.einsum("ij,ij->i", p0, normal)
        corner_sum = p0
        corner_sum += p1
        corner_sum += p2
        volume6 += float(six_volume.sum())
        area2 += float(twice_area.sum())
        volume_moment += six_volume @ corner_sum
        area_moment += twice_area @ corner_sum
        zero_area[start : start + chunk.shape[0]] = twice_area < 2 * tol.degenerate_area
    # a tetrahedron's centroid is the mean of its corners (the reference is one of them)
    return Measures(
        signed_volume=volume6 / 6,
        area=area2 / 2,
        volume_centre=reference + volume_moment / (4 * volume6) if volume6 else None,
        area_centre=reference + area_moment / (3 * area2) if area2 else None,
        zero_area=zero_area,
    )


@dataclass(frozen=True)
class UnitsGuess:
    """The unit a part was probably drawn in, and the factor that turns its numbers into mm
    (None when no factor brings it into range)."""

    unit: str | None
    factor: float | None
    size_after: float | None


def units_suspect(largest_dimension: float, tol: Tolerances) -> UnitsGuess | None:
    """None when ``largest_dimension`` (mm) is plausible for a part, else the likely units."""
    if tol.min_part_size <= largest_dimension <= tol.max_part_size or largest_dimension <= 0:
        return None
    best: UnitsGuess | None = None
    best_distance = math.inf
    for unit, factor in tol.unit_factors:
        size = largest_dimension * factor
        if not tol.min_part_size <= size <= tol.max_part_size:
            continue
        distance = abs(math.log(size / tol.typical_part_size))
        if distance < best_distance:
            best, best_distance = UnitsGuess(unit, factor, size), distance
    return best or UnitsGuess(None, None, None)


# ----------------------------------------------------------------------------- the report


def _listed(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


def check_mesh(
    mesh: MeshData, tol: Tolerances = Tolerances(), *, parallel: bool = True
) -> GeometryReport:
    """Run every mesh check on ``mesh`` and return the report with its verdict.

    With ``parallel`` the measures (volume, area, centres) are taken in a second thread while
    the main one welds and counts edges: numpy lets go of the GIL in both, so on two cores
    that hides their cost.
    """
    report = GeometryReport(
        format=mesh.source_format, verdict=Verdict.PASS, checker_version=CHECKER_VERSION
    )
    metrics = report.metrics = Metrics(triangles=mesh.triangle_count)
    if mesh.brep_valid is False:
        problems = list(mesh.brep_problems)
        named = "; ".join(problems[:5]) + (
            f"; {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        report.add(
            Code.INVALID_BREP,
            Severity.FAIL,
            f"The B-rep solid is not valid (OpenCASCADE BRepCheck): {named or 'no fault named'}.",
            problems=problems,
        )
    vertices, faces = mesh.vertices, mesh.faces
    if faces.shape[0] == 0:
        report.add(Code.EMPTY, Severity.FAIL, "The file holds no triangles.")
        return report.decide()
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise ValueError("faces index vertices that do not exist")
    if not np.isfinite(vertices).all():
        finite = np.isfinite(vertices).all(axis=1)
        bad = int(np.count_nonzero(~finite[np.unique(faces)]))
        if bad:
            metrics.vertices = int(vertices.shape[0])
            report.add(
                Code.NON_FINITE,
                Severity.FAIL,
                f"{bad} vertices have NaN or infinite coordinates; no other check can run.",
                vertices=bad,
            )
            return report.decide()

    with ThreadPoolExecutor(max_workers=1) as pool:
        measuring = pool.submit(measure, vertices, faces, tol) if parallel else None
        welded_vertices, welded = weld(vertices, faces, tol)
        collapsed = collapsed_faces(welded)
        # Collapsed faces have no surface: slicers drop them, and so does the edge count (their
        # two remaining edges would otherwise turn sound edges into non-manifold ones).
        solid_faces = welded[~collapsed] if collapsed.any() else welded
        vertex_count = welded_vertices.shape[0]
        edges = analyse_edges(solid_faces, vertex_count)
        bodies = count_bodies(solid_faces, edges, vertex_count)
        duplicate_count = count_duplicate_faces(solid_faces, vertex_count)
        measures = measuring.result() if measuring else measure(vertices, faces, tol)

    open_count = int(edges.open_edges.shape[0])
    non_manifold_count = int(edges.non_manifold_edges.shape[0])
    inconsistent_count = int(edges.inconsistent_edges.shape[0])
    collapsed_count = int(np.count_nonzero(collapsed))
    zero_area_count = int(np.count_nonzero(measures.zero_area & ~collapsed))
    closed = open_count == 0 and inconsistent_count == 0
    bbox_min, bbox_max = _bounds(welded_vertices)
    size = bbox_max - bbox_min
    metrics.vertices = vertex_count
    metrics.bodies = bodies
    metrics.open_edges = open_count
    metrics.non_manifold_edges = non_manifold_count
    metrics.inconsistent_edges = inconsistent_count
    metrics.watertight = open_count == 0 and non_manifold_count == 0
    metrics.winding_consistent = inconsistent_count == 0
    metrics.degenerate_faces = collapsed_count + zero_area_count
    metrics.duplicate_faces = duplicate_count
    metrics.area_mm2 = measures.area
    metrics.bbox_min_mm = _listed(bbox_min)
    metrics.bbox_max_mm = _listed(bbox_max)
    metrics.size_mm = _listed(size)
    if closed and measures.volume_centre is not None:
        metrics.volume_mm3 = abs(measures.signed_volume)
        metrics.center_of_mass_mm = _listed(measures.volume_centre)
    elif measures.area_centre is not None:
        metrics.center_of_mass_mm = _listed(measures.area_centre)

    if open_count:
        report.add(
            Code.OPEN_EDGES,
            Severity.FAIL,
            f"{open_count} edges belong to one face only: the surface has holes and does "
            "not enclose a solid.",
            edges=open_count,
        )
    if non_manifold_count:
        report.add(
            Code.NON_MANIFOLD_EDGES,
            Severity.FAIL,
            f"{non_manifold_count} edges are shared by more than two faces.",
            edges=non_manifold_count,
        )
    if inconsistent_count:
        report.add(
            Code.INCONSISTENT_WINDING,
            Severity.FAIL,
            f"{inconsistent_count} edges join faces that disagree about which side is "
            "outside (their normals are inconsistent).",
            edges=inconsistent_count,
        )
    if closed and measures.signed_volume < 0:
        report.add(
            Code.INVERTED_NORMALS,
            Severity.WARN,
            "The faces point inwards (negative volume); most slicers flip them, "
            "but the file should be fixed.",
            signed_volume_mm3=measures.signed_volume,
        )
    if metrics.degenerate_faces:
        _add_degenerate(report, welded, vertex_count, collapsed_count, zero_area_count)
    if duplicate_count:
        report.add(
            Code.DUPLICATE_FACES,
            Severity.WARN,
            f"{duplicate_count} faces repeat another face's corners.",
            faces=duplicate_count,
        )
    if bodies > 1:
        report.add(
            Code.MULTIPLE_BODIES,
            Severity.WARN,
            f"The mesh is {bodies} separate pieces; check that each is meant to be a part.",
            bodies=bodies,
        )
    _add_units(report, float(size.max()), tol)
    return report.decide()


def _add_degenerate(
    report: GeometryReport, welded: np.ndarray, vertex_count: int, collapsed: int, zero_area: int
) -> None:
    values = {"faces": collapsed + zero_area, "collapsed": collapsed, "zero_area": zero_area}
    message = f"{collapsed + zero_area} faces have (nearly) no area."
    if collapsed:
        message += (
            f" {collapsed} of them have two corners at one point; they were left out of the "
            "edge checks."
        )
        # what a tool that keeps collapsed faces (trimesh, for one) counts
        values["non_manifold_edges_with_collapsed"] = int(
            analyse_edges(welded, vertex_count).non_manifold_edges.shape[0]
        )
    report.add(Code.DEGENERATE_FACES, Severity.WARN, message, **values)


def _add_units(report: GeometryReport, largest: float, tol: Tolerances) -> None:
    guess = units_suspect(largest, tol)
    if guess is None:
        return
    if guess.factor is None:
        message = f"The part is {largest:.4g} mm across: the units are probably wrong."
    else:
        message = (
            f"The part is {largest:.4g} mm across: probably drawn in {guess.unit} "
            f"(x{guess.factor:.4g} makes it {guess.size_after:.4g} mm)."
        )
    report.add(
        Code.UNITS_SUSPECT,
        Severity.WARN,
        message,
        largest_dimension_mm=largest,
        likely_unit=guess.unit,
        factor=guess.factor,
    )
