"""Laser cutting: is the part a flat sheet of one thickness, and what outline does the laser cut?

Decisions:

- A laser cuts straight through a sheet, so it makes prisms: an outline (with holes) extruded by
  the sheet's thickness. A closed mesh is such a prism along a direction ``d`` when every face
  is either parallel to the sheet and lies on one of its two sides (the lower side facing -d,
  the upper one facing +d) or perpendicular to it. With no face parallel to the sheet between
  its two sides, every wall runs through the whole thickness.
- The sheet's normal is looked for, as a direction up to sign, among the normals of the largest
  faces (the sides of a sheet are its largest faces, or tie with its walls), the principal
  directions of the area-weighted normals (the sides dominate them even when they are cut into
  many small faces) and the three axes; each is scored by the area of the faces parallel to it
  and the best ``MAX_DIRECTIONS`` are tried. When several
  make the part a prism (a block is one along each of its three axes) the thinnest sheet wins:
  that is how a fablab would cut it.
- Angles are compared within ``ANGLE_TOLERANCE_DEG`` and heights within
  ``PLANE_TOLERANCE_MM``; faces with almost no area (slivers left by exports) have no
  trustworthy normal and are not judged.
- The outline is the boundary of the faces on the lower side: the edges only one of those faces
  uses, chained into closed loops (each vertex starts as many boundary edges as end there; a
  vertex where two loops touch pairs them in an arbitrary order). The loops are in the sheet's
  2D frame (``u``, ``v``, with ``u`` x ``v`` = ``d``), seen from the upper side and moved so the
  outline's bounding box starts at (0, 0); outer contours run counter-clockwise and holes
  clockwise. Points along a straight stretch are dropped.
- Chaining is the one loop in Python; it runs over the boundary edges only, which are fewer
  than the mesh's faces (well under a second at a million).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from registry.geometry.checks import analyse_edges
from registry.geometry.dfm_mesh import Solid
from registry.geometry.mesh import MeshData

ANGLE_TOLERANCE_DEG = 0.5
PLANE_TOLERANCE_MM = 0.01
# Faces under this area (mm2) are slivers: their normals are not judged.
SLIVER_MM2 = 1e-6
MAX_DIRECTIONS = 3
# Candidate normals are read from this many of the largest faces.
_CANDIDATE_FACES = 32


@dataclass(frozen=True)
class Profile:
    """A flat part's outline and sheet.

    loops : closed polylines (k, 2) in mm, the first point not repeated; outer contours
        counter-clockwise, holes clockwise, in the sheet's 2D frame.
    thickness_mm : the distance between the sheet's two sides.
    normal : (3,) unit normal of the sheet, from its lower side to its upper side.
    origin, axes : a 2D point (x, y) of the outline is ``origin + x * axes[0] + y * axes[1]`` in
        the model's coordinates, on the lower side.
    """

    loops: tuple[np.ndarray, ...]
    thickness_mm: float
    normal: np.ndarray
    origin: np.ndarray
    axes: np.ndarray

    @property
    def areas_mm2(self) -> np.ndarray:
        """Signed area of each loop: positive for outer contours, negative for holes."""
        return np.array([signed_area(loop) for loop in self.loops])

    @property
    def cut_length_mm(self) -> float:
        """The length the laser cuts: every loop's perimeter."""
        return float(sum(_perimeter(loop) for loop in self.loops))

    @property
    def size_mm(self) -> tuple[float, float]:
        """The outline's bounding box in the sheet (width along ``u``, height along ``v``)."""
        points = np.concatenate(self.loops)
        extent = points.max(axis=0) - points.min(axis=0)
        return float(extent[0]), float(extent[1])


@dataclass(frozen=True)
class NotFlat:
    """Why a part is not a flat sheet a laser can cut."""

    reason: str


def signed_area(loop: np.ndarray) -> float:
    """The signed area (mm2) of closed polyline ``loop`` (k, 2): positive counter-clockwise."""
    x, y = loop[:, 0], loop[:, 1]
    return float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum() / 2)


def _perimeter(loop: np.ndarray) -> float:
    return float(np.linalg.norm(np.roll(loop, -1, axis=0) - loop, axis=1).sum())


def _canonical(directions: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest component is positive (a direction up to sign)."""
    largest = np.abs(directions).argmax(axis=1)
    signs = np.sign(directions[np.arange(directions.shape[0]), largest])
    return directions * signs[:, None]


def candidate_normals(solid: Solid) -> list[np.ndarray]:
    """Sheet normal candidates, best scored first (see the module's decisions)."""
    count = min(_CANDIDATE_FACES, solid.face_count)
    largest = np.argpartition(solid.areas, -count)[-count:]
    largest = largest[np.argsort(solid.areas[largest])[::-1]]
    # the principal directions of the area-weighted normals: a sheet's two sides dominate them
    # even when its sides are cut into many small faces and its walls into a few long ones
    tensor = np.einsum("i,ij,ik->jk", solid.areas, solid.normals, solid.normals)
    principal = np.linalg.eigh(tensor)[1].T[::-1]
    candidates = np.concatenate([solid.normals[largest], principal, np.eye(3)])
    cos_tol = np.cos(np.radians(ANGLE_TOLERANCE_DEG))
    kept: list[np.ndarray] = []
    for direction in _canonical(candidates):
        if np.dot(direction, direction) < 0.5:
            continue
        if all(abs(float(direction @ other)) < cos_tol for other in kept):
            kept.append(direction)
    scores = [
        float(solid.areas[np.abs(solid.normals @ direction) > cos_tol].sum()) for direction in kept
    ]
    order = np.argsort(scores, kind="stable")[::-1]
    return [kept[i] for i in order[:MAX_DIRECTIONS]]


def _frame(normal: np.ndarray) -> np.ndarray:
    """(2, 3) unit axes u, v of the sheet, with u x v = normal."""
    axis = np.zeros(3)
    axis[int(np.abs(normal).argmin())] = 1.0
    u = axis - (axis @ normal) * normal
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(normal, u)])


def _sides(solid: Solid, normal: np.ndarray) -> tuple[float, float, np.ndarray] | NotFlat:
    """The heights of the sheet's two sides along ``normal`` and the faces on its lower side,
    or why the part is not a sheet along ``normal``."""
    heights = solid.vertices @ normal
    low, high = float(heights.min()), float(heights.max())
    if high - low <= PLANE_TOLERANCE_MM:
        return NotFlat("the part has no thickness")
    judged = solid.areas >= SLIVER_MM2
    along = solid.normals @ normal
    sin_tol = np.sin(np.radians(ANGLE_TOLERANCE_DEG))
    parallel = judged & (np.abs(along) > np.cos(np.radians(ANGLE_TOLERANCE_DEG)))
    slanted = judged & ~parallel & (np.abs(along) >= sin_tol)
    if slanted.any():
        area = float(solid.areas[slanted].sum())
        return NotFlat(
            f"{area:,.1f} mm2 ({area / solid.areas.sum():.1%} of the surface) is neither "
            "parallel nor perpendicular to the sheet: slopes, chamfers or curved faces"
        )
    face_heights = heights[solid.faces]
    on_low = (np.abs(face_heights - low) <= PLANE_TOLERANCE_MM).all(axis=1)
    on_high = (np.abs(face_heights - high) <= PLANE_TOLERANCE_MM).all(axis=1)
    lower = parallel & (along < 0) & on_low
    upper = parallel & (along > 0) & on_high
    between = parallel & ~lower & ~upper
    if between.any():
        levels = np.unique(np.round(face_heights[between].mean(axis=1) - low, 2))
        named = ", ".join(f"{level:g}" for level in levels[:3]) + (
            f" and {levels.shape[0] - 3} more" if levels.shape[0] > 3 else ""
        )
        return NotFlat(
            f"faces parallel to the sheet lie between its two sides ({named} mm above the "
            f"lower side, in a {high - low:g} mm thickness): a step, pocket or boss"
        )
    # slivers lying in the lower side belong to it (else their edges would split the outline)
    return low, high, np.flatnonzero(lower | (~judged & on_low))


def _boundary_edges(faces: np.ndarray, vertex_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of the edges of ``faces`` (k, 3) that only one of them uses, as it walks
    them."""
    start = faces.ravel()
    end = faces[:, [1, 2, 0]].ravel()
    keys = np.minimum(start, end) * np.int64(vertex_count) + np.maximum(start, end)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    once = counts[inverse] == 1
    return start[once], end[once]


def _chain(start: np.ndarray, end: np.ndarray) -> list[np.ndarray] | None:
    """The closed loops (vertex index arrays) the directed edges make, or None when some vertex
    starts a different number of edges than end there (the outline is open)."""
    by_start = np.argsort(start, kind="stable")
    by_end = np.argsort(end, kind="stable")
    if not np.array_equal(start[by_start], end[by_end]):
        return None
    following = np.empty(start.shape[0], np.int64)
    following[by_end] = by_start
    nxt = following.tolist()
    seen = bytearray(start.shape[0])
    loops = []
    for first in range(start.shape[0]):
        if seen[first]:
            continue
        loop = []
        edge = first
        while not seen[edge]:
            seen[edge] = 1
            loop.append(edge)
            edge = nxt[edge]
        loops.append(start[np.array(loop, np.int64)])
    return loops


def _drop_straight(loop: np.ndarray) -> np.ndarray:
    """``loop`` (k, 2) without the points where it runs straight on."""
    if loop.shape[0] <= 3:
        return loop
    before = loop - np.roll(loop, 1, axis=0)
    after = np.roll(loop, -1, axis=0) - loop
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    scale = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    keep = (np.abs(cross) > 1e-9 * scale) | (np.einsum("ij,ij->i", before, after) < 0)
    return loop[keep] if keep.sum() >= 3 else loop


def _outline(solid: Solid, normal: np.ndarray, low: float, high: float, lower: np.ndarray):
    start, end = _boundary_edges(solid.faces[lower], solid.vertices.shape[0])
    loops = _chain(start, end)
    if loops is None or not loops:
        return NotFlat("the outline of the sheet's lower side does not close")
    axes = _frame(normal)
    flat = solid.vertices @ axes.T  # (n, 2)
    used = np.concatenate(loops)
    corner = flat[used].min(axis=0)
    # the lower side's boundary runs clockwise seen from above: reverse it
    outlines = tuple(_drop_straight(flat[loop[::-1]] - corner) for loop in loops)
    origin = low * normal + corner[0] * axes[0] + corner[1] * axes[1]
    return Profile(outlines, high - low, normal, origin, axes)


def sheet_profile(solid: Solid) -> Profile | NotFlat:
    """The profile of ``solid`` (closed and consistently wound) as a flat sheet, or why it is
    not one."""
    if solid.face_count == 0:
        return NotFlat("the mesh has no faces")
    first_reason: NotFlat | None = None
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None  # low, high, normal, lower
    for normal in candidate_normals(solid):
        sides = _sides(solid, normal)
        if isinstance(sides, NotFlat):
            first_reason = first_reason or sides
            continue
        low, high, lower = sides
        if best is None or high - low < best[1] - best[0] - PLANE_TOLERANCE_MM:
            best = (low, high, normal, lower)
    if best is None:
        return first_reason or NotFlat("no direction makes the part a flat sheet")
    low, high, normal, lower = best
    return _outline(solid, normal, low, high, lower)


def laser_profile(mesh: MeshData) -> Profile | NotFlat:
    """The outline a laser cuts to make ``mesh``, or why it cannot be cut from a flat sheet.

    The mesh is welded first; a mesh that is not closed and consistently wound has no inside
    to speak of and is refused with that reason. The profile's loops are in millimetres, in
    the sheet's 2D frame (see ``Profile``); ``dxf.profile_to_dxf`` writes them as DXF.
    """
    if mesh.triangle_count == 0:
        return NotFlat("the mesh has no faces")
    used = np.zeros(mesh.vertices.shape[0], bool)
    used[mesh.faces.ravel()] = True
    if not np.isfinite(mesh.vertices[used]).all():
        return NotFlat("some vertices have NaN or infinite coordinates")
    solid = Solid.from_mesh(mesh)
    edges = analyse_edges(solid.faces, solid.vertices.shape[0])
    if edges.open_edges.shape[0] or edges.non_manifold_edges.shape[0]:
        return NotFlat("the mesh is not closed: it has no inside to cut out")
    if edges.inconsistent_edges.shape[0]:
        return NotFlat("the faces disagree about which side is outside")
    return sheet_profile(solid)
