"""``dgml demo``: the whole scenario as a newcomer runs it (a child process, exit status, the
summary and the map), run again on the data dir it kept; bad input is one line and exit 1; and
the pieces that decide what the demo's agents and fork look like."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dgml.demo.hub import free_port
from dgml.demo.labs import Lab, agent_config, distance_km, listings_path, nearest_labs
from dgml.demo.library import changed_default, default_designs_dir
from dgml.demo.orders import CITIES
from dgml.demo.scenario import PLANS
from router.directory import PROCESSES
from router.fablabs_io import record_from_listing
from router.fablabs_seed import load_listings

ROOT = Path(__file__).resolve().parents[2]
# A lab counts as near its maker's city within this distance.
NEAR_KM = 30.0


def run_demo(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGML_")}
    return subprocess.run(
        [sys.executable, "-m", "dgml", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a guard against a hang, not a measurement
        cwd=ROOT,
        env=env,
    )


def processes_using(data_dir: Path) -> list[str]:
    """Processes whose command line or environment names the data dir."""
    found = []
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in seen:
            found.append(entry.name)
    return found


def check_summary(summary: dict, data_dir: Path) -> None:
    assert summary["ok"] is True
    assert summary["data_dir"] == str(data_dir)
    orders = summary["orders"]
    assert len(orders) == len(PLANS)
    made = [o for o in orders if o["state"] == "completed"]
    assert len({o["city"] for o in made}) >= 5
    for order in made:
        city = CITIES[order["city"]]
        assert order["fablab"], order
        # The lab is near the maker's city, measured here from the lab's own coordinates.
        assert distance_km(city.lat, city.lon, order["lab_lat"], order["lab_lon"]) < NEAR_KM
        assert order["distance_km"] < NEAR_KM
        assert math.isfinite(order["km_avoided"])
        if shutil.which("prusa-slicer"):
            assert order["estimate_s"] > 0, order  # PrusaSlicer sliced it
    nowhere = [o for o in orders if o["state"] == "unplaceable"]
    assert len(nowhere) == 1
    assert nowhere[0]["fablab"] is None
    assert "sla" in nowhere[0]["reason"]
    assert summary["km_avoided"] == pytest.approx(sum(o["km_avoided"] or 0 for o in orders), 0.1)
    page = Path(summary["map"]).read_text(encoding="utf-8")
    assert Path(summary["map"]).parent == data_dir
    assert "<svg" in page and page.count("<circle") >= 129 + len(orders)
    assert "<script" not in page and "src=" not in page and "href=" not in page
    for order in made:
        assert order["city"] in page


@pytest.mark.slow
def test_demo_runs_and_runs_again_on_its_data_dir(tmp_path):
    data_dir = tmp_path / "demo"
    first = run_demo("--json", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    check_summary(json.loads(first.stdout), data_dir)
    assert processes_using(data_dir) == []
    assert not (data_dir / "redis" / "redis.sock").exists()

    # Again on what it kept: the accounts, designs, fork, labs and agents are reused.
    again = run_demo("--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "km avoided" in again.stdout
    assert "unplaceable" in again.stdout
    assert f"Map of makers and fab labs: {data_dir / 'demo-map.html'}" in again.stdout
    assert processes_using(data_dir) == []


def test_a_taken_port_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_demo("--port", str(port), "--data-dir", str(tmp_path / "d"), timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: port {port} on 127.0.0.1")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d" / "dgml.sqlite3").exists()


def test_a_data_dir_that_cannot_be_written_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_demo("--data-dir", str(blocker / "data"), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: the data dir {blocker / 'data'} is not writable")


def test_the_fork_changes_one_default_in_the_script_and_the_manifest():
    folder = default_designs_dir() / "wall-bracket"
    changed = changed_default(folder, "wall_leg", 80.0)
    script = changed["design.py"].decode()
    assert "\nwall_leg = 80.0" in script
    assert "\nshelf_leg = 50.0" in script  # the others are left alone
    manifest = json.loads(changed["manifest.json"])
    defaults = {p["name"]: p["default"] for p in manifest["parameters"]}
    assert defaults["wall_leg"] == 80.0 and defaults["shelf_leg"] == 50.0


def _labs() -> list[Lab]:
    labs = []
    for listing in load_listings(listings_path()):
        record = record_from_listing(listing)
        machines = [
            {
                "process": m.process,
                "materials": sorted(m.materials),
                "build_volume_mm": list(m.build_volume_mm),
                "count": m.count,
            }
            for m in record.machines
            if m.process in PROCESSES
        ]
        labs.append(Lab(record.id, record.name, record.lat, record.lon, machines))
    return labs


def test_agents_go_to_fdm_labs_near_the_cities_with_the_directory_machines(tmp_path):
    labs = _labs()
    assert len(labs) == 129
    cities = [(p.city.lat, p.city.lon) for p in PLANS if p.expect == "completed"]
    chosen = nearest_labs(labs, cities, per_place=2, process="fdm")
    assert len(chosen) >= 6
    for lat, lon in cities:
        assert any(distance_km(lat, lon, lab.lat, lab.lon) < NEAR_KM for lab in chosen)
    for lab in chosen:
        config = agent_config("http://127.0.0.1:9", lab, tmp_path / lab.id)
        described = sorted(
            (m["process"], tuple(m["materials"]), tuple(m["build_volume_mm"]))
            for m in lab.machines
            for _ in range(m["count"])
        )
        configured = sorted(
            (m.process, tuple(m.materials), tuple(m.build_volume_mm)) for m in config.machines
        )
        assert configured == described
        assert all(m.driver == "simulator" for m in config.machines)
        assert config.agent.accept == "auto"


@pytest.mark.slow
def test_up_demo_takes_orders_until_it_stops(tmp_path):
    """``dgml up --demo``: the library, the labs and their agents are there; an order from
    Marseille is made nearby; SIGTERM stops everything."""
    data_dir, port = tmp_path / "hub", free_port()
    log = tmp_path / "up.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGML_")}
    env.update(DGML_DATA_DIR=str(data_dir), DGML_LOG_LEVEL="warning", DGML_LOG_FORMAT="text")
    with open(log, "wb") as err:
        hub = subprocess.Popen(
            [sys.executable, "-m", "dgml", "up", "--demo", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 600  # a guard against a hang, not a measurement
        token = None
        while token is None:
            assert hub.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            found = re.search(r"token of the maker camille \(shown once\): (\S+)", log.read_text())
            token = found.group(1) if found else None
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}/api/v1"
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{base}/designs/dgml/spur-gears").status_code == 200
            assert http.get(f"{base}/fablabs", params={"limit": 1}).status_code == 200
            marseille = CITIES["Marseille"]
            answer = http.post(
                f"{base}/orders",
                json={
                    "design": "dgml/shelf-pin",
                    "version": 1,
                    "process": "fdm",
                    "material": "pla",
                    "quantity": 2,
                    "location": {"lat": marseille.lat, "lon": marseille.lon},
                    "purpose": "personal",
                },
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "up-demo-1"},
            )
            assert answer.status_code == 201, answer.text
            order = answer.json()
            while order["state"] not in ("completed", "failed", "unplaceable"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
                order = http.get(f"{base}/orders/{order['id']}").json()
        assert order["state"] == "completed", order
        assert order["lines"][0]["distance_km"] < NEAR_KM
    finally:
        hub.send_signal(signal.SIGTERM)
        code = hub.wait(120)
    assert code == 0, log.read_text()[-2000:]
    assert processes_using(data_dir) == []
    assert not (data_dir / "redis" / "redis.sock").exists()
