"""One model file in, one geometry report out: read, check, fit the build volume.

The same function serves the registry's validation jobs and ``dgml validate`` offline, so a
maker sees exactly what a fablab will see.
"""

from __future__ import annotations

from pathlib import Path

from registry.geometry.checks import CHECKER_VERSION, check_mesh
from registry.geometry.dfm import check_process
from registry.geometry.fit import fit_in_volume
from registry.geometry.intersect import check_self_intersections
from registry.geometry.mesh import Unreadable
from registry.geometry.readers import read_model
from registry.geometry.report import Code, GeometryReport, Severity, Verdict


def unreadable_report(name: str, reason: str) -> GeometryReport:
    report = GeometryReport(path=name, verdict=Verdict.UNREADABLE, checker_version=CHECKER_VERSION)
    report.add(Code.UNREADABLE, Severity.FAIL, reason)
    return report


def validate_model(
    data: bytes | Path,
    name: str,
    *,
    build_volume_mm: tuple[float, float, float] | None = None,
    process: str | None = None,
) -> GeometryReport:
    """The report of one model file; never raises for a bad file (the verdict says so)."""
    try:
        mesh = read_model(data, name)
    except Unreadable as exc:
        return unreadable_report(name, exc.reason)
    report = check_mesh(mesh)
    if not {Code.EMPTY, Code.NON_FINITE} & {issue.code for issue in report.issues}:
        # kept out of check_mesh, which is timed on its own against admesh
        check_self_intersections(mesh, report)
    report.path = name
    report.format = mesh.source_format
    if build_volume_mm is not None and mesh.triangle_count:
        fit = fit_in_volume(mesh.vertices, build_volume_mm)
        volume = "x".join(f"{v:g}" for v in build_volume_mm)
        if fit.fits:
            report.metrics.fit_extents_mm = [round(float(v), 3) for v in fit.extents]
        else:
            report.add(
                Code.EXCEEDS_BUILD_VOLUME,
                Severity.FAIL,
                f"the part does not fit a {volume} mm build volume in any orientation "
                f"(best try leaves {-fit.clearance:.1f} mm too little)",
                build_volume_mm=list(build_volume_mm),
                shortfall_mm=round(-fit.clearance, 3),
            )
    if process is not None and mesh.triangle_count:
        check_process(mesh, report, process)
    return report.decide()
