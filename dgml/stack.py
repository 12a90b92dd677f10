"""The embedded stack behind ``dgml up``: an embedded Redis (unless one is configured) and the
API server, stopped in order on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import sys
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


def tune_malloc() -> None:
    """Keep glibc from mapping and unmapping every 1 MiB buffer that file responses use.

    Past its mmap threshold glibc gives each large block fresh pages from the kernel and hands
    them back on free, so every chunk of a large download page-faults anew; a higher threshold
    keeps such blocks on the heap, and the trim threshold keeps that much freed heap around.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 8 * 1024 * 1024)
    mallopt(m_trim_threshold, 64 * 1024 * 1024)


def run_stack(settings: Settings, *, host: str, port: int) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tune_malloc()
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
