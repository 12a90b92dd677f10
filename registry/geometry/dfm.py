"""Design-for-manufacturing checks per process, with their thresholds in one table.

Each rule says what a fablab needs from a part to make it with that process; a part that breaks
one gets an issue with the numbers. Most are warnings (the part can still be made, with
supports, a finer nozzle, escape holes, a second setup); a part a laser cannot cut at all (not
a flat sheet) fails. The checks themselves live by concern: ``dfm_voids`` (trapped volumes),
``dfm_cnc`` (undercuts, internal corners), ``dfm_sheet`` (flatness and the laser's outline),
on the welded mesh of ``dfm_mesh``.

=======  ==================  ===========  ==================================================
process  rule                value        source
=======  ==================  ===========  ==================================================
fdm      min wall            0.8 mm       two extrusion widths of a 0.4 mm nozzle
fdm      max overhang        45 deg from  the 45 degree rule for unsupported overhangs (Prusa
                             vertical     Knowledge Base, "Modeling with 3D printing in mind")
fdm      bed contact         5% of the    a rule of thumb of this project: less than that
                             footprint    comes loose without a brim
sla      min wall            0.4 mm       Formlabs design guide: unsupported walls 0.4 mm
sla      drain hole          3.5 mm       Formlabs design guide: hollow parts need drain
                                          holes of 3.5 mm diameter or more
sls      min wall            0.7 mm       Formlabs Fuse design guide: walls 0.6-0.8 mm
sls      escape hole         5 mm         Formlabs Fuse (SLS) design guide: escape holes of
                                          5 mm; other SLS services ask 3.5-4 mm
cnc      min wall            1.0 mm       Protolabs/Xometry CNC guides: ~0.8 mm metal,
                                          1.5 mm plastic; 1.0 as a middle
cnc      undercuts           3-axis, the  Hubs (Protolabs Network) CNC design guide: the
                             tool from    tool approaches from above; what it cannot reach
                             +Z           needs another setup or a 5-axis machine
cnc      min internal        1.0 mm       Hubs CNC design guide: internal vertical corners
         radius                           keep the cutter's radius (recommended 1/3 of the
                                          cavity depth); 1 mm is the radius of a 2 mm end
                                          mill, the smallest common stock size
laser    flat sheet          prism only   a laser cuts straight through a sheet: an outline
                                          extruded by one thickness, nothing else
laser    max sheet           10 mm        CO2 laser makers' material tables: a 60-100 W
                                          tube, the fablab range, cuts plywood, MDF and
                                          acrylic up to about 8-12 mm
=======  ==================  ===========  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from registry.geometry.dfm_cnc import sharp_internal_corners, undercuts
from registry.geometry.dfm_mesh import Solid
from registry.geometry.dfm_sheet import NotFlat, sheet_profile
from registry.geometry.dfm_voids import find_voids
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
    # What a closed void traps, and the hole (diameter, mm) that lets it out (SLA, SLS).
    trapped: str | None = None
    escape_hole_mm: float | None = None
    # Milled with a 3-axis machine from +Z: undercuts and internal corner radii (CNC).
    three_axis: bool = False
    min_internal_radius_mm: float | None = None
    # Cut from a flat sheet no thicker than this (laser).
    max_sheet_mm: float | None = None


PROCESS_RULES: dict[str, ProcessRules] = {
    "fdm": ProcessRules("fdm", 0.8, max_overhang_deg=45.0, min_bed_contact_share=0.05),
    "sla": ProcessRules("sla", 0.4, trapped="uncured resin", escape_hole_mm=3.5),
    "sls": ProcessRules("sls", 0.7, trapped="unsintered powder", escape_hole_mm=5.0),
    "cnc": ProcessRules("cnc", 1.0, three_axis=True, min_internal_radius_mm=1.0),
    "laser": ProcessRules("laser", None, max_sheet_mm=10.0),
}

# Walls are measured on at most this many faces (the largest ones first): enough to find a thin
# region, few enough to stay within a second or two on the ray engine.
MAX_THICKNESS_SAMPLES = 50_000
# A thin region smaller than this share of the surface is noise (fillets, tips of text).
MIN_REPORTED_SHARE = 0.01
# Undercuts under this share of the surface are left out: an estimate from sampled rays.
MIN_UNDERCUT_SHARE = 0.001
_BED_TOLERANCE_MM = 0.01


def overhangs(normals: np.ndarray, areas: np.ndarray, corners: np.ndarray, max_deg: float):
    """Area (mm2) of faces that face down more steeply than ``max_deg`` from vertical, leaving out
    the faces that lie on the bed; and the area of those that do lie on it."""
    z_min = corners[:, :, 2].min()
    on_bed = (np.abs(corners[:, :, 2] - z_min) < _BED_TOLERANCE_MM).all(axis=1) & (
        normals[:, 2] < -0.999
    )
    steep = normals[:, 2] < -np.sin(np.radians(90 - max_deg))
    return float(areas[steep & ~on_bed].sum()), float(areas[on_bed].sum())


def wall_thickness(solid: Solid) -> tuple[np.ndarray, np.ndarray]:
    """Thickness (mm) behind sampled faces, by casting a ray inward from each face's centre to
    the next surface; and the sampled faces' areas. Rays that find nothing are left out."""
    order = np.argsort(solid.areas)[::-1][:MAX_THICKNESS_SAMPLES]
    order = order[solid.areas[order] > 0]
    centres = solid.centres(order)
    inward = -solid.normals[order]
    origins = centres + inward * 1e-4
    hits, ray, _ = solid.ray.intersects_location(origins, inward, multiple_hits=False)
    thickness = np.full(len(order), np.nan)
    thickness[ray] = np.linalg.norm(hits - centres[ray], axis=1)
    found = np.isfinite(thickness)
    return thickness[found], solid.areas[order][found]


def check_process(mesh: MeshData, report: GeometryReport, process: str) -> None:
    """Add the process's issues to ``report`` (which must already hold the mesh checks)."""
    rules = PROCESS_RULES[process]
    report.process = process
    if not report.metrics.watertight or not report.metrics.winding_consistent:
        return  # inside and outside mean nothing on an open or inconsistent mesh
    solid = Solid.from_mesh(mesh)
    if solid.face_count == 0 or not solid.areas.sum() > 0:
        return
    if rules.max_overhang_deg is not None:
        _check_overhangs(solid, report, rules)
    if rules.min_wall_mm is not None:
        _check_walls(solid, report, rules)
    if rules.escape_hole_mm is not None:
        _check_voids(solid, report, rules)
    if rules.three_axis:
        _check_three_axis(solid, report, rules)
    if rules.max_sheet_mm is not None:
        _check_sheet(solid, report, rules)


def _check_overhangs(solid: Solid, report: GeometryReport, rules: ProcessRules) -> None:
    total = float(solid.areas.sum())
    overhang, bed = overhangs(solid.normals, solid.areas, solid.corners(), rules.max_overhang_deg)
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
        and bed < rules.min_bed_contact_share * footprint
    ):
        report.add(
            Code.SMALL_BED_CONTACT,
            Severity.WARN,
            f"only {bed:,.1f} mm2 rests on the bed in this orientation "
            f"({bed / footprint:.0%} of the {footprint:,.0f} mm2 footprint): it may "
            "come loose; turn it or add a brim",
            area_mm2=round(bed, 3),
        )


def _check_walls(solid: Solid, report: GeometryReport, rules: ProcessRules) -> None:
    thickness, sampled = wall_thickness(solid)
    if not len(thickness):
        return
    thin = thickness < rules.min_wall_mm
    share = float(sampled[thin].sum() / sampled.sum())
    report.metrics.min_wall_mm = round(float(thickness.min()), 3)
    if share > MIN_REPORTED_SHARE:
        report.add(
            Code.THIN_WALLS,
            Severity.WARN,
            f"walls down to {thickness[thin].min():.2f} mm cover {share:.0%} of the "
            f"surface; {rules.process} needs at least {rules.min_wall_mm:g} mm",
            min_wall_mm=round(float(thickness[thin].min()), 3),
            required_mm=rules.min_wall_mm,
            area_share=round(share, 4),
        )


def _check_voids(solid: Solid, report: GeometryReport, rules: ProcessRules) -> None:
    voids = find_voids(solid.vertices, solid.faces)
    report.metrics.trapped_volume_mm3 = round(voids.total_mm3, 3)
    report.metrics.trapped_voids = voids.count
    if not voids.count:
        return
    what = "a closed void" if voids.count == 1 else f"{voids.count} closed voids"
    report.add(
        Code.TRAPPED_VOLUME,
        Severity.WARN,
        f"the part holds {what} ({voids.total_mm3:,.1f} mm3) with no opening: "
        f"{rules.process} leaves it full of {rules.trapped}; open each void with an escape "
        f"hole of at least {rules.escape_hole_mm:g} mm (two per void drain best), or fill it",
        voids=voids.count,
        volume_mm3=round(voids.total_mm3, 3),
        void_volumes_mm3=[round(float(v), 3) for v in voids.volumes_mm3[:20]],
        escape_hole_mm=rules.escape_hole_mm,
    )


def _check_three_axis(solid: Solid, report: GeometryReport, rules: ProcessRules) -> None:
    cut = undercuts(solid)
    report.metrics.undercut_area_mm2 = round(cut.area_mm2, 3)
    if cut.share > MIN_UNDERCUT_SHARE:
        report.add(
            Code.UNDERCUTS,
            Severity.WARN,
            f"{cut.area_mm2:,.1f} mm2 ({cut.share:.0%} of the surface) cannot be reached by a "
            f"tool coming from above ({cut.down_mm2:,.1f} mm2 faces down, "
            f"{cut.shadowed_mm2:,.1f} mm2 lies under material): it needs another setup "
            "or a 4/5-axis machine",
            area_mm2=round(cut.area_mm2, 3),
            area_share=round(cut.share, 4),
            down_area_mm2=round(cut.down_mm2, 3),
            shadowed_area_mm2=round(cut.shadowed_mm2, 3),
        )
    if rules.min_internal_radius_mm is None:
        return
    corners = sharp_internal_corners(solid)
    report.metrics.sharp_internal_corners = corners.count
    report.metrics.sharp_corner_length_mm = round(corners.length_mm, 3)
    if corners.count:
        report.add(
            Code.SMALL_INTERNAL_RADII,
            Severity.WARN,
            f"{corners.count} internal vertical corners ({corners.length_mm:,.1f} mm of edge) "
            f"are sharp: a milling cutter leaves its own radius there; round them to at least "
            f"{rules.min_internal_radius_mm:g} mm, or add dog-bone reliefs where a square part "
            "must fit",
            corners=corners.count,
            length_mm=round(corners.length_mm, 3),
            min_radius_mm=rules.min_internal_radius_mm,
        )


def _check_sheet(solid: Solid, report: GeometryReport, rules: ProcessRules) -> None:
    profile = sheet_profile(solid)
    if isinstance(profile, NotFlat):
        report.add(
            Code.NOT_FLAT,
            Severity.FAIL,
            f"a laser cuts flat sheets only, and this part is not one: {profile.reason}",
            reason=profile.reason,
        )
        return
    thickness = profile.thickness_mm
    width, height = profile.size_mm
    report.metrics.sheet_thickness_mm = round(thickness, 3)
    report.metrics.sheet_size_mm = [round(width, 3), round(height, 3)]
    report.metrics.profile_loops = len(profile.loops)
    report.metrics.cut_length_mm = round(profile.cut_length_mm, 3)
    if thickness > rules.max_sheet_mm:
        report.add(
            Code.SHEET_TOO_THICK,
            Severity.WARN,
            f"the part is a {round(thickness, 2):g} mm sheet; a fablab's CO2 laser cuts up to "
            f"about {rules.max_sheet_mm:g} mm (thicker needs a CNC router or a waterjet)",
            thickness_mm=round(thickness, 3),
            max_mm=rules.max_sheet_mm,
        )
