"""``dgml agent`` as an operator runs it, in a process of its own: the starter config and
enrolment, SIGKILL mid-job and a restart, SIGTERM, and a state dir deleted between runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dgml.cli import app
from tests.agent.conftest import ROOT, wait_until, write_config
from workers.drivers.simulator import SimulatorDriver
from workers.journal import Journal

pytestmark = pytest.mark.slow


def start_agent(config: Path, *args: str, log: Path) -> subprocess.Popen:
    """``dgml agent --config CONFIG ARGS...`` with its output in ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dgml", "agent", "--config", str(config), *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(60)


def stages(state_dir: Path, job_id: int) -> list[str]:
    if not (state_dir / "journal.sqlite3").exists():
        return []
    with Journal(state_dir) as journal:
        return [stage for stage, _ in journal.events(str(job_id))]


def starts(state_dir: Path, machine: str) -> list[str]:
    from workers.config import SimulatorOptions

    return SimulatorDriver(SimulatorOptions(), state_dir / "simulator" / machine).starts()


def test_init_then_enrol_works_as_it_stands(hub, tmp_path, prusa_slicer):
    cli = CliRunner()
    config = tmp_path / "lab" / "fablab.toml"
    written = cli.invoke(app, ["agent", "init", str(config)])
    assert written.exit_code == 0, written.output
    again = cli.invoke(app, ["agent", "init", str(config)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    lab = hub.register_fablab()
    log = tmp_path / "agent.log"
    agent = start_agent(config, "--server", hub.base, "--enrol", lab["enrolment_token"], log=log)
    try:
        state = config.parent / "dgml-agent-state"
        wait_until(lambda: (state / "status.json").exists(), what=f"the agent ({log})")
        token_file = state / "agent.json"
        assert token_file.stat().st_mode & 0o777 == 0o600
        stored = json.loads(token_file.read_text())
        assert (stored["server"], stored["fablab_id"]) == (hub.base, lab["id"])
        assert stored["agent_token"].startswith("dgml_agent_")

        placed = hub.offer(lab["id"])
        listed = cli.invoke(app, ["agent", "offers", "--config", str(config), "--json"])
        assert listed.exit_code == 0, listed.output
        assert [o["id"] for o in json.loads(listed.stdout)["offers"]] == [placed.offer_id]
        assert hub.job(placed) is None  # the starter config leaves offers to a person

        taken = cli.invoke(app, ["agent", "accept", str(placed.offer_id), "--config", str(config)])
        assert taken.exit_code == 0, taken.output
        wait_until(
            lambda: hub.job_state(placed) == "completed", timeout=120, what=f"completion ({log})"
        )
    finally:
        code = stop(agent)
    assert code == 0, log.read_text()
    assert starts(state, "simulated-mk3") == [str(hub.job(placed).id)]


def test_killed_mid_job_the_agent_resumes_without_doing_anything_twice(
    hub, tmp_path, proxy, counting_slicer
):
    wrapper, slicer_log = counting_slicer
    config = write_config(
        tmp_path, proxy.base, simulator="duration_s = 10\nspeed = 1", slicer=str(wrapper)
    )
    state = tmp_path / "state"
    lab = hub.register_fablab()
    log = tmp_path / "agent.log"
    first = start_agent(config, "--enrol", lab["enrolment_token"], log=log)
    try:
        placed = hub.offer(lab["id"])
        wait_until(lambda: starts(state, "mk3"), what=f"the machine to start ({log})")
    finally:
        assert stop(first, signal.SIGKILL) == -signal.SIGKILL
    job_id = hub.job(placed).id
    lease_at_kill = hub.job(placed).lease_expires_at

    second = start_agent(config, log=log)
    try:
        renewed = wait_until(
            lambda: hub.job(placed).lease_expires_at > lease_at_kill,
            what=f"a heartbeat after the restart ({log})",
        )
        assert renewed and hub.job_state(placed) == "in_progress"
        wait_until(lambda: hub.job_state(placed) == "completed", what=f"completion ({log})")
    finally:
        assert stop(second) == 0, log.read_text()

    assert starts(state, "mk3") == [str(job_id)]  # resumed, never started again
    assert slicer_log.read_text().count("slice") == 1
    assert proxy.gets("/files/cube.stl") == 1
    journal = stages(state, job_id)
    assert [journal.count(s) for s in ("downloaded", "prepared", "started")] == [1, 1, 1]
    assert journal[-1] == "reported"
    kinds = [event.kind for event in hub.events(placed.order_id)]
    assert kinds.count("completed") == 1


def test_sigterm_stops_promptly_leaving_the_job_journaled(hub, tmp_path, prusa_slicer):
    config = write_config(tmp_path, hub.base, simulator="duration_s = 3600\nspeed = 1")
    state = tmp_path / "state"
    lab = hub.register_fablab()
    log = tmp_path / "agent.log"
    agent = start_agent(config, "--enrol", lab["enrolment_token"], "--grace", "1", log=log)
    try:
        placed = hub.offer(lab["id"])
        wait_until(lambda: starts(state, "mk3"), what=f"the machine to start ({log})")
    finally:
        code = stop(agent)
    assert code == 0, log.read_text()
    job_id = hub.job(placed).id
    assert stages(state, job_id)[-1] == "started"
    assert json.loads((state / "status.json").read_text())["stopped"] is True
    assert hub.job_state(placed) == "in_progress"  # the machine still has it
    assert f"journaled for the next start: job {job_id}" in log.read_text()


def test_a_state_dir_deleted_between_runs_asks_to_enrol_again(hub, tmp_path):
    config = write_config(tmp_path, hub.base)
    state = tmp_path / "state"
    lab = hub.register_fablab()
    log = tmp_path / "agent.log"
    agent = start_agent(config, "--enrol", lab["enrolment_token"], log=log)
    try:
        wait_until(lambda: (state / "status.json").exists(), what=f"the agent ({log})")
    finally:
        assert stop(agent) == 0, log.read_text()
    shutil.rmtree(state)

    again = subprocess.run(
        [sys.executable, "-m", "dgml", "agent", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "500"},
    )
    assert again.returncode == 1
    assert f"state dir {state} does not exist" in again.stderr
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: no agent token in {state / 'agent.json'}: enrol this agent with "
        f"`dgml agent --server {hub.base} --enrol TOKEN` (the fablab's operator gets a token "
        "when registering the fablab, or a new one from POST "
        "/api/v1/fablabs/ID/enrolment-token)"
    ]


def test_an_enrolment_token_used_once_is_refused_clearly(hub, tmp_path):
    config = write_config(tmp_path, hub.base)
    lab = hub.register_fablab()
    token = lab["enrolment_token"]
    first = hub.http.post("/api/v1/agent/enroll", json={"enrolment_token": token})
    assert first.status_code == 200, first.text
    refused = subprocess.run(
        [sys.executable, "-m", "dgml", "agent", "--config", str(config), "--enrol", token],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert f"error: the hub at {hub.base} refused the enrolment token" in refused.stderr
    assert not (tmp_path / "state" / "agent.json").exists()
