"""Mesh checks: is a triangle mesh a solid a fablab can make, and how big is it?

Pure functions over numpy arrays, vectorised (no Python loop per triangle or edge), so reading
a million-triangle STL and checking it takes less time than ``admesh`` on the same file
(bench/bench_geometry.py):

- ``weld`` (weld.py) merges coincident corners (STL gives every triangle its own three);
- ``analyse_edges`` (edges.py) counts how often each undirected edge is used: once is an open
  (boundary) edge, more than twice a non-manifold one, and a two-face edge walked the same way
  by both faces means the faces disagree about which side is outside;
- ``collapsed_faces`` and ``count_duplicate_faces`` find faces with no surface or twice over;
- ``count_bodies`` labels the connected pieces, ``measure`` gives volume, area, bounding box and
  centre of mass, ``units_suspect`` guesses a units mistake from the part's size;
- ``check_mesh`` runs them all and fills a ``GeometryReport``.

Self-intersections are not looked for here: edge topology cannot see two closed shells passing
through each other, so that check runs separately (intersect.py).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from registry.geometry.edges import (
    EdgeCounts,
    analyse_edges,
    collapsed_faces,
    count_bodies,
    count_duplicate_faces,
    count_non_manifold_with,
)
from registry.geometry.mesh import MeshData
from registry.geometry.report import Code, GeometryReport, Metrics, Severity, Verdict
from registry.geometry.weld import bounds, corners_unshared, group_rows, weld

__all__ = [
    "CHECKER_VERSION",
    "EdgeCounts",
    "Measures",
    "Tolerances",
    "UnitsGuess",
    "analyse_edges",
    "check_mesh",
    "collapsed_faces",
    "count_bodies",
    "count_duplicate_faces",
    "count_non_manifold_with",
    "group_rows",
    "measure",
    "units_suspect",
    "weld",
]

CHECKER_VERSION = "geometry-1"

# Faces measured at once: their nine float64 coordinates and temporaries stay in the L2 cache.
_MEASURE_CHUNK = 1 << 14


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
    """Volume, area and centres of ``faces`` (m, 3) int over ``vertices`` (n, 3) float,
    welded or not (only positions matter).

    The volume sums signed tetrahedra from each face to a corner of the part (not the origin,
    which loses precision for parts far from it). Faces are taken in chunks whose corners are
    laid out coordinate by coordinate, (corner, axis, face) in float64: every step is then an
    operation on contiguous rows that stay in the CPU cache.
    """
    m = faces.shape[0]
    # float64 from here on, whatever the vertices are stored in
    reference = vertices[faces[0, 0]].astype(np.float64) if m else np.zeros(3)
    volume6 = 0.0
    area2 = 0.0
    volume_moment = np.zeros(3)
    area_moment = np.zeros(3)
    zero_area = np.empty(m, bool)
    size = min(m, _MEASURE_CHUNK)
    corners_buffer = np.empty((3, 3, size))
    edges_buffer = np.empty((2, 3, size))
    normal_buffer = np.empty((3, size))
    product_buffer = np.empty(size)
    # STL corners are not shared: each face's three are a row of the vertices already
    stacked = vertices.reshape(-1, 3, 3) if corners_unshared(faces, vertices.shape[0]) else None
    for start in range(0, m, _MEASURE_CHUNK):
        stop = min(start + _MEASURE_CHUNK, m)
        count = stop - start
        # (3 corners, 3 axes, count) relative to the reference point; np.take gathers rows much
        # faster than fancy indexing
        corners = corners_buffer[:, :, :count]
        if stacked is None:
            gathered = np.take(vertices, faces[start:stop], axis=0)
        else:
            gathered = stacked[start:stop]
        np.subtract(gathered.transpose(1, 2, 0), reference[:, None], out=corners)
        del gathered
        edge = edges_buffer[:, :, :count]
        np.subtract(corners[1:], corners[0], out=edge)
        (x1, y1, z1), (x2, y2, z2) = edge
        normal = normal_buffer[:, :count]
        product = product_buffer[:count]
        for axis, (a1, b2, b1, a2) in enumerate(
            ((y1, z2, z1, y2), (z1, x2, x1, z2), (x1, y2, y1, x2))
        ):
            np.multiply(a1, b2, out=normal[axis])
            np.multiply(b1, a2, out=product)
            normal[axis] -= product
        twice_area = np.einsum("ij,ij->j", normal, normal)
        np.sqrt(twice_area, out=twice_area)
        six_volume = np.einsum("ij,ij->j", corners[0], normal)
        corner_sum = corners.sum(axis=0)
        volume6 += float(six_volume.sum())
        area2 += float(twice_area.sum())
        volume_moment += corner_sum @ six_volume
        area_moment += corner_sum @ twice_area
        np.less(twice_area, 2 * tol.degenerate_area, out=zero_area[start:stop])
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
        open_count = int(edges.open_edges.shape[0])
        non_manifold_count = int(edges.non_manifold_edges.shape[0])
        inconsistent_count = int(edges.inconsistent_edges.shape[0])
        # what a tool that keeps collapsed faces (trimesh, for one) counts
        with_collapsed = (
            count_non_manifold_with(edges, welded[collapsed], vertex_count)
            if collapsed.any()
            else non_manifold_count
        )
        del edges, solid_faces
        measures = measuring.result() if measuring else measure(vertices, faces, tol)

    collapsed_count = int(np.count_nonzero(collapsed))
    zero_area_count = int(np.count_nonzero(measures.zero_area & ~collapsed))
    closed = open_count == 0 and inconsistent_count == 0
    bbox_min, bbox_max = bounds(welded_vertices)
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
        _add_degenerate(report, collapsed_count, zero_area_count, with_collapsed)
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
    report: GeometryReport, collapsed: int, zero_area: int, non_manifold_with_collapsed: int
) -> None:
    values = {"faces": collapsed + zero_area, "collapsed": collapsed, "zero_area": zero_area}
    message = f"{collapsed + zero_area} faces have (nearly) no area."
    if collapsed:
        message += (
            f" {collapsed} of them have two corners at one point; they were left out of the "
            "edge checks."
        )
        values["non_manifold_edges_with_collapsed"] = non_manifold_with_collapsed
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
