"""Does an order's part fit a machine? Build-volume fit in some orientation, remembered.

:func:`registry.geometry.fit.fit_in_volume` searches orientations (the diagonal ones too) and
takes milliseconds; a decision asks about dozens of machines, most of them of a few common
sizes. So the answer is worked out in three steps, cheapest first:

1. the part's extents, sorted, fit the volume's sizes, sorted: it fits lying along the machine's
   axes (any assignment of axes is a rotation), no search needed;
2. the part's diameter is longer than the volume's space diagonal: it fits in no orientation;
3. otherwise the orientation search runs, and its answer is kept for this part shape and this
   volume in a bounded cache shared by all decisions (:data:`CACHE_SIZE` entries).

The part is its convex hull's points when the geometry report gave them, else the eight corners
of its bounding box.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from scipy.spatial.distance import pdist

from registry.geometry.fit import fit_in_volume

CACHE_SIZE = 8192
_cache: OrderedDict[tuple[bytes, tuple[float, float, float]], bool] = OrderedDict()
_lock = threading.Lock()


class PartFit:
    """The fit questions for one part, answered per build volume."""

    __slots__ = ("_known", "diameter", "key", "points", "sorted_extents")

    def __init__(
        self, extents_mm: tuple[float, float, float], hull_points: np.ndarray | None = None
    ) -> None:
        if hull_points is None:
            points = np.array(list(itertools.product(*((0.0, e) for e in extents_mm))))
            self.diameter = math.sqrt(sum(e * e for e in extents_mm))
        else:
            points = np.asarray(hull_points, dtype=float)
            self.diameter = float(pdist(points).max()) if len(points) > 1 else 0.0
        self.points = points
        # The quick accept must hold for these points, so it reads their own bounding box.
        self.sorted_extents = tuple(sorted(points.max(axis=0) - points.min(axis=0)))
        self.key = hashlib.blake2b(
            np.ascontiguousarray(points - points.min(axis=0)).tobytes(), digest_size=16
        ).digest()
        self._known: dict[tuple[float, float, float], bool] = {}

    def fits(self, volume_mm: tuple[float, float, float]) -> bool:
        known = self._known.get(volume_mm)
        if known is None:
            known = self._known[volume_mm] = self._decide(volume_mm)
        return known

    def _decide(self, volume_mm: tuple[float, float, float]) -> bool:
        a, b, c = sorted(volume_mm)
        x, y, z = self.sorted_extents
        if x <= a and y <= b and z <= c:
            return True
        if self.diameter > math.sqrt(a * a + b * b + c * c):
            return False
        key = (self.key, volume_mm)
        with _lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        fits = bool(fit_in_volume(self.points, volume_mm).fits)
        with _lock:
            _cache[key] = fits
            if len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        return fits


@lru_cache(maxsize=1024)
def _box_fit(extents_mm: tuple[float, float, float]) -> PartFit:
    return PartFit(extents_mm)


def part_fit(
    extents_mm: tuple[float, float, float], hull_points: np.ndarray | None = None
) -> PartFit:
    """The :class:`PartFit` of a part; parts given by their extents alone are shared."""
    return PartFit(extents_mm, hull_points) if hull_points is not None else _box_fit(extents_mm)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
    _box_fit.cache_clear()
