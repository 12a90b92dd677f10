"""HTTP routes of parametric builds: a version's parameters, builds on demand, built files."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from dgml.deps import Caller, ServicesDep, SessionDep, WriteSessionDep
from dgml.errors import NotFound
from registry import builds, service
from registry.models import Build, Version
from registry.paths import media_type_for
from registry.schemas import BuildPublic, BuildRequest, BuiltFile, ParameterList
from registry.web import VERSION, send_outbox

router = APIRouter(prefix="/api/v1", tags=["builds"])


def _version(session: Session, owner: str, name: str, ref: str) -> Version:
    return service.get_version(session, service.get_design(session, owner, name), ref)


def build_public(session: Session, build: Build) -> BuildPublic:
    version = build.version
    label = f"{version.design.owner.name}/{version.design.name}"
    base = f"/api/v1/designs/{label}/versions/{version.number}/builds/{build.parameter_hash}"
    return BuildPublic(
        id=build.parameter_hash,
        design=label,
        version=version.number,
        state=build.state,
        verdict=builds.build_verdict(session, build),
        parameters=build.parameters,
        files=[BuiltFile(**f, url=f"{base}/files/{f['path']}") for f in build.files],
        error=build.error,
        limit=build.limit_hit,
        log=build.log,
        seconds=build.seconds,
        created_at=build.created_at,
        finished_at=build.finished_at,
    )


@router.get(VERSION + "/parameters", response_model=ParameterList)
def get_parameters(
    owner: str, name: str, ref: str, services: ServicesDep, session: SessionDep
) -> ParameterList:
    """The parameters a maker may set on this version's CadQuery source (none when it has no
    source)."""
    version = _version(session, owner, name, ref)
    source = builds.version_source(session, services.blobs, version)
    if source is None:
        return ParameterList(source=None, parameters=[])
    return ParameterList(
        source=source.path,
        parameters=[p.model_dump(mode="json", exclude_none=True) for p in source.parameters],
    )


@router.post(VERSION + "/builds", response_model=BuildPublic, status_code=201)
def post_build(
    owner: str,
    name: str,
    ref: str,
    caller: Caller,
    services: ServicesDep,
    session: WriteSessionDep,
    response: Response,
    data: BuildRequest | None = None,
) -> BuildPublic:
    """Build the source with these parameter values (201), or answer the build that already
    has them (200): the same values twice build once."""
    version = _version(session, owner, name, ref)
    source = builds.version_source(session, services.blobs, version)
    if source is None:
        raise NotFound(f"version {version.number} of {owner}/{name} has no parametric source")
    build, created = builds.request_build(
        session, version, source.parameters, (data or BuildRequest()).params, caller.load(session)
    )
    session.commit()
    if created:
        send_outbox(services)
    else:
        response.status_code = 200
    return build_public(session, build)


@router.get(VERSION + "/builds/{build_id}", response_model=BuildPublic)
def get_build(owner: str, name: str, ref: str, build_id: str, session: SessionDep) -> BuildPublic:
    version = _version(session, owner, name, ref)
    return build_public(session, builds.get_build(session, version, build_id))


@router.get(VERSION + "/builds/{build_id}/files/{path:path}")
def get_built_file(
    owner: str,
    name: str,
    ref: str,
    build_id: str,
    path: str,
    services: ServicesDep,
    session: SessionDep,
) -> FileResponse:
    """A built file, with its sha256 as ETag."""
    version = _version(session, owner, name, ref)
    build = builds.get_build(session, version, build_id)
    entry = next((f for f in build.files if f["path"] == path), None)
    if entry is None:
        raise NotFound(f"build {build_id[:12]} has no file {path!r}")
    return FileResponse(
        services.blobs.path_for(entry["sha256"]),
        media_type=media_type_for(path),
        headers={
            "etag": f'"{entry["sha256"]}"',
            "cache-control": "public, max-age=31536000, immutable",
        },
    )
