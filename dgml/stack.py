"""The embedded stack behind ``dgml up``: an embedded Redis (unless one is configured) and the
API server, stopped in order on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn
from rich.console import Console

from dgml.app import create_app
from dgml.embedded import EmbeddedRedis
from dgml.settings import Settings

err = Console(stderr=True)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """Uvicorn, except that Ctrl-C and SIGTERM end it with exit code 0: a requested stop is a
    clean stop, and the caller still gets to shut the embedded Redis down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
        _Server(config).run()
