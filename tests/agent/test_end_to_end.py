"""The whole way, in processes of their own: ``dgml up`` on the embedded default (SQLite, a blob
folder, its own Redis) and three ``dgml agent`` processes at real French fab labs, each with one
simulated printer on an accelerated clock; makers order from several cities, and each order is
made at the nearest lab that can make it, worked out here by great-circle distance over the
three labs alone.

Then one agent is SIGKILLed mid-job: the lease runs out, the job becomes ``disconnected`` and
stays so (it is never routed again by itself, however many sweeps go by), the lab's operator
says the parts were made, and the agent, started again, follows its machine to the end without
starting anything twice. Every process is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dgml.db import make_engine, make_sessionmaker
from dgml.demo.library import account
from dgml.embedded import die_with_parent
from tests.agent.conftest import ROOT
from tests.conftest import free_port
from tests.workers.conftest import mesh_path
from workers.config import SimulatorOptions
from workers.drivers.simulator import SimulatorDriver
from workers.journal import Journal

pytestmark = pytest.mark.slow

API = "/api/v1"
MARK = "DGML_TEST_E2E_MARK"
SHARED_FABLABS = ROOT.parent / "shared" / "testdata" / "fablabs" / "fablabs-fr.json"
LISTINGS = (
    SHARED_FABLABS if SHARED_FABLABS.is_file() else ROOT / "tests" / "data" / "fablabs-fr.json"
)
# The hub: leases of 6 s (heartbeats every 2 s), sweeps every second, short claims, and one
# worker of each kind (the machine has two cores).
HUB_ENV = {
    "DGML_LEASE_TTL_S": "6",
    "DGML_SWEEPS_EVERY_S": "1",
    "DGML_WORKER_TICK_S": "0.5",
    "DGML_CLAIM_WAIT_MAX_S": "2",
    "DGML_ROUTE_RECHECK_S": "0.5",
    "DGML_ROUTE_RECHECK_MAX_S": "2",
    "DGML_VALIDATION_WORKERS": "1",
    "DGML_ROUTE_WORKERS": "1",
    "DGML_LOG_FORMAT": "text",
    "DGML_LOG_LEVEL": "warning",
}
# Each printed part takes an hour of machine time, six seconds on the simulated clock.
SIMULATOR = "duration_s = 3600\nspeed = 600"
TIMEOUT_S = 180.0  # a guard against a hang, not a measurement
EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class LabPlan:
    listed_as: str  # its name on fablabs.io
    materials: tuple[str, ...]


@dataclass(frozen=True)
class City:
    name: str
    lat: float
    lon: float


# The lab in Marseille prints PLA only: a PETG order from Lyon, nearer Marseille than Paris,
# must go to Paris.
LABS = (
    LabPlan("Le Petit FabLab de Paris", ("PLA", "PETG")),
    LabPlan("La Fabulerie", ("PLA",)),
    LabPlan("labfab de Rennes", ("PLA", "PETG")),
)
PARIS = City("Paris", 48.8566, 2.3522)
RENNES = City("Rennes", 48.1173, -1.6778)
MARSEILLE = City("Marseille", 43.2965, 5.3698)
LYON = City("Lyon", 45.7640, 4.8357)


@dataclass(frozen=True)
class Plan:
    maker: str
    city: City
    design: str
    material: str


ORDERS = (
    Plan("camille", PARIS, "cube", "PLA"),
    Plan("yanis", RENNES, "pin", "PLA"),
    Plan("ines", MARSEILLE, "cube", "PLA"),
    Plan("lucas", LYON, "cube", "PETG"),
)


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def until(check: Callable[[], Any], what: str, timeout: float = TIMEOUT_S) -> Any:
    """Poll ``check`` until it answers something true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def clean_env(mark: str, **extra: str) -> dict[str, str]:
    """This environment without the shell's DGML_ settings, marked as this test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGML_")}
    if "DGML_REDIS_SERVER" in os.environ:
        env["DGML_REDIS_SERVER"] = os.environ["DGML_REDIS_SERVER"]
    env.update({MARK: mark, "COLUMNS": "400", **extra})
    return env


def marked(mark: str) -> set[int]:
    """Live processes of this test: their environment holds the mark (children inherit it)."""
    needle = f"{MARK}={mark}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.add(int(entry.name))
    return found


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    """Signal the process (if it still runs) and wait; killed if it does not end in time."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class AgentProcess:
    """A lab's ``dgml agent``: its config, state dir and log, and the process while it runs."""

    lab_id: str
    folder: Path
    server: str
    materials: tuple[str, ...]
    mark: str
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.folder / "agent.toml"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def log(self) -> Path:
        return self.folder / "agent.log"

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""
[agent]
server = "{self.server}"
state_dir = "state"
accept = "auto"
max_parallel_jobs = 1

[[machines]]
name = "printer"
process = "fdm"
materials = {json.dumps(list(self.materials))}
build_volume_mm = [250, 210, 210]
nozzle_mm = 0.4
driver = "simulator"

[machines.simulator]
{SIMULATOR}
"""
        )

    def start(self, *args: str) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dgml", "agent", "--config", str(self.config), *args],
                cwd=ROOT,
                env=clean_env(self.mark),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        process, self.process = self.process, None
        return None if process is None else stop(process, sig)

    def starts(self) -> list[str]:
        """Every job the simulated printer was asked to start, in order."""
        return SimulatorDriver(SimulatorOptions(), self.state / "simulator" / "printer").starts()

    def stages(self, job_id: int) -> list[str]:
        if not (self.state / "journal.sqlite3").exists():
            return []
        with Journal(self.state) as journal:
            return [stage for stage, _ in journal.events(str(job_id))]

    def journaled(self) -> dict[str, list[str]]:
        """Each journaled job's stages, by job id."""
        with Journal(self.state) as journal:
            return {
                r.job_id: [stage for stage, _ in journal.events(r.job_id)] for r in journal.jobs()
            }


@dataclass
class World:
    """The hub, its accounts and designs, and the labs with their agents."""

    root: Path
    mark: str
    base: str
    http: httpx.Client
    hub: subprocess.Popen
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    # id -> the lab's listed lat and lon, and the materials its printer takes
    labs: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def call(self, method: str, url: str, who: str | None = None, **kwargs: Any) -> Any:
        headers = {**(self.accounts[who] if who else {}), **kwargs.pop("headers", {})}
        answer = self.http.request(method, API + url, headers=headers, **kwargs)
        assert answer.is_success, f"{method} {url}: {answer.status_code} {answer.text[:500]}"
        return answer.json()

    def order(self, plan: Plan) -> int:
        body = {
            "design": f"alice/{plan.design}",
            "version": 1,
            "process": "fdm",
            "material": plan.material,
            "quantity": 1,
            "location": {"lat": plan.city.lat, "lon": plan.city.lon},
            "purpose": "personal",
            "delivery": {"name": plan.maker.title(), "address": f"{plan.city.name}, France"},
        }
        key = {"Idempotency-Key": uuid.uuid4().hex}
        return int(self.call("POST", "/orders", plan.maker, json=body, headers=key)["id"])

    def view(self, order_id: int) -> dict[str, Any]:
        return self.call("GET", f"/orders/{order_id}")

    def state_of(self, order_id: int, wanted: str) -> dict[str, Any] | None:
        view = self.view(order_id)
        assert view["state"] not in {"failed", "unplaceable", "cancelled"} - {wanted}, view
        return view if view["state"] == wanted else None

    def expected_lab(self, plan: Plan) -> tuple[str, float]:
        """The nearest lab whose printer takes the material, and how far it is, worked out
        over the three labs' listed positions."""
        able = [
            (great_circle_km((plan.city.lat, plan.city.lon), (lab["lat"], lab["lon"])), lab_id)
            for lab_id, lab in self.labs.items()
            if plan.material in lab["materials"]
        ]
        able.sort()
        # Far enough ahead that the expected wait (hours, at 2 km an hour) cannot change it.
        assert len(able) == 1 or able[1][0] - able[0][0] > 50, able
        return able[0][1], able[0][0]


def _listing(name: str) -> dict[str, Any]:
    listings = json.loads(LISTINGS.read_text(encoding="utf-8"))
    (found,) = [listing for listing in listings if listing["name"] == name]
    return found


def _start_hub(data: Path, port: int, mark: str) -> subprocess.Popen:
    with (data.parent / "hub.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "dgml", "up", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(mark, DGML_DATA_DIR=str(data), **HUB_ENV),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def _ready(hub: subprocess.Popen, http: httpx.Client, log: Path) -> bool:
    assert hub.poll() is None, f"dgml up exited at start: {log.read_text()[-2000:]}"
    try:
        return http.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def world(tmp_path, prusa_slicer) -> Iterator[World]:
    """``dgml up`` with alice's two designs, an operator's three labs, each with its agent
    enrolled and running; everything stopped afterwards, whatever happened."""
    mark = uuid.uuid4().hex
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hub = _start_hub(data, port, mark)
    http = httpx.Client(base_url=base, timeout=30)
    world = World(tmp_path, mark, base, http, hub)
    try:
        until(lambda: _ready(hub, http, tmp_path / "hub" / "hub.log"), "dgml up to be ready")
        _populate(world, data)
        yield world
    finally:
        for agent in world.agents.values():
            agent.stop(signal.SIGKILL)
        http.close()
        stop(hub)
        for pid in marked(mark):  # anything of this test's still running: end it
            os.kill(pid, signal.SIGKILL)


def _populate(world: World, data: Path) -> None:
    engine = make_engine(f"sqlite:///{data / 'dgml.sqlite3'}")
    try:  # accounts are made on the database, as the hub's operator does
        sessions = make_sessionmaker(engine)
        for name in ("alice", "operator", *(p.maker for p in ORDERS)):
            world.accounts[name] = account(sessions, name).headers
    finally:
        engine.dispose()
    for design, mesh in (("cube", "20mm-xyz-cube.stl"), ("pin", "round.stl")):
        body = {"name": design, "title": f"A {design}", "license": "CC-BY-4.0"}
        world.call("POST", "/designs", "alice", json=body)
        content = mesh_path(mesh).read_bytes()
        world.call(
            "POST", f"/designs/alice/{design}/versions", "alice",
            files=[("files", (f"{design}.stl", content))], data={"message": "first"},
        )  # fmt: skip
    for plan in LABS:
        listing = _listing(plan.listed_as)
        body = {
            "name": listing["name"],
            "location": {"lat": listing["latitude"], "lon": listing["longitude"]},
            "legal_form": "nonprofit",
            "machines": [
                {
                    "process": "fdm",
                    "materials": [m.lower() for m in plan.materials],
                    "build_volume_mm": [250, 210, 210],
                }
            ],
        }
        lab = world.call("POST", "/fablabs", "operator", json=body)
        world.labs[lab["id"]] = {
            "lat": listing["latitude"],
            "lon": listing["longitude"],
            "materials": plan.materials,
        }
        agent = AgentProcess(
            lab["id"], world.root / "labs" / lab["id"], world.base, plan.materials, world.mark
        )
        agent.write_config()
        world.agents[lab["id"]] = agent
        agent.start("--enrol", lab["enrolment_token"], "--grace", "1")
    for lab_id in world.labs:
        until(lambda i=lab_id: world.call("GET", f"/fablabs/{i}")["online"], f"{lab_id} online")


def _events(view: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in view["events"] if e["kind"] == kind]


def _taken(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a lab accepting the order's offer (the hub's own ``accepted``, of the
    order, names no lab)."""
    return [e for e in _events(view, "accepted") if e["fablab_id"]]


def _job_of(view: dict[str, Any]) -> tuple[str, int]:
    (accepted,) = _taken(view)
    return accepted["fablab_id"], int(accepted["data"]["job"])


def test_orders_are_made_at_the_nearest_able_lab_and_a_killed_agent_loses_nothing(world):
    # --- every order goes to the nearest lab that can make it, and is made there
    placed = {world.order(plan): plan for plan in ORDERS}
    for order_id, plan in placed.items():
        view = until(lambda i=order_id: world.state_of(i, "completed"), f"order {order_id}")
        expected, km = world.expected_lab(plan)
        (line,) = view["lines"]
        assert line["fablab"]["id"] == expected, (plan, view["lines"])
        assert abs(line["distance_km"] - km) < 2.0  # the hub rounds the place to about 1 km
        lab, _job = _job_of(view)
        assert lab == expected
        assert [len(_events(view, k)) for k in ("offered", "completed")] == [1, 1], view["events"]
        assert not {"declined", "failed", "disconnected"} & {e["kind"] for e in view["events"]}
    assert len({world.view(i)["lines"][0]["fablab"]["id"] for i in placed}) == 3

    # --- the Paris lab's agent is killed while its printer prints
    pin = Plan("camille", PARIS, "pin", "PLA")
    paris, _km = world.expected_lab(pin)
    victim = world.agents[paris]
    killed = world.order(pin)
    until(lambda: _taken(world.view(killed)), "the job to be accepted")
    lab, job_id = _job_of(world.view(killed))
    assert lab == paris
    until(lambda: str(job_id) in victim.starts(), f"the printer to start ({victim.log})")
    assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
    assert victim.stages(job_id)[-1] == "started"

    view = until(lambda: world.state_of(killed, "disconnected"), "the lease to run out")
    assert [len(_events(view, k)) for k in ("offered", "disconnected")] == [1, 1]

    # Meanwhile the hub goes on for the others: an order from Marseille is made there, and all
    # the while (many sweeps) the disconnected order is left for a person to resolve.
    later = world.order(ORDERS[2])
    until(lambda: world.state_of(later, "completed"), "the Marseille order")
    view = world.view(killed)
    assert view["state"] == "disconnected"
    (line,) = view["lines"]
    assert (line["state"], line["fablab"]["id"], line["attempt"]) == ("disconnected", paris, 1)
    assert [len(_events(view, k)) for k in ("routing", "offered", "disconnected")] == [1, 1, 1]

    # --- the lab's operator says the parts were made
    resolved = world.call(
        "POST", f"/jobs/{job_id}/resolve", "operator",
        json={"action": "completed", "note": "the pin is on the printer's bed"},
    )  # fmt: skip
    assert (resolved["state"], resolved["line_state"]) == ("completed", "completed")
    view = world.view(killed)
    assert view["state"] == "completed"
    (resolution,) = _events(view, "resolved")
    assert resolution["data"]["action"] == "completed" and resolution["data"]["by"] == "operator"

    # --- started again, the agent follows its printer to the end and starts nothing again
    victim.start("--grace", "1")
    until(lambda: "reported" in victim.stages(job_id), f"the job to be settled ({victim.log})")
    assert victim.stop() == 0, victim.log.read_text()[-3000:]

    # --- nothing lost, nothing made twice
    everything = [*placed, killed, later]
    jobs: dict[str, str] = {}
    for order_id in everything:
        view = world.view(order_id)
        assert view["state"] == "completed", view
        assert len(_events(view, "offered")) == 1 and len(_taken(view)) == 1
        assert len(_events(view, "completed")) == (0 if order_id == killed else 1), view["events"]
        lab, job = _job_of(view)
        jobs[str(job)] = lab
    for lab_id, agent in world.agents.items():
        if agent.process is not None:
            assert agent.stop() == 0, agent.log.read_text()[-3000:]
        mine = sorted(j for j, lab in jobs.items() if lab == lab_id)
        journaled = agent.journaled()
        assert sorted(journaled) == mine, (lab_id, journaled)
        for job, stages in journaled.items():
            assert stages.count("started") == 1 and stages[-1] == "reported", (job, stages)
        assert sorted(agent.starts()) == mine  # each printer started each of its jobs once
    assert victim.stages(job_id).count("done") == 1

    # --- and everything stops cleanly
    world.http.close()
    assert stop(world.hub) == 0
    until(lambda: not marked(world.mark), "every process of the test to end", timeout=30)
