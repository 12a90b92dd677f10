"""``dgml demo``: the whole idea on a fresh embedded hub, stage by stage, each one timed.

1. start ``dgml up`` on a fresh data dir and a free port;
2. make the accounts, register the French fab labs, enrol simulated agents near the cities;
3. publish the designs/ library; 4. fork a design and change a parameter;
5. wait for the builds and geometry reports; 6. order from makers in six cities, and one order
   no lab can make; 7. let the agents fabricate until every order has ended;
8. report: the summary table, the km avoided, and a map.

:func:`populate` is stages 2 to 5 without orders: what ``dgml up --demo`` puts in its hub.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import make_engine, make_sessionmaker
from dgml.demo import library
from dgml.demo.hub import DemoError, HubProcess, free_port, prepare_data_dir
from dgml.demo.labs import AgentPool, Lab, all_labs, nearest_labs, register_labs
from dgml.demo.orders import CITIES, OrderPlan, OrderRow, place, row_of, wait_orders
from dgml.demo.report import write_map

FORK = library.Fork(origin="wall-bracket", maker="camille", parameter="wall_leg", value=80.0)
PLANS = (
    OrderPlan("camille", CITIES["Paris"], "camille/wall-bracket", "petg", 2, note="forked"),
    OrderPlan("lucas", CITIES["Lyon"], "dgml/cable-clip", "petg", 4),
    OrderPlan("ines", CITIES["Marseille"], "dgml/shelf-pin", "petg", 8),
    OrderPlan("hugo", CITIES["Toulouse"], "dgml/wall-bracket", "petg", 2),
    OrderPlan("lea", CITIES["Bordeaux"], "dgml/gridfinity-bin", "pla", 1),
    OrderPlan("yanis", CITIES["Rennes"], "dgml/cable-clip", "pla", 6),
    OrderPlan(
        "chloe",
        CITIES["Lille"],
        "dgml/shelf-pin",
        "resin",
        4,
        process="sla",
        expect="unplaceable",
        note="no lab has SLA",
    ),
)
# Agents run for the labs nearest each city that orders something a lab can make.
LABS_PER_CITY = 2


@dataclass
class Outcome:
    """What the demo did: its rows, stage times, and where it left things."""

    data_dir: Path
    base: str
    rows: list[OrderRow] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    map_path: Path | None = None
    agents: int = 0
    fablabs: int = 0
    designs: int = 0
    slicer_problem: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.state == r.expected for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "data_dir": str(self.data_dir),
            "hub": self.base,
            "map": str(self.map_path) if self.map_path else None,
            "designs": self.designs,
            "fablabs": self.fablabs,
            "agents": self.agents,
            "slicer_problem": self.slicer_problem,
            "stages_s": {k: round(v, 3) for k, v in self.stages.items()},
            "orders": [r.to_dict() for r in self.rows],
            "km_avoided": round(sum(r.km_avoided or 0.0 for r in self.rows), 1),
        }


class Stages:
    """Times each stage and tells the caller as it begins and ends."""

    def __init__(self, outcome: Outcome, say: Callable[[str], None]) -> None:
        self.outcome = outcome
        self.say = say

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.say(f"{name} ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - started
            self.outcome.stages[name] = took
            self.say(f"{name}: {took:.1f} s")


@dataclass
class Populated:
    """What :func:`populate` made: the accounts, the library's versions, the labs."""

    accounts: dict[str, library.Account]
    versions: dict[str, int]
    fork_version: int
    labs: list[Lab]
    agents: AgentPool


def _accounts(sessions: sessionmaker[Session], makers: list[str]) -> dict[str, library.Account]:
    names = [library.PUBLISHER, "operator", *makers]
    return {name: library.account(sessions, name) for name in dict.fromkeys(names)}


def start_labs(
    sessions: sessionmaker[Session],
    redis_url: str | None,
    base: str,
    state_root: Path,
    operator: str,
    cities: list[tuple[float, float]],
) -> tuple[list[Lab], AgentPool]:
    """Register the labs, then enrol and start agents for those nearest the cities."""
    from registry.accounts import user_by_name

    with sessions() as session:
        operator_id = user_by_name(session, operator).id
    redis = Redis.from_url(redis_url) if redis_url else None
    try:
        tokens = register_labs(sessions, redis, operator_id)
    finally:
        if redis is not None:
            redis.close()
    labs = all_labs(sessions)
    chosen = nearest_labs(labs, cities, per_place=LABS_PER_CITY, process="fdm")
    pool = AgentPool(base, state_root)
    try:
        pool.enrol(sessions, chosen, tokens)
    except BaseException:
        pool.stop()
        raise
    return labs, pool


def _ordered_first(folders: list[Path], plans: tuple[OrderPlan, ...]) -> list[Path]:
    """The library folders the plans order from (and the fork's origin) first: their builds
    and checks then come first in the hub's queue."""
    wanted = {p.design.split("/", 1)[1] for p in plans if p.design.startswith(library.PUBLISHER)}
    wanted.add(FORK.origin)
    return sorted(folders, key=lambda folder: folder.name not in wanted)


def _builds(
    http: httpx.Client,
    accounts: dict[str, library.Account],
    versions: dict[str, int],
    fork_version: int,
    plans: tuple[OrderPlan, ...],
) -> dict[str, str]:
    """The builds the plans need (the versions' defaults, or the plans' parameters), by label."""
    builds: dict[str, str] = {}
    for plan in plans:
        owner, name = plan.design.split("/", 1)
        version = fork_version if owner == FORK.maker else versions[name]
        label = f"{plan.design}@{version}" + (f" {plan.params}" if plan.params else "")
        if label not in builds:
            who = accounts[plan.maker]
            builds[label] = library.request_build(http, who, plan.design, version, plan.params)
    return builds


def populate(
    http: httpx.Client,
    sessions: sessionmaker[Session],
    *,
    base: str,
    redis_url: str | None,
    data_dir: Path,
    designs_dir: Path,
    stage: Callable[[str], contextlib.AbstractContextManager[None]],
    plans: tuple[OrderPlan, ...] = PLANS,
) -> Populated:
    """Accounts, the library and the fork, fab labs with running agents; the builds the plans
    order from are built and checked when this returns (the rest of the library may not be)."""
    folders = _ordered_first(library.library_folders(designs_dir), plans)
    with stage("accounts"):
        accounts = _accounts(sessions, [p.maker for p in plans])
        publisher = accounts[library.PUBLISHER]
        maker = accounts.get(FORK.maker) or library.account(sessions, FORK.maker)
    with stage("publish the library and fork a design"):
        versions: dict[str, int] = {}
        fork_version = 0
        for folder in folders:
            versions[folder.name] = library.publish(http, publisher, folder)
            if folder.name == FORK.origin:
                fork_version = library.fork_and_change(
                    http, maker, FORK, designs_dir, versions[FORK.origin]
                )
        if not fork_version:
            raise DemoError(f"the library at {designs_dir} has no {FORK.origin} to fork")
    with stage("register fab labs, start agents"):
        cities = [(p.city.lat, p.city.lon) for p in plans if p.expect == "completed"]
        labs, pool = start_labs(
            sessions, redis_url, base, data_dir / "demo-agents", "operator", cities
        )
    try:
        with stage("build and validate"):
            library.wait_builds(http, _builds(http, accounts, versions, fork_version, plans))
    except BaseException:
        pool.stop()
        raise
    return Populated(accounts, versions, fork_version, labs, pool)


def _version_for(plan: OrderPlan, populated: Populated) -> int:
    owner, name = plan.design.split("/", 1)
    if owner == FORK.maker and name == FORK.origin:
        return populated.fork_version
    return populated.versions[name]


def run_demo(
    *,
    data_dir: Path | None,
    port: int | None,
    designs_dir: Path | None = None,
    say: Callable[[str], None] = lambda _text: None,
) -> Outcome:
    """Run the scenario on a fresh hub and stop everything it started, whatever happens."""
    data_dir = prepare_data_dir(data_dir)
    hub = HubProcess(data_dir, port if port is not None else free_port())
    outcome = Outcome(data_dir=data_dir, base=hub.base)
    stage = Stages(outcome, say)
    with contextlib.ExitStack() as cleanup:
        with stage("start the hub"):
            hub.start()
            cleanup.callback(hub.stop)
        engine = make_engine(f"sqlite:///{data_dir / 'dgml.sqlite3'}")
        cleanup.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        http = cleanup.enter_context(httpx.Client(base_url=hub.base, timeout=60.0))
        populated = populate(
            http,
            sessions,
            base=hub.base,
            redis_url=hub.redis_url(),
            data_dir=data_dir,
            designs_dir=designs_dir or library.default_designs_dir(),
            stage=stage,
        )
        cleanup.callback(populated.agents.stop)
        outcome.agents = len(populated.agents.agents)
        outcome.fablabs = len(populated.labs)
        outcome.designs = len(populated.versions) + 1
        outcome.slicer_problem = populated.agents.fdm_problem()
        with stage("order"):
            ids = [
                place(http, populated.accounts[p.maker], p, _version_for(p, populated))
                for p in PLANS
            ]
        with stage("fabricate"):
            views = wait_orders(http, ids)
        with stage("report"):
            places = {lab.id: (lab.lat, lab.lon) for lab in populated.labs}
            outcome.rows = [
                row_of(views[i], plan, sessions, places) for i, plan in zip(ids, PLANS, strict=True)
            ]
            outcome.map_path = write_map(
                data_dir / "demo-map.html", populated.labs, populated.agents.lab_ids, outcome.rows
            )
        with stage("stop the agents"):
            populated.agents.stop()
        with stage("stop the hub"):
            cleanup.close()
    if not outcome.rows:
        raise DemoError("the demo ended without orders")
    return outcome
