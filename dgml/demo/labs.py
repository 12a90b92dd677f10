"""The fab labs of the demo: the French labs of fablabs.io registered in the directory, and
simulated job agents for the labs nearest the demo's cities.

Each agent is the real loop of :mod:`workers.agent` in a thread of this process, enrolled with
its lab's enrolment token like any lab's agent, with one simulated machine per machine of its
directory entry (so what the hub offers is what the agent can make) on a fast clock. FDM jobs
are sliced by PrusaSlicer when it is installed; the simulated print takes the slicer's
estimate divided by :data:`SIM_SPEED`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import write_session
from router.directory import ENROLMENT_PREFIX, new_token
from router.fablabs_seed import load_listings, seed
from router.models import Fablab
from workers.agent import Agent
from workers.agent_reports import LoopOptions
from workers.config import AgentConfig, parse_config
from workers.enrolment import enrol, load_credentials
from workers.hub import HubClient, Retry
from workers.tools import ToolReport, find_tools

log = logging.getLogger("dgml.demo")

# Simulated machine seconds per real second: a two-hour print takes four seconds.
SIM_SPEED = 1800.0
FAST = LoopOptions(
    claim_wait_s=2.0,
    poll_s=0.2,
    tick_s=0.2,
    grace_s=2.0,
    adopt_every_s=5.0,
    idle_s=0.5,
    progress_every_s=0.5,
    backoff=Retry(attempts=1, base_s=0.1, cap_s=2.0),
)


@dataclass(frozen=True)
class Lab:
    """A lab of the directory, as the demo needs it."""

    id: str
    name: str
    lat: float
    lon: float
    machines: list[dict[str, Any]]


def listings_path() -> Path:
    """The packaged fablabs.io listings (router/data/fablabs-fr.json, see SOURCES.md there)."""
    return Path(str(resources.files("router") / "data" / "fablabs-fr.json"))


def register_labs(
    sessions: sessionmaker[Session], redis: Redis | None, operator_id: int
) -> dict[str, str]:
    """Register the listed labs that are not in the directory yet; their enrolment tokens."""
    return seed(sessions, load_listings(listings_path()), redis=redis, operator_id=operator_id)


def all_labs(sessions: sessionmaker[Session]) -> list[Lab]:
    with sessions() as session:
        rows = session.scalars(select(Fablab).order_by(Fablab.id)).all()
        return [Lab(r.id, r.name, r.lat, r.lon, list(r.machines or [])) for r in rows]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2
    a += math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))


def nearest_labs(
    labs: Iterable[Lab], places: Iterable[tuple[float, float]], *, per_place: int, process: str
) -> list[Lab]:
    """The ``per_place`` labs with a ``process`` machine nearest each place, without repeats."""
    able = [lab for lab in labs if any(m.get("process") == process for m in lab.machines)]
    chosen: dict[str, Lab] = {}
    for lat, lon in places:
        near = sorted(able, key=lambda lab: distance_km(lat, lon, lab.lat, lab.lon))
        for lab in near[:per_place]:
            chosen.setdefault(lab.id, lab)
    return list(chosen.values())


def enrolment_token(sessions: sessionmaker[Session], lab_id: str) -> str:
    """A new enrolment token for a lab (the old one stops working), as an operator would ask."""
    token, digest = new_token(ENROLMENT_PREFIX)
    with write_session(sessions) as session:
        row = session.get(Fablab, lab_id)
        if row is None:
            raise LookupError(lab_id)
        row.enrolment_token_hash = digest
    return token


def _machine_toml(index: int, machine: dict[str, Any]) -> str:
    process = str(machine["process"])
    x, y, z = (float(v) for v in machine["build_volume_mm"])
    lines = [
        "[[machines]]",
        f'name = "{process}-{index}"',
        f'process = "{process}"',
        f"materials = {json.dumps(list(machine['materials']))}",
        f"build_volume_mm = [{x}, {y}, {z}]",
        'driver = "simulator"',
    ]
    if process == "fdm":
        lines.append("nozzle_mm = 0.4")
    if process == "laser":
        lines.append("kerf_mm = 0.15")
    lines += ["[machines.simulator]", f"speed = {SIM_SPEED}"]
    return "\n".join(lines)


def agent_config(server: str, lab: Lab, state_dir: Path) -> AgentConfig:
    """A config whose machines are the lab's directory machines, each one simulated."""
    machines = []
    for entry in lab.machines:
        for _ in range(max(1, int(entry.get("count", 1)))):
            machines.append(_machine_toml(len(machines) + 1, entry))
    text = "\n".join(
        [
            "[agent]",
            f'server = "{server}"',
            f'state_dir = "{state_dir}"',
            'accept = "auto"',
            f"max_parallel_jobs = {max(1, len(machines))}",
            *machines,
        ]
    )
    return parse_config(text, source=f"{lab.id}.toml", base_dir=state_dir)


class AgentPool:
    """The simulated agents of the chosen labs, each loop in a thread; stopped together."""

    def __init__(self, server: str, state_root: Path) -> None:
        self.server = server
        self.state_root = state_root
        self.agents: list[tuple[Agent, threading.Thread, HubClient]] = []
        self.tools: ToolReport | None = None
        self.lab_ids: list[str] = []

    def enrol(self, sessions: sessionmaker[Session], labs: list[Lab], tokens: dict[str, str]):
        """Enrol each lab's agent (once: a kept state dir keeps its token) and start it."""
        for lab in labs:
            if not lab.machines:
                continue
            state_dir = self.state_root / lab.id
            config = agent_config(self.server, lab, state_dir)
            credentials = load_credentials(state_dir)
            if credentials is None or credentials.server != self.server:
                token = tokens.get(lab.id) or enrolment_token(sessions, lab.id)
                credentials = enrol(self.server, token, state_dir)
            self.start(config, credentials.agent_token, lab.id)

    def start(self, config: AgentConfig, agent_token: str, lab_id: str) -> None:
        if self.tools is None:  # one look for PrusaSlicer serves every agent
            self.tools = find_tools(config)
        hub = HubClient(self.server, agent_token, timeout=15.0, retry=Retry(attempts=3))
        agent = Agent(config, hub, fablab_id=lab_id, tools=self.tools, options=FAST)
        thread = threading.Thread(target=agent.run, name=f"agent-{lab_id}", daemon=True)
        thread.start()
        self.agents.append((agent, thread, hub))
        self.lab_ids.append(lab_id)

    def fdm_problem(self) -> str | None:
        """Why FDM jobs cannot be sliced here, if they cannot."""
        if self.tools is None:
            return None
        return self.tools.unavailable().get("fdm")

    def stop(self, timeout: float = 15.0) -> None:
        for agent, _thread, _hub in self.agents:
            agent.stop()
        for _agent, thread, hub in self.agents:
            thread.join(timeout)
            hub.close()
        self.agents.clear()
