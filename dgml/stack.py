"""The embedded stack behind ``dgml up``: an embedded Redis (unless one is configured) and the
API server, stopped in order on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import logging

import uvicorn
from rich.console import Console

from dgml.app import create_app
from dgml.embedded import EmbeddedRedis
from dgml.settings import Settings

err = Console(stderr=True)


def run_stack(settings: Settings, *, host: str, port: int) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            redis = stack.enter_context(EmbeddedRedis(settings.redis_dir))
            settings = settings.model_copy(update={"redis_url": redis.url})
        backend = settings.resolved_database_url.split("://", 1)[0]
        err.print(
            f"dgml hub on http://{host}:{port}  (data: {settings.data_dir}, "
            f"database: {backend}, redis: {settings.redis_url})"
        )
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        config = uvicorn.Config(
            create_app(settings), host=host, port=port, log_level="info", access_log=False
        )
        uvicorn.Server(config).run()
