"""Parametric builds: a version's CadQuery source built with a maker's parameter values.

A version is parametric when it holds a CadQuery script: the path its manifest names in
``source``, or ``design.py``. Its parameters are read from the script and the manifest at push
time (a broken declaration is refused with a 422 then, not discovered by the first maker).

Builds are rows keyed by ``(version, parameter hash)``, the hash of the complete resolved
parameter set: asking twice for the same values gives the same build, built once. Writing a
version posts the build of its defaults; ``POST .../builds`` posts others. Either way an
outbox row in the same transaction hands the build to the ``build`` queue, and the RQ job
(:func:`run_build`) runs the script in the sandbox of :mod:`registry.parametric`, stores the
parts as blobs, and posts their geometry validation like any pushed file's.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dgml import outbox
from dgml.db import WRITE, utcnow
from dgml.errors import Invalid, NotFound
from registry import validation
from registry.models import Build, User, Version

log = logging.getLogger("dgml.builds")

SOURCE_NAME = "design.py"
# A script larger than this is not a design source anyone writes by hand.
MAX_SOURCE_BYTES = 1024 * 1024
TOPIC = "parametric.build"
outbox.register(
    TOPIC, outbox.Topic(queue="build", function="registry.builds.run_build", timeout_s=1800)
)


def source_path(paths: set[str] | list[str], manifest: dict[str, Any]) -> str | None:
    """The path of the version's CadQuery source, or None when it has none."""
    declared = manifest.get("source")
    if declared is not None:
        if not isinstance(declared, str) or declared not in paths:
            raise Invalid(
                f"manifest source {declared!r} is not a file of this version",
                field="manifest.source",
            )
        if not declared.endswith(".py"):
            raise Invalid("manifest source must be a .py CadQuery script", field="manifest.source")
        return declared
    return SOURCE_NAME if SOURCE_NAME in paths else None


def decode_source(data: bytes, path: str) -> str:
    if len(data) > MAX_SOURCE_BYTES:
        raise Invalid(f"{path} is over {MAX_SOURCE_BYTES // 1024} KiB", field="files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text", field="files") from None


def declared_parameters(script: str, manifest: dict[str, Any], path: str) -> list:
    """The parameters of a source; a 422 naming the parameter (``manifest.parameters.<name>``)
    or the source when their declaration is wrong."""
    from registry.parametric.params import read_parameters

    return read_parameters(script, manifest, filename=path)


def resolve_values(parameters: list, values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The complete parameter set for ``values`` and its hash, or a 422 naming the parameter
    (``params.<name>``)."""
    from registry.parametric.params import parameter_hash, resolve

    if not isinstance(values, dict):
        raise Invalid("params must be an object of parameter values", field="params")
    resolved = resolve(parameters, values)
    return resolved, parameter_hash(resolved)


@dataclass(frozen=True)
class Source:
    path: str
    script: str
    parameters: list


def version_source(session: Session, blobs, version: Version) -> Source | None:
    """The version's parametric source, read from the blob store; None when it has none."""
    path = source_path({f.path for f in version.files}, version.manifest or {})
    if path is None:
        return None
    entry = next(f for f in version.files if f.path == path)
    script = decode_source(blobs.path_for(entry.sha256).read_bytes(), path)
    return Source(path, script, declared_parameters(script, version.manifest or {}, path))


def request_build(
    session: Session,
    version: Version,
    parameters: list,
    values: dict[str, Any],
    user: User | None = None,
) -> tuple[Build, bool]:
    """The build of ``version`` with ``values``: the existing one, or a new one posted to the
    build queue in this transaction. Returns the build and whether it is new."""
    resolved, digest = resolve_values(parameters, values)
    existing = session.scalar(
        select(Build).where(Build.version_id == version.id, Build.parameter_hash == digest)
    )
    if existing is not None:
        return existing, False
    build = Build(
        version_id=version.id,
        version=version,
        parameter_hash=digest,
        parameters=resolved,
        state="queued",
        files=[],
        log="",
        requested_by_id=user.id if user else None,
    )
    session.add(build)
    session.flush()
    outbox.post(session, TOPIC, f"build_{build.id}", {"build_id": build.id})
    return build, True


def request_default_build(
    session: Session, version: Version, read: Callable[[str], bytes]
) -> Build | None:
    """Post the build of a new version's defaults when it has a parametric source; ``read``
    gives a file's bytes by path (from the upload before commit, or from the blob store)."""
    path = source_path({f.path for f in version.files}, version.manifest or {})
    if path is None:
        return None
    script = decode_source(read(path), path)
    parameters = declared_parameters(script, version.manifest or {}, path)
    build, _ = request_build(session, version, parameters, {})
    return build


def get_build(session: Session, version: Version, digest: str) -> Build:
    build = session.scalar(
        select(Build).where(Build.version_id == version.id, Build.parameter_hash == digest)
    )
    if build is None:
        raise NotFound(f"no build {digest[:12]} of version {version.number}")
    return build


def build_verdict(session: Session, build: Build) -> str:
    """pending while the build runs or its parts await reports; then the worst verdict."""
    if build.state in ("queued", "running"):
        return validation.PENDING
    if build.state == "failed":
        return "fail"
    keys = {
        (f["sha256"], reader)
        for f in build.files
        if (reader := validation.reader_for(f["path"])) is not None
    }
    reports = validation.reports_for(session, keys)
    if not keys:
        return validation.NO_MODELS
    if any(key not in reports for key in keys):
        return validation.PENDING
    return max((reports[k].verdict for k in keys), key=validation.VERDICT_ORDER.index)


def run_build(build_id: int) -> str:
    """The RQ job: build one parameter set in the sandbox and store its parts."""
    from dgml.worker import context
    from registry.parametric.build import build_design
    from registry.parametric.sandbox import Limits

    ctx = context()
    with ctx.sessions() as session:
        session.connection(execution_options=WRITE)
        build = session.get(Build, build_id)
        if build is None:
            raise LookupError(f"build {build_id} does not exist")
        if build.state in ("done", "failed"):
            return build.state  # handed over twice: already built
        version = build.version
        source = version_source(session, ctx.blobs, version)
        manifest = dict(version.manifest or {})
        values = dict(build.parameters)
        build.state = "running"
        session.commit()
    limits = Limits(
        seconds=ctx.settings.build_timeout_s, memory_bytes=ctx.settings.build_memory_mb * 2**20
    )
    files: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dgml-build-") as tmp:
        result = (
            build_design(source.script, manifest, values, Path(tmp), limits)
            if source is not None
            else None
        )
        if result is not None and result.ok:
            for part in result.parts:
                for f in part.files:
                    blob = ctx.blobs.put((Path(tmp) / f.path).read_bytes())
                    files.append(
                        {
                            "part": part.name,
                            "path": f.path,
                            "sha256": blob.sha256,
                            "size": blob.size,
                        }
                    )
    with ctx.sessions() as session:
        session.connection(execution_options=WRITE)
        build = session.get(Build, build_id)
        build.finished_at = utcnow()
        if result is None:
            build.state, build.error = "failed", "the version no longer has a parametric source"
        else:
            build.state = "done" if result.ok else "failed"
            build.error = result.error
            build.limit_hit = result.limit
            build.log = (result.log or "")[-20_000:]
            build.seconds = result.seconds
            build.files = files
            validation.request_for_files(session, [(f["path"], f["sha256"]) for f in files])
        session.commit()
        state = build.state
    _hand_over_outbox(ctx)
    log.info("build %s: %s", build_id, state)
    return state


def _hand_over_outbox(ctx) -> None:
    """Queue the new parts' validation now rather than at the next sweep."""
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        outbox.dispatch(ctx.sessions, job.connection)
