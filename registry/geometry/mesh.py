"""The triangle mesh every reader produces and every check consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class Unreadable(Exception):
    """A file that cannot be read as a model; ``reason`` is one line a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MeshData:
    """Triangles in millimetres, as read from one file.

    vertices : (n, 3) float64, or float32 where the file stores float32 (binary STL) — positions
        in mm (after the file's unit was applied). Checks compute in float64 either way.
    faces : (m, 3) int64, or int32 when the indices fit — indices into ``vertices``; readers
        of formats without shared vertices (STL) give each triangle its own three vertices:
        welding is a check's job.
    object_of_face : (m,) int32 — which entry of ``objects`` each face belongs to.
    objects : names of the objects the file holds (one for STL and OBJ).
    source_format : ``stl-binary``, ``stl-ascii``, ``3mf``, ``obj``, ``ply`` or ``step``.
    unit : the unit the file declared (or ``mm`` when it declares none), before conversion.
    brep_valid : for B-rep formats (STEP), whether the solid passed OpenCASCADE's BRepCheck
        before it was tessellated; None for mesh formats.
    brep_problems : what BRepCheck found wrong, one line per kind of fault.
    """

    vertices: np.ndarray
    faces: np.ndarray
    source_format: str
    objects: tuple[str, ...] = ("object",)
    object_of_face: np.ndarray | None = None
    unit: str = "mm"
    notes: tuple[str, ...] = field(default_factory=tuple)
    brep_valid: bool | None = None
    brep_problems: tuple[str, ...] = ()

    @property
    def triangle_count(self) -> int:
        return int(self.faces.shape[0])

    def triangles(self) -> np.ndarray:
        """(m, 3, 3) float64: the corners of every face."""
        return self.vertices[self.faces]
