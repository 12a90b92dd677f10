"""3-axis CNC milling: surface the cutter cannot reach from above, and internal vertical corners
sharper than a cutter can leave.

The part is milled as it lies in the file: the tool comes down along -Z (it reaches surface
seen from +Z) and the part's lowest face sits on the fixture.

Undercuts:

- A face pointing down (its normal leans more than ``DOWN_NZ`` below the horizontal) faces
  away from the tool, except the faces lying on the bottom plane, which the fixture holds.
- A face pointing up or sideways is reachable unless material hangs over it. A ray is cast
  along +Z from its centre (nudged off the surface along its normal); it is shadowed when the
  first face the ray meets points down, i.e. the ray enters material. A hit on a face that does
  not point down is a graze along a wall, not material overhead.
- Past ``MAX_RAY_SAMPLES`` faces, the rays start from faces drawn at random in proportion to
  their area, so the shadowed share of the draws estimates the shadowed share of the area and
  the time stays bounded (two to three seconds on a 1.3-million-triangle mesh, most of it
  building the ray engine, which the wall-thickness check shares).

Internal corners:

- An end mill is round: a milled pocket's inner vertical corner keeps at least the cutter's
  radius. A corner is an edge between two faces that is concave (the second face rises above
  the first one's plane on the outside), roughly parallel to the tool axis (within
  ``VERTICAL_TOLERANCE_DEG``), and sharp: the surface turns by more than ``SHARP_TURN_DEG`` at
  that one edge.
- A fillet tessellated for export turns by a few degrees per facet, spread over about its
  radius: no single edge passes the sharp test. A fillet exported with fewer than three facets
  per quarter turn would read as sharp corners; CAD exports keep far finer facets than that.
- Edges of one corner (a vertical corner split by vertices along its height) count as one
  corner: corners are the connected pieces of the sharp edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from registry.geometry.dfm_mesh import Solid, directed_edges, edge_faces, sample_faces

# A face whose normal's Z component is below -DOWN_NZ points down (0.06 degrees past vertical:
# above the noise of float32 coordinates, below any draft a designer draws).
DOWN_NZ = 1e-3
# The fixture's plane: faces facing down within 2.6 degrees, every corner this close to it.
BOTTOM_NZ = 0.999
BOTTOM_TOLERANCE_MM = 0.01
MAX_RAY_SAMPLES = 50_000
SHARP_TURN_DEG = 30.0
VERTICAL_TOLERANCE_DEG = 5.0


@dataclass(frozen=True)
class Undercuts:
    """Areas in mm2: facing down (off the fixture), shadowed from above, and the whole
    surface."""

    down_mm2: float
    shadowed_mm2: float
    total_mm2: float

    @property
    def area_mm2(self) -> float:
        return self.down_mm2 + self.shadowed_mm2

    @property
    def share(self) -> float:
        return self.area_mm2 / self.total_mm2 if self.total_mm2 else 0.0


def undercuts(solid: Solid) -> Undercuts:
    """The surface of ``solid`` a 3-axis tool coming from +Z cannot reach."""
    normals, areas = solid.normals, solid.areas
    total = float(areas.sum())
    z = solid.vertices[:, 2]
    z_min = float(z.min())
    on_bottom = (normals[:, 2] < -BOTTOM_NZ) & (
        np.abs(z[solid.faces] - z_min) < BOTTOM_TOLERANCE_MM
    ).all(axis=1)
    down = (normals[:, 2] < -DOWN_NZ) & ~on_bottom
    down_area = float(areas[down].sum())
    facing_up = np.flatnonzero((normals[:, 2] >= -DOWN_NZ) & (areas > 0))
    shadowed_area = 0.0
    if facing_up.shape[0]:
        rows, weights = sample_faces(areas, facing_up, MAX_RAY_SAMPLES)
        # off the surface by a few float32 steps of the part's size, then straight up
        nudge = max(1e-4, 1e-6 * float(np.ptp(solid.vertices, axis=0).max()))
        origins = solid.centres(rows) + (normals[rows] + [0.0, 0.0, 1.0]) * nudge
        directions = np.tile([0.0, 0.0, 1.0], (rows.shape[0], 1))
        first = np.asarray(solid.ray.intersects_first(origins, directions))
        hit = first >= 0
        shadowed = np.zeros(rows.shape[0], bool)
        shadowed[hit] = normals[first[hit], 2] < -DOWN_NZ
        share = float(weights[shadowed].sum() / weights.sum())
        shadowed_area = share * float(areas[facing_up].sum())
    return Undercuts(down_area, shadowed_area, total)


@dataclass(frozen=True)
class SharpCorners:
    """Sharp internal vertical corners: how many, their total length (mm), and the edges
    (k, 2) vertex index pairs that make them."""

    count: int
    length_mm: float
    edges: np.ndarray


def sharp_internal_corners(solid: Solid) -> SharpCorners:
    """The concave edges of ``solid`` parallel to Z where the surface turns sharply."""
    vertices, normals = solid.vertices, solid.normals
    # only edges along the tool axis are paired with their faces: a small share of the mesh
    start, end, _ = directed_edges(solid.faces)
    along = vertices[end] - vertices[start]
    length = np.sqrt(np.einsum("ij,ij->i", along, along))
    vertical = np.abs(along[:, 2]) >= np.cos(np.radians(VERTICAL_TOLERANCE_DEG)) * length
    vertical &= length > 0
    del along, start, end
    pairs = edge_faces(solid.faces, vertices.shape[0], keep=vertical)
    n1 = normals[pairs.first]
    n2 = normals[pairs.second]
    rise = np.einsum("ij,ij->i", vertices[pairs.second_apex] - vertices[pairs.start], n1)
    # both faces have a normal (no sliver), the turn is sharp, the fold goes outward
    sharp = (
        (np.einsum("ij,ij->i", n1, n1) > 0.5)
        & (np.einsum("ij,ij->i", n2, n2) > 0.5)
        & (np.einsum("ij,ij->i", n1, n2) < np.cos(np.radians(SHARP_TURN_DEG)))
        & (rise > 0)
    )
    rows = np.flatnonzero(sharp)
    edges = np.stack([pairs.start[rows], pairs.end[rows]], axis=1)
    if rows.shape[0] == 0:
        return SharpCorners(0, 0.0, edges)
    used, local = np.unique(edges, return_inverse=True)
    local = local.reshape(-1, 2)
    graph = coo_array(
        (np.ones(local.shape[0], np.int8), (local[:, 0], local[:, 1])),
        shape=(used.shape[0], used.shape[0]),
    )
    count, _ = connected_components(graph, directed=False)
    length = np.linalg.norm(vertices[edges[:, 1]] - vertices[edges[:, 0]], axis=1)
    return SharpCorners(int(count), float(length.sum()), edges)
