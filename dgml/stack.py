"""The embedded stack behind ``dgml up``: an embedded Redis (unless one is configured), the RQ
workers and the API server, stopped in order on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import uvicorn
from rich.console import Console

from dgml.app import create_app
from dgml.db import make_engine, migrate
from dgml.embedded import EmbeddedRedis, die_with_parent
from dgml.logs import configure_logging, logging_config
from dgml.settings import Settings
from dgml.worker import ROUTE_QUEUES, VALIDATION_QUEUES

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


class Workers:
    """The hub's RQ workers as child processes of ``dgml up``: started with the settings the
    stack resolved (its Redis, its database), stopped with SIGTERM (RQ's warm shutdown lets a
    running job finish its current step) and killed if they linger.

    ``queues`` holds one entry per worker: the queues it serves. Routing has workers of its
    own, so that placements and sweeps never wait behind a long geometry check or build. With
    ``scheduler``, ``dgml scheduler`` runs beside them: the periodic sweeps and reconciler are
    enqueued on time however busy the workers are."""

    def __init__(
        self, settings: Settings, queues: list[tuple[str, ...]], *, scheduler: bool = False
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.scheduler = scheduler
        self.children: list[subprocess.Popen] = []

    def __enter__(self) -> Workers:
        env = dict(os.environ)
        env.update(
            DGML_DATA_DIR=str(self.settings.data_dir),
            DGML_DATABASE_URL=self.settings.resolved_database_url,
            DGML_BLOB_DIR=str(self.settings.resolved_blob_dir),
            DGML_REDIS_URL=str(self.settings.redis_url),
        )
        commands = [
            ["worker", *(arg for name in served for arg in ("--queue", name))]
            for served in self.queues
        ]
        if self.scheduler:
            commands.append(["scheduler"])
        for command in commands:
            self.children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dgml", *command],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            )
        return self

    def __exit__(self, *_exc: object) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


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
        configure_logging(settings.log_format, settings.log_level)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # Migrate before the workers start, so that they and the API never race to do it.
        engine = make_engine(settings.resolved_database_url)
        migrate(engine)
        engine.dispose()
        queues = [VALIDATION_QUEUES] * settings.validation_workers
        queues += [ROUTE_QUEUES] * settings.route_workers
        stack.enter_context(Workers(settings, queues, scheduler=True))
        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_config=logging_config(settings.log_format, settings.log_level),
            log_level=settings.log_level,
            access_log=False,
        )
        _Server(config).run()
