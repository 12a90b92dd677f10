"""The agent's loop against a live hub (both databases): offers accepted or held or declined,
jobs run on a simulated machine and reported, and what a failing hub or a lost lease does."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dgml.cli import app
from dgml.db import write_session
from router.agent_reports import lose_lease
from router.models import Job, Offer
from tests.agent.conftest import config_text, running, wait_until
from tests.router.agent_world import later
from workers.drivers.simulator import SimulatorDriver
from workers.hub import Retry
from workers.journal import FileRef, JobSpec, Journal


def _starts(config) -> list[str]:
    machine = config.machines[0]
    return SimulatorDriver(
        machine.simulator_options, config.agent.state_dir / "simulator" / machine.name
    ).starts()


def _stages(config, job_id: int) -> list[str]:
    with Journal(config.agent.state_dir) as journal:
        return [stage for stage, _ in journal.events(str(job_id))]


def test_auto_accept_runs_the_job_on_the_machine_and_completes(hub, enrolled, prusa_slicer):
    config, lab = enrolled(simulator="duration_s = 2\nspeed = 1")
    with running(config, lab):
        placed = hub.offer(lab)
        wait_until(lambda: hub.job_state(placed) == "completed", what="the job to complete")
        job = hub.job(placed)

    assert job is not None and hub.get(Offer, placed.offer_id).state == "accepted"
    assert job.result["machine"] == "mk3"
    assert job.result["estimate"]["estimated_s"] > 0
    assert [a["name"] for a in job.result["artifacts"]] == ["cube.gcode"]
    kinds = [event.kind for event in hub.events(placed.order_id)]
    assert kinds[0] == "accepted" and kinds[-1] == "completed", kinds
    progress = [e.data for e in hub.events(placed.order_id) if e.kind == "progress"]
    assert progress, kinds
    assert any(p["message"] == "running on mk3" for p in progress), progress
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents)
    assert _starts(config) == [str(job.id)]
    assert _stages(config, job.id) == [
        "accepted",
        "downloaded",
        "prepared",
        "started",
        "done",
        "reported",
    ]


def test_manual_policy_holds_the_offer_until_a_person_accepts_it(
    hub, enrolled, tmp_path, prusa_slicer
):
    config, lab = enrolled(accept="manual")
    config_path = tmp_path / "agent.toml"
    config_path.write_text(config_text(hub.base, tmp_path / "state", accept="manual"))
    cli = CliRunner()
    with running(config, lab) as agent:
        placed = hub.offer(lab)
        wait_until(lambda: placed.offer_id in agent._held, what="the offer to be held")
        assert hub.get(Offer, placed.offer_id).state == "open"

        listed = cli.invoke(app, ["agent", "offers", "--config", str(config_path), "--json"])
        assert listed.exit_code == 0, listed.output
        offers = json.loads(listed.stdout)["offers"]
        assert [(o["id"], o["machines"], o["cannot"]) for o in offers] == [
            (placed.offer_id, ["mk3"], None)
        ]

        taken = cli.invoke(
            app, ["agent", "--config", str(config_path), "accept", str(placed.offer_id)]
        )
        assert taken.exit_code == 0, taken.output
        wait_until(lambda: hub.job_state(placed) == "completed", what="the job to complete")

    job = hub.job(placed)
    assert job is not None and _starts(config) == [str(job.id)]


def test_an_offer_the_lab_cannot_make_is_declined_with_the_reason(hub, enrolled):
    config, lab = enrolled()
    with running(config, lab):
        laser = hub.offer(lab, process="laser", material="plywood")
        abs_ = hub.offer(lab, process="fdm", material="abs")
        wait_until(
            lambda: all(hub.get(Offer, p.offer_id).state == "declined" for p in (laser, abs_)),
            what="both offers to be declined",
        )
    assert hub.get(Offer, laser.offer_id).reason == "no machine here does laser (this lab does fdm)"
    assert hub.get(Offer, abs_.offer_id).reason == (
        "no fdm machine here takes abs (they take PETG, PLA)"
    )
    assert hub.job(laser) is None and hub.job(abs_) is None


def test_a_file_whose_hash_does_not_match_fails_the_job(hub, enrolled):
    blob = hub.blob_path()
    blob.chmod(0o644)
    blob.write_bytes(b"\0" * blob.stat().st_size)  # same size, other bytes
    config, lab = enrolled()
    with running(config, lab):
        placed = hub.offer(lab)
        wait_until(lambda: hub.job_state(placed) == "failed", what="the job to fail")
    job = hub.job(placed)
    assert job is not None
    assert "cube.stl" in job.reason and "sha256 is" in job.reason, job.reason
    assert "the file was not used" in job.reason
    assert _starts(config) == []
    assert "failed" in [event.kind for event in hub.events(placed.order_id)]


def test_a_hub_answering_500_for_a_while_does_not_stop_the_job(hub, enrolled, proxy, prusa_slicer):
    config, lab = enrolled(server=proxy.base, simulator="duration_s = 2\nspeed = 1")
    with running(config, lab, backoff=Retry(attempts=1, base_s=0.2, cap_s=1.0)):
        placed = hub.offer(lab)
        wait_until(lambda: hub.job_state(placed) == "in_progress", what="the job to be accepted")
        wait_until(lambda: _starts(config), what="the machine to start")
        proxy.fail_for(6.0)  # longer than the machine needs
        wait_until(
            lambda: "done" in _stages(config, hub.job(placed).id), what="the machine to finish"
        )
        assert proxy.failing and hub.job_state(placed) == "in_progress"
        wait_until(lambda: hub.job_state(placed) == "completed", what="the report")

    assert sum(proxy.refused.values()) > 0
    job = hub.job(placed)
    assert [e.kind for e in hub.events(placed.order_id)].count("completed") == 1
    assert _starts(config) == [str(job.id)]


def test_a_lost_lease_leaves_the_machine_running_and_the_outcome_is_still_reported(
    hub, enrolled, prusa_slicer
):
    config, lab = enrolled(simulator="duration_s = 3\nspeed = 1")
    with running(config, lab) as agent:
        placed = hub.offer(lab)
        wait_until(lambda: _starts(config), what="the machine to start")
        job_id = hub.job(placed).id
        with write_session(hub.sessions) as session:
            assert lose_lease(session, job_id, later(3600))  # as the lease sweep would
        live = agent.jobs.get(str(job_id))
        wait_until(lambda: live is None or live.disconnected, what="the agent to see it")
        wait_until(lambda: hub.job_state(placed) == "completed", what="the report")

    kinds = [event.kind for event in hub.events(placed.order_id)]
    assert kinds.count("disconnected") == 1 and kinds[-1] == "completed", kinds
    assert hub.events(placed.order_id)[-1].data.get("after_lost_lease") is True
    assert _starts(config) == [str(job_id)]  # never started again
    assert hub.get(Job, job_id).result["machine"] == "mk3"


def test_a_journal_left_by_an_earlier_hub_is_not_mistaken_for_new_work(hub, enrolled):
    config, lab = enrolled()
    with Journal(config.agent.state_dir) as journal:  # job 1 of an earlier hub, long done
        spec = JobSpec(
            job_id="1",
            offer_id="99",
            machine="mk3",
            process="fdm",
            material="PLA",
            files=[FileRef(name="old.stl", url=hub.base + "/old.stl", sha256="0" * 64, size=1)],
        )
        journal.add(spec)
    with running(config, lab, expect_fatal=True) as agent:
        placed = hub.offer(lab)
        wait_until(lambda: agent.fatal, what="the agent to refuse")
        wait_until(lambda: hub.job_state(placed) == "failed", what="the job to go back")
    assert "give the agent a new --state-dir" in (agent.fatal or "")
    assert "clashes with an older job" in hub.job(placed).reason
    assert _starts(config) == []


def _accepted_while_the_agent_is_down(hub, tmp_path, lab) -> tuple:
    """An offer taken by a person with `dgml agent accept` while no agent runs; its lease then
    lapses, as the sweep finds it."""
    path = tmp_path / "agent.toml"
    path.write_text(config_text(hub.base, tmp_path / "state"))
    placed = hub.offer(lab)
    taken = CliRunner().invoke(
        app, ["agent", "accept", str(placed.offer_id), "--config", str(path)]
    )
    assert taken.exit_code == 0, taken.output
    job_id = hub.job(placed).id
    with write_session(hub.sessions) as session:
        assert lose_lease(session, job_id, later(3600))
    return placed, job_id


def test_a_job_rerouted_while_the_agent_was_down_is_not_started(hub, enrolled, tmp_path):
    config, lab = enrolled()
    placed, job_id = _accepted_while_the_agent_is_down(hub, tmp_path, lab)
    resolved = hub.http.post(
        f"/api/v1/jobs/{job_id}/resolve",
        json={"action": "reroute", "note": "the lab did not answer"},
        headers=hub.operator.headers,
    )
    assert resolved.status_code == 200, resolved.text
    with running(config, lab):
        wait_until(lambda: "reported" in _stages(config, job_id), what="the job to be dropped")
    assert _stages(config, job_id)[-2:] == ["cancelled", "reported"]
    assert _starts(config) == []
    assert hub.job_state(placed) == "failed"


def test_a_job_whose_lease_lapsed_before_it_started_is_handed_back(hub, enrolled, tmp_path):
    config, lab = enrolled()
    placed, _ = _accepted_while_the_agent_is_down(hub, tmp_path, lab)
    with running(config, lab):
        wait_until(lambda: hub.job_state(placed) == "failed", what="the job to be handed back")
    assert "handed back" in hub.job(placed).reason
    assert _starts(config) == []
