"""HTTP routes of the registry under ``/api/v1``. Thin: parse, call a service, answer a schema."""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dgml.db import write_session
from dgml.deps import (
    Caller,
    Principal,
    Services,
    ServicesDep,
    SessionDep,
    WriteSessionDep,
    bearer_token,
)
from dgml.errors import Forbidden, Invalid, NotFound, PayloadTooLarge
from registry import accounts, activity, builds, forks, listing, service
from registry.blobs import BlobStore
from registry.cache import CachedVersion, cache_entry
from registry.licences import LICENCES
from registry.manifest import parse_manifest
from registry.models import Version
from registry.schemas import (
    Attribution,
    DesignCreate,
    DesignListed,
    DesignPublic,
    DesignUpdate,
    EventPublic,
    ForkCreate,
    Lineage,
    Page,
    TokenRevoked,
    UserCreate,
    UserCreated,
    UserPublic,
    VersionPublic,
    VersionSummary,
)
from registry.uploads import read_push_form
from registry.web import DESIGN, VERSION, Cursor, page_size, send_outbox, stored_reader

router = APIRouter(prefix="/api/v1")
# The hottest reads (version documents and files) sit in a router of their own that the app
# mounts first: routes are matched in order, and these should not wait behind thirty others.
hot_reads = APIRouter(prefix="/api/v1")
# Files up to this size are read in one go; larger ones stream (and answer Range requests).
WHOLE_READ_BYTES = 4 * 1024 * 1024


# --- accounts ---------------------------------------------------------------------------------


@router.get("/user", response_model=UserPublic, tags=["accounts"])
def whoami(caller: Caller, session: SessionDep) -> UserPublic:
    user = caller.load(session)
    return UserPublic(name=user.name, is_admin=user.is_admin, created_at=user.created_at)


@router.delete("/user/tokens/current", response_model=TokenRevoked, tags=["accounts"])
def revoke_token(request: Request, caller: Caller, session: WriteSessionDep) -> TokenRevoked:
    """Revoke the token this request carries (``dgml logout`` calls this): from now on it
    opens nothing. The account's other tokens are not touched."""
    row = accounts.revoke_token(session, bearer_token(request) or "")
    revoked = TokenRevoked.model_validate(row, from_attributes=True)
    session.commit()
    return revoked


@router.post("/users", response_model=UserCreated, status_code=201, tags=["accounts"])
def create_user(data: UserCreate, caller: Caller, session: WriteSessionDep) -> UserCreated:
    if not caller.is_admin:
        raise Forbidden("only an admin may create accounts")
    user = accounts.create_user(session, data.name, is_admin=data.admin)
    token = accounts.issue_token(session, user, label="created by " + caller.name)
    session.commit()
    return UserCreated(name=user.name, is_admin=user.is_admin, token=token)


@router.get("/users/{user_name}", response_model=UserPublic, tags=["accounts"])
def get_user(user_name: str, session: SessionDep) -> UserPublic:
    user = accounts.user_by_name(session, user_name)
    return UserPublic(name=user.name, is_admin=user.is_admin, created_at=user.created_at)


@router.get("/licences", tags=["designs"])
def list_licences() -> list[dict[str, object]]:
    """The licences a design may carry, with the terms that bind forks."""
    return [
        {
            "id": lic.id,
            "name": lic.name,
            "terms": lic.terms.value,
            "commercial_use": lic.commercial_use,
        }
        for lic in LICENCES.values()
    ]


# --- designs ----------------------------------------------------------------------------------


@router.post("/designs", response_model=DesignPublic, status_code=201, tags=["designs"])
def create_design(data: DesignCreate, caller: Caller, session: WriteSessionDep) -> DesignPublic:
    design = service.create_design(session, caller.load(session), data)
    session.commit()
    return service.design_public(design)


@router.get("/designs", response_model=Page[DesignListed], tags=["designs"])
def search_designs(
    services: ServicesDep,
    session: SessionDep,
    q: str | None = None,
    tag: str | None = None,
    license: str | None = None,
    owner: str | None = None,
    process: str | None = None,
    cursor: Cursor = None,
    limit: int | None = None,
) -> Page[DesignListed]:
    """Designs matching every filter, newest first, each with its latest version's geometry
    verdict and the processes that make it (``process`` keeps those made by that one)."""
    return listing.list_designs(
        session,
        q=q,
        tag=tag,
        license=license,
        owner=owner,
        process=process,
        cursor=cursor,
        limit=page_size(services, limit),
    )


@router.get(DESIGN, response_model=DesignPublic, tags=["designs"])
def get_design(owner: str, name: str, session: SessionDep) -> DesignPublic:
    return service.design_public(service.get_design(session, owner, name))


@router.patch(DESIGN, response_model=DesignPublic, tags=["designs"])
def update_design(
    owner: str, name: str, data: DesignUpdate, caller: Caller, session: WriteSessionDep
) -> DesignPublic:
    design = service.get_design(session, owner, name)
    service.update_design(session, design, caller.load(session), data)
    session.commit()
    return service.design_public(design)


def _change_maintainers(
    session: Session, caller: Principal, owner: str, name: str, user_name: str, change
) -> DesignPublic:
    design = service.get_design(session, owner, name)
    maintainer = accounts.user_by_name(session, user_name)
    change(session, design, caller.load(session), maintainer)
    session.commit()
    return service.design_public(design)


@router.put(DESIGN + "/maintainers/{user_name}", response_model=DesignPublic, tags=["designs"])
def add_maintainer(
    owner: str, name: str, user_name: str, caller: Caller, session: WriteSessionDep
) -> DesignPublic:
    """The owner makes an account a maintainer: it may push and decide change requests."""
    return _change_maintainers(session, caller, owner, name, user_name, service.add_maintainer)


@router.delete(DESIGN + "/maintainers/{user_name}", response_model=DesignPublic, tags=["designs"])
def remove_maintainer(
    owner: str, name: str, user_name: str, caller: Caller, session: WriteSessionDep
) -> DesignPublic:
    return _change_maintainers(session, caller, owner, name, user_name, service.remove_maintainer)


@router.get(DESIGN + "/lineage", response_model=Lineage, tags=["forks"])
def get_lineage(owner: str, name: str, session: SessionDep) -> Lineage:
    return forks.lineage(session, service.get_design(session, owner, name))


@router.get(DESIGN + "/activity", response_model=Page[EventPublic], tags=["designs"])
def get_activity(
    owner: str,
    name: str,
    services: ServicesDep,
    session: SessionDep,
    cursor: Cursor = None,
    limit: int | None = None,
) -> Page[EventPublic]:
    design = service.get_design(session, owner, name)
    return activity.list_events(session, design, cursor, page_size(services, limit))


# --- versions ---------------------------------------------------------------------------------

PUSH_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "the files; each upload's filename is its path",
                        },
                        "manifest": {"type": "string", "description": "JSON object (OKH-LOSH)"},
                        "message": {"type": "string"},
                        "tag": {"type": "string"},
                        "base": {
                            "type": "integer",
                            "description": "the newest version the push was made on (0: none);"
                            " 409 if the design has moved past it",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    DESIGN + "/versions",
    response_model=VersionPublic,
    status_code=201,
    tags=["versions"],
    openapi_extra=PUSH_FORM_DOC,
)
async def push_version(
    owner: str,
    name: str,
    request: Request,
    caller: Caller,
    services: ServicesDep,
    background: BackgroundTasks,
) -> VersionPublic:
    """Push a new version. The body streams to disk; nothing is kept unless all of it is good.

    Its model files are then validated by a worker: the version's ``verdict`` is ``pending``
    until every report is in (``GET .../versions/{n}/report``)."""
    settings = services.settings
    background.add_task(send_outbox, services)

    def check_rights() -> None:
        with services.sessions() as session:
            design = service.get_design(session, owner, name)
            service.require_maintainer(design, caller.load(session), "push versions")

    await run_in_threadpool(check_rights)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"upload exceeds the limit of {settings.max_upload_bytes} bytes",
            limit=settings.max_upload_bytes,
        )
    form = await read_push_form(
        request.stream(),
        request.headers.get("content-type"),
        services.blobs,
        max_bytes=settings.max_upload_bytes,
        max_files=settings.max_files_per_version,
    )

    def store() -> VersionPublic:
        try:
            manifest = parse_manifest(form.text.get("manifest"))
            base = _base_version(form.text.get("base"))
            if not form.files:
                raise Invalid("a version needs at least one file", field="files")
            with write_session(services.sessions) as session:
                design = service.get_design(session, owner, name)
                user = caller.load(session)
                service.require_maintainer(design, user, "push versions")
                if design.archived:
                    raise Invalid(
                        f"{owner}/{name} is archived: it takes no new versions", field="design"
                    )
                version = service.create_version(
                    session,
                    design,
                    user,
                    form.entries(),
                    manifest=manifest,
                    message=form.text.get("message", ""),
                    tag=form.text.get("tag") or None,
                    base=base,
                )
                builds.request_default_build(
                    session, version, lambda path: form.read(path, builds.MAX_SOURCE_BYTES + 1)
                )
                # Blobs go into the store only once the version is sure to be written; the
                # transaction commits right after, when this block ends.
                form.commit()
                return service.version_public(version)
        finally:
            form.abort()

    return await run_in_threadpool(store)


def _base_version(text: str | None) -> int | None:
    """The optional ``base`` form field: the version number the push was made on (0: none)."""
    if text is None or text.strip() == "":
        return None
    if not text.strip().isdigit() or len(text.strip()) > 9:
        raise Invalid(
            "base must be a version number (0 for a design without versions)", field="base"
        )
    return int(text)


@router.get(DESIGN + "/versions", response_model=Page[VersionSummary], tags=["versions"])
def list_versions(
    owner: str,
    name: str,
    services: ServicesDep,
    session: SessionDep,
    cursor: Cursor = None,
    limit: int | None = None,
) -> Page[VersionSummary]:
    design = service.get_design(session, owner, name)
    return service.list_versions(session, design, cursor, page_size(services, limit))


def _version(session: Session, owner: str, name: str, ref: str) -> Version:
    return service.get_version(session, service.get_design(session, owner, name), ref)


async def _cached_version(services: Services, owner: str, name: str, ref: str) -> CachedVersion:
    """The version's rendered document and file table, from the cache when it is numbered."""
    number = int(ref) if ref.isdigit() and int(ref) <= service.MAX_INT32 else None
    if number is not None and (hit := services.versions.get(owner, name, number)) is not None:
        return hit

    def load() -> CachedVersion:
        with services.sessions() as session:
            version = _version(session, owner, name, ref)
            public = service.version_public(version)
            entry = cache_entry(version, public)
        # A version never changes, and neither does a verdict once all its reports are in;
        # while it is pending, the next read asks again.
        if entry.final:
            services.versions.put(owner, name, version.number, entry)
        return entry

    return await run_in_threadpool(load)


def _path_parameters(*names: str) -> dict[str, object]:
    """OpenAPI text for path parameters that a handler reads from the request itself."""
    return {
        "parameters": [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    }


# The two handlers below take only the request and read their path parameters from it: they are
# the hottest reads, and a cache hit should cost neither a trip through the thread pool nor the
# framework's parameter validation (the values are plain strings either way).


@hot_reads.get(
    VERSION,
    response_model=VersionPublic,
    tags=["versions"],
    openapi_extra=_path_parameters("owner", "name", "ref"),
)
async def get_version(request: Request) -> Response:
    """A version: its files, manifest, parents and author (``ref``: a number, a tag or latest)."""
    owner, name, ref = (request.path_params[k] for k in ("owner", "name", "ref"))
    entry = await _cached_version(request.app.state.services, owner, name, ref)
    headers = _immutable(ref) if entry.final else {"cache-control": "no-cache"}
    return Response(entry.body, media_type="application/json", headers=headers)


@router.get(VERSION + "/attribution", response_model=Attribution, tags=["forks"])
def get_attribution(owner: str, name: str, ref: str, session: SessionDep) -> Attribution:
    return forks.attribution(_version(session, owner, name, ref))


def _immutable(ref: str) -> dict[str, str]:
    # A version number names the same bytes forever; a tag or "latest" does not.
    return {"cache-control": "public, max-age=31536000, immutable"} if ref.isdigit() else {}


def _inline(filename: str) -> str:
    if filename.isascii() and '"' not in filename and "\\" not in filename:
        return f'inline; filename="{filename}"'
    return f"inline; filename*=utf-8''{quote(filename)}"


@hot_reads.get(
    VERSION + "/files/{path:path}",
    tags=["versions"],
    openapi_extra=_path_parameters("owner", "name", "ref", "path"),
)
@hot_reads.head(VERSION + "/files/{path:path}", include_in_schema=False)
async def get_file(request: Request) -> Response:
    """One file of a version, with its sha256 as ETag."""
    owner, name, ref, path = (request.path_params[k] for k in ("owner", "name", "ref", "path"))
    services: Services = request.app.state.services
    entry = await _cached_version(services, owner, name, ref)
    file = entry.files.get(path)
    if file is None:
        raise NotFound(f"version {ref} of {owner}/{name} has no file {path!r}")
    etag = f'"{file.sha256}"'
    headers = {"etag": etag, **_immutable(ref)}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    headers["content-disposition"] = _inline(posixpath.basename(path))
    blob = services.blobs.path_for(file.sha256)
    if file.size <= WHOLE_READ_BYTES:
        # Small files come from memory, or in one read in one worker thread: streaming them
        # would cost more in thread trips than the bytes themselves.
        body = services.file_bytes.get(file.sha256)
        if body is None:
            body = await run_in_threadpool(blob.read_bytes)
            services.file_bytes.put(file.sha256, body)
        return Response(body, media_type=file.media_type, headers=headers)
    response = FileResponse(blob, media_type=file.media_type, headers=headers)
    response.chunk_size = 1024 * 1024
    return response


class _ZipSink:
    """A write-only file for :class:`zipfile.ZipFile` that hands out what was written so far."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _zip_stream(blobs: BlobStore, files: list[tuple[str, str]]) -> Iterator[bytes]:
    sink = _ZipSink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path, sha in files:
            with (
                zf.open(path, mode="w", force_zip64=True) as member,
                blobs.path_for(sha).open("rb") as source,
            ):
                while chunk := source.read(1024 * 1024):
                    member.write(chunk)
                    yield sink.drain()
            yield sink.drain()
    yield sink.drain()


@router.get(VERSION + "/archive.zip", tags=["versions"])
def get_archive(
    owner: str, name: str, ref: str, services: ServicesDep, session: SessionDep
) -> StreamingResponse:
    version = _version(session, owner, name, ref)
    files = [(f.path, f.sha256) for f in version.files]
    filename = f"{version.design.owner.name}-{version.design.name}-v{version.number}.zip"
    return StreamingResponse(
        _zip_stream(services.blobs, files),
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="{filename}"', **_immutable(ref)},
    )


@router.post(VERSION + "/fork", response_model=DesignPublic, status_code=201, tags=["forks"])
def fork(
    owner: str,
    name: str,
    ref: str,
    caller: Caller,
    session: WriteSessionDep,
    services: ServicesDep,
    background: BackgroundTasks,
    data: ForkCreate | None = None,
) -> DesignPublic:
    background.add_task(send_outbox, services)
    origin = _version(session, owner, name, ref)
    design = forks.fork_version(session, origin, caller.load(session), data or ForkCreate())
    first = service.get_version(session, design, 1)
    builds.request_default_build(session, first, stored_reader(services, first))
    session.commit()
    return service.design_public(design)
