"""The app factory: one FastAPI app that mounts every domain's routes.

Infrastructure (engine, sessions, blob store, Redis) is made in the lifespan from the settings
and kept on ``app.state.services``; every error leaves as ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dgml import __version__, metrics
from dgml.db import make_engine, make_sessionmaker, migrate
from dgml.deps import Services
from dgml.errors import DgmlError
from dgml.limits import BodyLimitMiddleware
from dgml.logs import HEADER as REQUEST_ID_HEADER
from dgml.logs import RequestIdMiddleware, current_request_id
from dgml.settings import Settings
from registry.api import WHOLE_READ_BYTES
from registry.api import hot_reads as registry_hot_reads
from registry.api import router as registry_router
from registry.blobs import BlobStore
from registry.builds_api import router as builds_router
from registry.cache import BlobBytesCache, VersionCache
from registry.change_requests_api import router as change_requests_router
from registry.reports_api import router as reports_router
from router.agent_api import router as agent_router
from router.fablabs_api import router as fablabs_router
from router.operators_api import router as operators_router
from router.orders_api import router as orders_router

log = logging.getLogger("dgml.app")


def make_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    engine = make_engine(settings.resolved_database_url)
    if run_migrations:
        migrate(engine)
    blobs = BlobStore(settings.resolved_blob_dir)
    blobs.clean_tmp()
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    versions = VersionCache(settings.version_cache_size)
    file_bytes = BlobBytesCache(settings.file_cache_bytes, WHOLE_READ_BYTES)
    return Services(settings, engine, make_sessionmaker(engine), blobs, redis, versions, file_bytes)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = make_services(settings, run_migrations=run_migrations)
        app.state.services = services
        try:
            yield
        finally:
            if services.redis is not None:
                services.redis.close()
            services.engine.dispose()

    app = FastAPI(
        title="dgml",
        version=__version__,
        summary="Design global, manufacture local: open hardware designs, versions and forks.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The last added is the outermost: every layer inside, the metrics too, sees the request id.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(metrics.router)
    app.include_router(registry_hot_reads)
    app.include_router(registry_router)
    app.include_router(change_requests_router)
    app.include_router(reports_router)
    app.include_router(builds_router)
    app.include_router(fablabs_router)
    app.include_router(agent_router)
    app.include_router(operators_router)
    app.include_router(orders_router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> JSONResponse:
        """The database and Redis answer."""
        services: Services = request.app.state.services

        def check() -> dict[str, str]:
            status = {}
            try:
                with services.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                status["database"] = "ok"
            except Exception as exc:  # any driver error means "not ready"
                status["database"] = f"error: {type(exc).__name__}"
            if services.redis is None:
                status["redis"] = "not configured"
            else:
                try:
                    services.redis.ping()
                    status["redis"] = "ok"
                except RedisError as exc:
                    status["redis"] = f"error: {type(exc).__name__}"
            return status

        status = await run_in_threadpool(check)
        ready = all(v in ("ok", "not configured") for v in status.values())
        return JSONResponse({"ready": ready, **status}, status_code=200 if ready else 503)

    return app


def serve_app() -> FastAPI:
    """The app of each ``dgml serve`` process: settings from the environment, and a schema that
    ``dgml serve`` (or ``dgml migrate``) brought up to date before the processes started, so
    that they never race each other to migrate it."""
    return create_app(run_migrations=False)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DgmlError)
    async def _dgml_error(_request: Request, exc: DgmlError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        loc = list(first.get("loc", ()))
        source = str(loc.pop(0)) if loc else "body"  # body, query, path or header
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        field = path or source
        if first.get("type") == "json_invalid":
            field, detail = "body", "the body is not valid JSON"
        else:
            detail = f"{field}: {first['msg'].removeprefix('Value error, ')}"
        return JSONResponse({"error": "invalid", "detail": detail, "field": field}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return JSONResponse(
            {"error": codes.get(exc.status_code, "http_error"), "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal", "detail": "an unexpected error happened; it has been logged"},
            status_code=500,
            # This handler answers outside the middleware that sets the header on the others.
            headers={REQUEST_ID_HEADER: rid} if (rid := current_request_id()) else None,
        )
