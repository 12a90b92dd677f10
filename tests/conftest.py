"""Shared fixtures: a real Redis server on a free port, the database on SQLite and PostgreSQL,
an app per test, accounts with tokens, and a live HTTP server for tests that need real sockets.

PostgreSQL runs when ``DGML_TEST_POSTGRES_URL`` names a server (``.ci/run`` sets it); each test
session creates its own database there and drops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dgml.app import create_app
from dgml.db import Base, make_engine, make_sessionmaker, migrate, write_session
from dgml.settings import Settings
from registry import accounts

TESTDATA = Path(__file__).parent / "data"
POSTGRES_URL = os.environ.get("DGML_TEST_POSTGRES_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A redis-server of our own on a free port, for the whole test session."""
    from dgml.embedded import find_redis_server

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            Redis.from_url(url).ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_client(redis_url) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite database that each test copies, so migrations run once."""
    path = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("DGML_TEST_POSTGRES_URL is not set")
    admin_url = make_url(POSTGRES_URL)
    name = f"dgml_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path, sqlite_template) -> str:
    """Each test that uses the database runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "dgml.sqlite3"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    _truncate_postgres(url)
    return url


@pytest.fixture
def settings(tmp_path, database_url, redis_url) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url,
        max_upload_bytes=4 * 1024 * 1024,
    )


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@dataclass
class Account:
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_account(settings):
    """Create an account the way ``dgml user create`` does, straight in the database."""
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)

    def make(name: str, *, admin: bool = False) -> Account:
        with write_session(sessions) as session:
            user = accounts.create_user(session, name, is_admin=admin)
            token = accounts.issue_token(session, user)
        return Account(name, token)

    yield make
    engine.dispose()


@pytest.fixture
def alice(make_account) -> Account:
    return make_account("alice")


@pytest.fixture
def bob(make_account) -> Account:
    return make_account("bob")


@pytest.fixture
def live_server(settings) -> Iterator[str]:
    """The app behind a real uvicorn on a free port, for tests that need real sockets."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    httpx.get(base + "/healthz").raise_for_status()
    yield base
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def run_jobs(settings, redis_client):
    """Run the hub's queued jobs to the end, as a worker of ``dgml up`` would, in this process."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from dgml import outbox
    from dgml.worker import QUEUES, make_context, set_context

    context = make_context(settings)
    set_context(context)

    def run() -> None:
        outbox.dispatch(context.sessions, redis_client)
        queues = [outbox.queue(redis_client, name) for name in QUEUES]
        SimpleWorker(queues, connection=redis_client, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING"
        )

    yield run
    set_context(None)
    context.engine.dispose()


def mesh(name: str) -> bytes:
    """A real mesh file from tests/data (see tests/data/SOURCES.md)."""
    return (TESTDATA / name).read_bytes()
