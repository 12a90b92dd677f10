"""The geometry report of one model file: a verdict, metrics, and issues with stable codes.

``fail`` means a fablab cannot make the part without repair; ``warn`` means it can, with a
caveat; ``pass`` means no issue was found; ``unreadable`` means the file is not a model at all.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


class Verdict(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    UNREADABLE = "unreadable"


class Code(StrEnum):
    """Stable issue codes: clients may match on them."""

    EMPTY = "EMPTY"
    UNREADABLE = "UNREADABLE"
    NON_FINITE = "NON_FINITE"
    OPEN_EDGES = "OPEN_EDGES"
    NON_MANIFOLD_EDGES = "NON_MANIFOLD_EDGES"
    INCONSISTENT_WINDING = "INCONSISTENT_WINDING"
    INVERTED_NORMALS = "INVERTED_NORMALS"
    DEGENERATE_FACES = "DEGENERATE_FACES"
    DUPLICATE_FACES = "DUPLICATE_FACES"
    SELF_INTERSECTIONS = "SELF_INTERSECTIONS"
    OVERLAPPING_BODIES = "OVERLAPPING_BODIES"
    MULTIPLE_BODIES = "MULTIPLE_BODIES"
    UNITS_SUSPECT = "UNITS_SUSPECT"
    THIN_WALLS = "THIN_WALLS"
    OVERHANGS = "OVERHANGS"
    SMALL_BED_CONTACT = "SMALL_BED_CONTACT"
    TRAPPED_VOLUME = "TRAPPED_VOLUME"
    UNDERCUTS = "UNDERCUTS"
    SMALL_INTERNAL_RADII = "SMALL_INTERNAL_RADII"
    NOT_FLAT = "NOT_FLAT"
    SHEET_TOO_THICK = "SHEET_TOO_THICK"
    EXCEEDS_BUILD_VOLUME = "EXCEEDS_BUILD_VOLUME"
    INVALID_BREP = "INVALID_BREP"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    CHECKER_CRASHED = "CHECKER_CRASHED"


class Issue(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: Code
    severity: Severity
    message: str


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    triangles: int = 0
    vertices: int = 0
    bodies: int = 0
    open_edges: int = 0
    non_manifold_edges: int = 0
    degenerate_faces: int = 0
    duplicate_faces: int = 0
    volume_mm3: float | None = None
    area_mm2: float | None = None
    bbox_min_mm: list[float] | None = None
    bbox_max_mm: list[float] | None = None
    size_mm: list[float] | None = None
    center_of_mass_mm: list[float] | None = None
    watertight: bool = False
    winding_consistent: bool = False


class GeometryReport(BaseModel):
    path: str | None = None
    format: str | None = None
    verdict: Verdict
    checker_version: str
    metrics: Metrics = Field(default_factory=Metrics)
    issues: list[Issue] = Field(default_factory=list)
    process: str | None = None

    def add(self, code: Code, severity: Severity, message: str, **values: Any) -> None:
        self.issues.append(Issue(code=code, severity=severity, message=message, **values))

    def decide(self) -> GeometryReport:
        """Set the verdict from the issues (unreadable stays unreadable)."""
        if self.verdict is Verdict.UNREADABLE:
            return self
        severities = {issue.severity for issue in self.issues}
        if Severity.FAIL in severities:
            self.verdict = Verdict.FAIL
        elif Severity.WARN in severities:
            self.verdict = Verdict.WARN
        else:
            self.verdict = Verdict.PASS
        return self
