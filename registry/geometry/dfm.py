"""Design-for-manufacturing checks per process, with their thresholds in one table.

Each rule says what a fablab needs from a part to make it with that process; a part that breaks
one gets a warning with the numbers (most can still be made, with supports, a finer nozzle or a
second look). Checks that need more than a mesh (CNC undercuts, laser flatness) come later.

=======  ==============  ================  ==================================================
process  min wall (mm)   max overhang      source
=======  ==============  ================  ==================================================
fdm      0.8             45 deg from       two extrusion widths of a 0.4 mm nozzle; the 45
                         vertical          degree rule for unsupported overhangs (Prusa
                                           Knowledge Base, "Modeling with 3D printing in mind")
sla      0.4             -                 Formlabs design guide: unsupported walls 0.4 mm
sls      0.7             -                 Formlabs Fuse design guide: walls 0.6-0.8 mm
cnc      1.0             -                 Protolabs/Xometry CNC guides: ~0.8 mm metal,
                                           1.5 mm plastic; 1.0 as a middle
laser    -               -                 a sheet process: thickness is the sheet's
=======  ==============  ================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from registry.geometry.mesh import MeshData
from registry.geometry.report import Code, GeometryReport, Severity


@dataclass(frozen=True)
class ProcessRules:
    process: str
    min_wall_mm: float | None
    # Faces leaning further than this from vertical, facing down, need support (FDM).
    max_overhang_deg: float | None = None
    # Share of the part's footprint that should rest on the bed (FDM adhesion).
    min_bed_contact_share: float | None = None


PROCESS_RULES: dict[str, ProcessRules] = {
    "fdm": ProcessRules("fdm", 0.8, max_overhang_deg=45.0, min_bed_contact_share=0.05),
    "sla": ProcessRules("sla", 0.4),
    "sls": ProcessRules("sls", 0.7),
    "cnc": ProcessRules("cnc", 1.0),
    "laser": ProcessRules("laser", None),
}

# Walls are measured on at most this many faces (the largest ones first): enough to find a thin
# region, few enough to stay within a second or two on the ray engine.
MAX_THICKNESS_SAMPLES = 50_000
# A thin region smaller than this share of the surface is noise (fillets, tips of text).
MIN_REPORTED_SHARE = 0.01
_BED_TOLERANCE_MM = 0.01


def _faces(mesh: MeshData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, 3, 3) corners, (m, 3) unit normals and (m,) areas of the finite faces."""
    tri = mesh.triangles()
    tri = tri[np.isfinite(tri).all(axis=(1, 2))]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    doubled = np.linalg.norm(cross, axis=1)
    keep = doubled > 0
    return tri[keep], cross[keep] / doubled[keep, None], doubled[keep] / 2


def overhangs(normals: np.ndarray, areas: np.ndarray, corners: np.ndarray, max_deg: float):
    """Area (mm2) of faces that face down more steeply than ``max_deg`` from vertical, leaving out
    the faces that lie on the bed; and the area of those that do lie on it."""
    z_min = corners[:, :, 2].min()
    on_bed = (np.abs(corners[:, :, 2] - z_min) < _BED_TOLERANCE_MM).all(axis=1) & (
        normals[:, 2] < -0.999
    )
    steep = normals[:, 2] < -np.sin(np.radians(90 - max_deg))
    return float(areas[steep & ~on_bed].sum()), float(areas[on_bed].sum())


def wall_thickness(mesh: MeshData, corners, normals, areas) -> tuple[np.ndarray, np.ndarray]:
    """Thickness (mm) behind sampled faces, by casting a ray inward from each face's centre to
    the next surface; and the sampled faces' areas. Rays that find nothing are left out."""
    import trimesh

    order = np.argsort(areas)[::-1][:MAX_THICKNESS_SAMPLES]
    centres = corners[order].mean(axis=1)
    inward = -normals[order]
    solid = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    origins = centres + inward * 1e-4
    hits, ray, _ = solid.ray.intersects_location(origins, inward, multiple_hits=False)
    thickness = np.full(len(order), np.nan)
    thickness[ray] = np.linalg.norm(hits - centres[ray], axis=1)
    found = np.isfinite(thickness)
    return thickness[found], areas[order][found]


def check_process(mesh: MeshData, report: GeometryReport, process: str) -> None:
    """Add the process's issues to ``report`` (which must already hold the mesh checks)."""
    rules = PROCESS_RULES[process]
    report.process = process
    if not report.metrics.watertight or not report.metrics.winding_consistent:
        return  # inside and outside mean nothing on an open or inconsistent mesh
    corners, normals, areas = _faces(mesh)
    if len(areas) == 0:
        return
    total = float(areas.sum())
    if rules.max_overhang_deg is not None:
        overhang, bed = overhangs(normals, areas, corners, rules.max_overhang_deg)
        report.metrics.overhang_area_mm2 = round(overhang, 3)
        report.metrics.bed_contact_area_mm2 = round(bed, 3)
        if overhang > MIN_REPORTED_SHARE * total:
            report.add(
                Code.OVERHANGS,
                Severity.WARN,
                f"{overhang:,.1f} mm2 ({overhang / total:.0%} of the surface) overhangs more than "
                f"{rules.max_overhang_deg:g} degrees in this orientation: it needs supports",
                area_mm2=round(overhang, 3),
                max_overhang_deg=rules.max_overhang_deg,
            )
        size = report.metrics.size_mm or [0, 0, 0]
        footprint = size[0] * size[1]
        if (
            rules.min_bed_contact_share
            and footprint > 0
            and (bed < rules.min_bed_contact_share * footprint)
        ):
            report.add(
                Code.SMALL_BED_CONTACT,
                Severity.WARN,
                f"only {bed:,.1f} mm2 rests on the bed in this orientation "
                f"({bed / footprint:.0%} of the {footprint:,.0f} mm2 footprint): it may "
                "come loose; turn it or add a brim",
                area_mm2=round(bed, 3),
            )
    if rules.min_wall_mm is not None:
        thickness, sampled = wall_thickness(mesh, corners, normals, areas)
        if len(thickness):
            thin = thickness < rules.min_wall_mm
            share = float(sampled[thin].sum() / sampled.sum())
            report.metrics.min_wall_mm = round(float(thickness.min()), 3)
            if share > MIN_REPORTED_SHARE:
                report.add(
                    Code.THIN_WALLS,
                    Severity.WARN,
                    f"walls down to {thickness[thin].min():.2f} mm cover {share:.0%} of the "
                    f"surface; {process} needs at least {rules.min_wall_mm:g} mm",
                    min_wall_mm=round(float(thickness[thin].min()), 3),
                    required_mm=rules.min_wall_mm,
                    area_share=round(share, 4),
                )
