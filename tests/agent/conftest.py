"""Fixtures for the job agent against a live hub: a hub with short claims and leases, a design
pushed and a fablab registered through the API, offers written straight to the database (what
placement would write), agent configs on disk, and a proxy that can answer 500 for a while;
PrusaSlicer and OctoPrint come from tests/workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from dgml.settings import Settings
from tests.agent.proxy import Proxy, start_proxy
from tests.agent.world import HubWorld, make_hub_world
from tests.workers.conftest import (  # noqa: F401 - fixtures
    counting_slicer,
    octoprint,
    octoprint_server,
    prusa_slicer,
)
from workers.agent import Agent
from workers.agent_reports import LoopOptions
from workers.config import AgentConfig, parse_config
from workers.enrolment import enrol
from workers.hub import HubClient, Retry

ROOT = Path(__file__).resolve().parents[2]
FAST = LoopOptions(
    claim_wait_s=1.0,
    poll_s=0.1,
    tick_s=0.1,
    grace_s=2.0,
    adopt_every_s=0.5,
    idle_s=0.2,
    progress_every_s=0.2,
    backoff=Retry(attempts=1, base_s=0.05, cap_s=0.5),
)


@pytest.fixture
def settings(tmp_path, database_url, redis_url) -> Settings:
    """The hub: claims wait at most a second and leases last 6 s (heartbeats every 2 s)."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url,
        max_upload_bytes=4 * 1024 * 1024,
        claim_wait_max_s=1.0,
        lease_ttl_s=6.0,
        file_cache_bytes=0,
    )


@pytest.fixture
def hub(live_server, settings, make_account, redis_client) -> Iterator[HubWorld]:
    yield from make_hub_world(live_server, settings, make_account, redis_client)


@pytest.fixture
def proxy(live_server) -> Iterator[Proxy]:
    yield from start_proxy(live_server)


def wait_until(check: Callable[[], object], timeout: float = 60.0, what: str = "") -> object:
    """Poll ``check`` until it answers something true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def config_text(
    server: str,
    state_dir: Path,
    *,
    accept: str = "auto",
    simulator: str = "duration_s = 0",
    slicer: str = "prusa-slicer",
    max_parallel_jobs: int = 1,
    driver: str = "simulator",
    volume: str = "[250, 210, 210]",
) -> str:
    """One FDM machine taking PLA and PETG with a ``volume`` bed (mm): simulated, or a
    hotfolder ``jobs`` beside the config (``driver="hotfolder"``)."""
    options = 'path = "jobs"' if driver == "hotfolder" else simulator
    return f"""
[agent]
server = "{server}"
state_dir = "{state_dir}"
accept = "{accept}"
max_parallel_jobs = {max_parallel_jobs}
prusa_slicer = "{slicer}"

[[machines]]
name = "mk3"
process = "fdm"
materials = ["PLA", "PETG"]
build_volume_mm = {volume}
nozzle_mm = 0.4
driver = "{driver}"

[machines.{driver}]
{options}
"""


def write_config(tmp_path: Path, server: str, **kwargs) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(config_text(server, tmp_path / "state", **kwargs))
    return path


def make_config(tmp_path: Path, server: str, **kwargs) -> AgentConfig:
    return parse_config(config_text(server, tmp_path / "state", **kwargs), base_dir=tmp_path)


@pytest.fixture
def enrolled(hub, tmp_path) -> Callable[..., tuple[AgentConfig, str]]:
    """A fablab registered through the API and an agent enrolled for it: its config and id."""

    def make(server: str | None = None, **kwargs) -> tuple[AgentConfig, str]:
        lab = hub.register_fablab()
        config = make_config(tmp_path, server or hub.base, **kwargs)
        credentials = enrol(config.agent.server, lab["enrolment_token"], config.agent.state_dir)
        assert credentials.fablab_id == lab["id"]
        return config, lab["id"]

    return make


@contextmanager
def running(
    config: AgentConfig, fablab_id: str, *, expect_fatal: bool = False, **options
) -> Iterator[Agent]:
    """The loop in a thread of this process, stopped (SIGTERM's way) at the end."""
    from workers.enrolment import load_credentials

    credentials = load_credentials(config.agent.state_dir)
    assert credentials is not None
    hub = HubClient(
        config.agent.server,
        credentials.agent_token,
        timeout=10.0,
        retry=Retry(attempts=3, base_s=0.05, cap_s=0.5),
    )
    fast = LoopOptions(**{**FAST.__dict__, **options})
    agent = Agent(config, hub, fablab_id=fablab_id, options=fast)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(agent.run()), daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stop()
        thread.join(30)
        hub.close()
    assert not thread.is_alive(), "the agent did not stop"
    assert codes == [1 if expect_fatal else 0], agent.fatal


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client
