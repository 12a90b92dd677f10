"""A machine that refuses or fails a job, through the agent's loop to the hub (both databases):
the job fails with the machine's own words, it is started once and never again, and the order's
line is routed again without this fablab."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from router.models import Job, OrderLine
from tests.agent.conftest import running, wait_until
from workers.config import parse_config
from workers.drivers.simulator import SimulatorDriver
from workers.enrolment import enrol
from workers.journal import Journal


def _stages(state_dir: Path, job_id: int) -> list[str]:
    with Journal(state_dir) as journal:
        return [stage for stage, _ in journal.events(str(job_id))]


def _line(hub, line_id: int) -> OrderLine:
    with hub.sessions() as session:
        line = session.get(OrderLine, line_id)
        assert line is not None
        return line


def _routed_again_without(hub, placed, lab: str, reason: str) -> None:
    """The line went back to placement without ``lab``, the failure counted, the log says why."""
    line = _line(hub, placed.line_id)
    assert (line.state, line.excluded, line.failures, line.attempt) == ("routing", [lab], 1, 2)
    events = hub.events(placed.order_id)
    failed = [e for e in events if e.kind == "failed"]
    assert [(e.fablab_id, e.alert, e.data["reason"]) for e in failed] == [(lab, True, reason)]
    assert events[-1].kind == "routing"
    assert events[-1].data["reason"] == f"failed at {lab}: {reason}"
    assert "completed" not in [e.kind for e in events]


def test_a_machine_that_fails_mid_job_fails_it_at_the_hub(hub, enrolled, prusa_slicer):
    config, lab = enrolled(simulator="duration_s = 2\nspeed = 1\nfail_at_percent = 40")
    with running(config, lab):
        placed = hub.offer(lab)
        wait_until(lambda: hub.job_state(placed) == "failed", what="the job to fail")
        job = hub.job(placed)
        wait_until(
            lambda: _stages(config.agent.state_dir, job.id)[-1:] == ["reported"],
            what="the failure to be reported",
        )

    assert job.reason == "simulated failure at 40 %"
    _routed_again_without(hub, placed, lab, job.reason)
    machine = config.machines[0]
    simulator = config.agent.state_dir / "simulator" / machine.name
    assert SimulatorDriver(machine.simulator_options, simulator).starts() == [str(job.id)]
    stages = _stages(config.agent.state_dir, job.id)
    assert stages == ["accepted", "downloaded", "prepared", "started", "failed", "reported"]


def test_a_file_the_printer_refuses_fails_the_job_at_the_hub(hub, tmp_path, octoprint):
    # An SLA printer behind OctoPrint: the agent passes the mesh through, OctoPrint takes
    # G-code only and refuses the upload (415).
    lab = hub.register_fablab()
    config = parse_config(
        f"""
[agent]
server = "{hub.base}"
state_dir = "{tmp_path / "state"}"
accept = "auto"

[[machines]]
name = "resin"
process = "sla"
materials = ["resin"]
build_volume_mm = [120, 68, 150]
driver = "octoprint"

[machines.octoprint]
url = "{octoprint.url}"
api_key = "{octoprint.key}"
""",
        base_dir=tmp_path,
    )
    enrol(hub.base, lab["enrolment_token"], config.agent.state_dir)
    with running(config, lab["id"]):
        placed = hub.offer(lab["id"], process="sla", material="resin")
        wait_until(lambda: hub.job_state(placed) == "failed", what="the job to fail")
        job = hub.job(placed)
        wait_until(
            lambda: _stages(config.agent.state_dir, job.id)[-1:] == ["reported"],
            what="the failure to be reported",
        )

    reason = "OctoPrint rejected cube.stl: Could not upload file, invalid type (415)"
    assert job.reason == reason
    _routed_again_without(hub, placed, lab["id"], reason)
    assert octoprint.file("cube.stl") is None and octoprint.state()["state"] == "Operational"
    with hub.sessions() as session:
        assert session.scalars(select(Job.id)).all() == [job.id]
