"""The commands a person runs beside the agent: status, offers, accept and decline against a
live hub, and the hotfolder confirmations that finish a job made by hand."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dgml.cli import app
from router.models import Offer
from tests.agent.conftest import running, wait_until, write_config
from workers.agent_reports import read_status

cli = CliRunner()


def agent_cli(config, *args: str):
    return cli.invoke(app, ["agent", *args, "--config", str(config)])


def test_status_shows_machines_jobs_and_the_hub(hub, enrolled, tmp_path, prusa_slicer):
    config, lab = enrolled(simulator="duration_s = 3600\nspeed = 1")
    path = write_config(tmp_path, hub.base, simulator="duration_s = 3600\nspeed = 1")
    with running(config, lab):
        placed = hub.offer(lab)
        wait_until(lambda: hub.job_state(placed) == "in_progress", what="the job")
        job_id = str(hub.job(placed).id)
        wait_until(
            lambda: (
                ((read_status(config.agent.state_dir) or {}).get("jobs") or {})
                .get(job_id, {})
                .get("percent")
                is not None
            ),
            what="the machine's progress in status.json",
        )
        answer = agent_cli(path, "status", "--json")
        assert answer.exit_code == 0, answer.output
        report = json.loads(answer.stdout)
        text = agent_cli(path, "status")
        assert text.exit_code == 0, text.output

    assert report["enrolled"] and report["fablab_id"] == lab
    assert report["agent"]["running"] is True
    assert report["hub"]["reachable"] is True and report["hub"]["last_contact"]
    assert [(m["name"], m["process"], m["driver"], m["available"]) for m in report["machines"]] == [
        ("mk3", "fdm", "simulator", True)
    ]
    assert [(j["job_id"], j["stage"]) for j in report["jobs"]] == [(job_id, "started")]
    assert report["jobs"][0]["percent"] is not None
    assert "mk3" in text.stdout and "started" in text.stdout and "answers" in text.stdout


def test_status_without_a_hub_or_a_state_dir_says_so(tmp_path):
    from tests.conftest import free_port

    path = write_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    answer = agent_cli(path, "status", "--json")
    assert answer.exit_code == 0, answer.output
    report = json.loads(answer.stdout)
    assert report["hub"]["reachable"] is False and "cannot reach" in report["hub"]["error"]
    assert (report["enrolled"], report["state_dir_exists"], report["jobs"]) == (False, False, [])
    assert not (tmp_path / "state").exists()  # status only reads


def test_a_person_declines_and_cannot_accept_what_no_machine_makes(hub, enrolled, tmp_path):
    _config, lab = enrolled(accept="manual")
    path = write_config(tmp_path, hub.base, accept="manual")
    laser = hub.offer(lab, process="laser", material="plywood")
    refused = agent_cli(path, "accept", str(laser.offer_id))
    assert refused.exit_code != 0
    assert f"no machine here can make offer {laser.offer_id}: no machine here does laser" in str(
        refused.exception
    )
    assert hub.get(Offer, laser.offer_id).state == "open"

    declined = agent_cli(path, "decline", str(laser.offer_id), "--reason", "no laser here")
    assert declined.exit_code == 0, declined.output
    offer = hub.get(Offer, laser.offer_id)
    assert (offer.state, offer.reason) == ("declined", "no laser here")
    gone = agent_cli(path, "accept", str(laser.offer_id))
    assert gone.exit_code != 0 and "is not open for this fablab" in str(gone.exception)


def test_hotfolder_jobs_are_finished_by_a_person(hub, enrolled, tmp_path, prusa_slicer):
    config, lab = enrolled(driver="hotfolder")
    path = write_config(tmp_path, hub.base, driver="hotfolder")
    with running(config, lab):
        made = hub.offer(lab)
        wait_until(lambda: hub.job(made) is not None, what="the first job")
        first = str(hub.job(made).id)
        wait_until(lambda: (tmp_path / "jobs" / first / "README.txt").is_file(), what="folder")
        assert (tmp_path / "jobs" / first / "cube.gcode").is_file()
        done = agent_cli(path, "done", first)
        assert done.exit_code == 0, done.output
        wait_until(lambda: hub.job_state(made) == "completed", what="the first report")

        broken = hub.offer(lab)
        wait_until(lambda: hub.job(broken) is not None, what="the second job")
        second = str(hub.job(broken).id)
        wait_until(lambda: (tmp_path / "jobs" / second).is_dir(), what="the second folder")
        failed = agent_cli(path, "failed", second, "--reason", "nozzle clogged")
        assert failed.exit_code == 0, failed.output
        wait_until(lambda: hub.job_state(broken) == "failed", what="the second report")

    assert hub.job(broken).reason == "nozzle clogged"
    again = agent_cli(path, "done", first)
    assert again.exit_code == 0 and "already was" in again.output
    both = agent_cli(path, "failed", first, "--reason", "changed my mind")
    assert both.exit_code != 0 and "already marked done" in str(both.exception)
    unknown = agent_cli(path, "done", "999999")
    assert unknown.exit_code != 0 and "no hotfolder holds job" in str(unknown.exception)
