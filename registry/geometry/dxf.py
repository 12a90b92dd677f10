"""DXF for laser cutting: a flat part's outline as closed polylines in millimetres.

Decisions: DXF R2000 (the oldest version with LWPOLYLINE, which every laser and CAM program
reads); ``$INSUNITS`` = 4 (millimetres) and ``$MEASUREMENT`` = 1 (metric), so the importing
program does not guess inches; one closed LWPOLYLINE per loop, outer contours on layer
``OUTER`` and holes on layer ``INNER`` (laser software can cut the holes first, before the part
comes loose); ``$EXTMIN``/``$EXTMAX`` set to the outline's box so viewers open on it. Written
with ezdxf.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from registry.geometry.dfm_sheet import NotFlat, laser_profile, signed_area
from registry.geometry.mesh import MeshData

OUTER_LAYER = "OUTER"
INNER_LAYER = "INNER"


class NotFlatError(ValueError):
    """The part is not a flat sheet, so there is no outline to write; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def profile_to_dxf(loops: Sequence[np.ndarray]) -> bytes:
    """A DXF R2000 drawing of ``loops`` (each (k, 2) mm, k >= 3, not closed by repeating the
    first point): one closed LWPOLYLINE each, counter-clockwise loops on ``OUTER`` and
    clockwise ones (holes) on ``INNER``."""
    import ezdxf
    from ezdxf import units

    doc = ezdxf.new("R2000", setup=False)
    doc.units = units.MM
    doc.header["$MEASUREMENT"] = 1
    doc.layers.add(OUTER_LAYER, color=7)
    doc.layers.add(INNER_LAYER, color=1)
    space = doc.modelspace()
    points_seen = []
    for loop in loops:
        points = np.asarray(loop, dtype=float)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
            raise ValueError("each loop needs at least three (x, y) points")
        layer = OUTER_LAYER if signed_area(points) >= 0 else INNER_LAYER
        space.add_lwpolyline(
            points,
            format="xy",
            close=True,
            dxfattribs={"layer": layer},
        )
        points_seen.append(points)
    if points_seen:
        every = np.concatenate(points_seen)
        low, high = every.min(axis=0), every.max(axis=0)
        extmin = (float(low[0]), float(low[1]), 0.0)
        extmax = (float(high[0]), float(high[1]), 0.0)
        # writing copies the layout's extents over the header's, unless they are zero vectors
        space.dxf.extmin, space.dxf.extmax = extmin, extmax
        doc.header["$EXTMIN"], doc.header["$EXTMAX"] = extmin, extmax
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode(doc.output_encoding)


def dxf_for(mesh: MeshData) -> bytes:
    """The DXF a laser cuts ``mesh`` from; raises ``NotFlatError`` when the part is not a flat
    sheet (or not a closed mesh)."""
    profile = laser_profile(mesh)
    if isinstance(profile, NotFlat):
        raise NotFlatError(profile.reason)
    return profile_to_dxf(profile.loops)
