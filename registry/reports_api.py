"""HTTP routes for geometry: a version's reports, its previews, and diffs between versions."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from dgml.deps import ServicesDep, SessionDep
from dgml.errors import NotFound
from registry import service, validation
from registry.geometry.checks import CHECKER_VERSION
from registry.models import Version
from registry.schemas import FileChange, FileReport, VersionDiff, VersionReport
from registry.web import DESIGN, VERSION

router = APIRouter(prefix="/api/v1", tags=["geometry"])
PREVIEW_TYPES = {"png": "image/png", "glb": "model/gltf-binary"}


def _label(version: Version) -> str:
    return f"{version.design.owner.name}/{version.design.name}"


@router.get(VERSION + "/report", response_model=VersionReport)
def get_report(owner: str, name: str, ref: str, session: SessionDep) -> VersionReport:
    """The geometry report of each model file of a version, and the version's verdict."""
    version = service.get_version(session, service.get_design(session, owner, name), ref)
    models = [f for f in version.files if validation.reader_for(f.path)]
    reports = validation.reports_for(
        session, {(f.sha256, validation.reader_for(f.path)) for f in models}
    )
    base = f"/api/v1/designs/{_label(version)}/versions/{version.number}/previews/"
    files = []
    for f in models:
        row = reports.get((f.sha256, validation.reader_for(f.path)))
        if row is None:
            files.append(FileReport(path=f.path, sha256=f.sha256, verdict=validation.PENDING))
            continue
        previews = {
            kind: f"{base}{f.path}?format={kind}"
            for kind, sha in (("png", row.preview_png), ("glb", row.preview_glb))
            if sha
        }
        files.append(
            FileReport(
                path=f.path,
                sha256=f.sha256,
                verdict=row.verdict,
                report={**row.report, "path": f.path},
                previews=previews,
            )
        )
    return VersionReport(
        design=_label(version),
        number=version.number,
        verdict=validation.verdict_of(version.files, reports),
        checker_version=CHECKER_VERSION,
        files=files,
    )


@router.get(VERSION + "/previews/{path:path}")
def get_preview(
    owner: str,
    name: str,
    ref: str,
    path: str,
    services: ServicesDep,
    session: SessionDep,
    format: Literal["png", "glb"] = Query("png", description="png thumbnail or glb model"),
) -> FileResponse:
    """A model file's preview: a PNG thumbnail, or a GLB for web viewers."""
    version = service.get_version(session, service.get_design(session, owner, name), ref)
    entry = next((f for f in version.files if f.path == path), None)
    reader = validation.reader_for(path) if entry else None
    if entry is None or reader is None:
        raise NotFound(f"version {version.number} has no model file {path!r}")
    row = validation.reports_for(session, {(entry.sha256, reader)}).get((entry.sha256, reader))
    sha = None if row is None else (row.preview_png if format == "png" else row.preview_glb)
    if sha is None:
        state = "is still being checked" if row is None else f"has no {format} preview"
        raise NotFound(f"{path} {state}")
    return FileResponse(
        services.blobs.path_for(sha),
        media_type=PREVIEW_TYPES[format],
        headers={"etag": f'"{sha}"', "cache-control": "public, max-age=31536000, immutable"},
    )


@router.get(DESIGN + "/versions/{a}/diff/{b}", response_model=VersionDiff)
async def get_diff(owner: str, name: str, a: str, b: str, services: ServicesDep) -> VersionDiff:
    """What changed from version ``a`` to version ``b``: files added, removed and changed, and
    for each changed model the geometry deltas (computed once, then kept)."""

    def compute() -> VersionDiff:
        with services.sessions() as session:
            design = service.get_design(session, owner, name)
            old = service.get_version(session, design, a)
            new = service.get_version(session, design, b)
            label, numbers = _label(new), (old.number, new.number)
            before = {f.path: f.sha256 for f in old.files}
            after = {f.path: f.sha256 for f in new.files}
        # The session is closed before any model is compared: a diff may take seconds.
        both = before.keys() & after.keys()
        changed = []
        for path in sorted(p for p in both if before[p] != after[p]):
            change = FileChange(path=path, old_sha256=before[path], new_sha256=after[path])
            reader = validation.reader_for(path)
            if reader is not None:
                change.geometry = validation.geometry_diff(
                    services.sessions,
                    services.blobs,
                    services.settings,
                    validation.DiffSide(before[path], path, reader),
                    validation.DiffSide(after[path], path, reader),
                )
            changed.append(change)
        return VersionDiff(
            design=label,
            old=numbers[0],
            new=numbers[1],
            added=sorted(after.keys() - before.keys()),
            removed=sorted(before.keys() - after.keys()),
            changed=changed,
            unchanged=sorted(p for p in both if before[p] == after[p]),
        )

    return await run_in_threadpool(compute)
