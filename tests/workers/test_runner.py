"""A job's way through the machine side, with real files over HTTP, the real slicer and the
simulator; and what happens when the agent is killed mid-job and started again."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dgml.errors import Invalid
from tests.workers.conftest import config_text, make_config, mesh_path
from workers.cache import DownloadFailed
from workers.config import parse_config
from workers.drivers.simulator import SimulatorDriver
from workers.journal import JobSpec
from workers.runner import Runner
from workers.tools import Tool, ToolReport

ROOT = Path(__file__).resolve().parents[2]


def _spec(file_server, job_id: str = "job-1", names=("20mm-xyz-cube.stl",)) -> JobSpec:
    files = [file_server.add(name, mesh_path(name).read_bytes()) for name in names]
    return JobSpec(job_id=job_id, machine="m1", process="fdm", material="PLA", files=files)


def test_a_job_runs_from_download_to_done(tmp_path, file_server, http, prusa_slicer):
    config = make_config(tmp_path)
    runner = Runner(config, client=http)
    try:
        spec = _spec(file_server, names=("20mm-xyz-cube.stl", "tube.obj"))
        runner.accept(spec)
        record = runner.run_until_started("job-1")
        assert record.stage == "started"
        assert [a["name"] for a in record.artifacts or []] == ["20mm-xyz-cube.gcode", "tube.gcode"]
        estimate = (record.outcome or {})["estimate"]
        assert estimate["estimated_s"] > 0 and estimate["filament_g"] > 0
        status = runner.poll("job-1")  # duration_s = 0: the simulator is done at once
        assert status.state == "done"
        assert runner.journal.get("job-1").stage == "done"
        assert file_server.gets["/20mm-xyz-cube.stl"] == 1
    finally:
        runner.close()


def test_a_file_whose_hash_does_not_match_fails_the_job(tmp_path, file_server, http):
    runner = Runner(make_config(tmp_path), client=http)
    try:
        spec = _spec(file_server)
        file_server.files["/20mm-xyz-cube.stl"] = b"x" * spec.files[0].size
        runner.accept(spec)
        record = runner.run_until_started("job-1")
        assert record.stage == "failed"
        assert record.error and "20mm-xyz-cube.stl" in record.error and "sha256" in record.error
        assert not runner.cache.path_for(spec.files[0].sha256).exists()
        assert not runner.artifacts_dir("job-1").exists()
    finally:
        runner.close()


def test_a_download_that_may_work_later_leaves_the_job_accepted(tmp_path, file_server, http):
    runner = Runner(make_config(tmp_path), client=http)
    try:
        spec = _spec(file_server)
        file_server.statuses["/20mm-xyz-cube.stl"] = 503
        runner.accept(spec)
        with pytest.raises(DownloadFailed, match="503") as caught:
            runner.step("job-1")
        assert caught.value.retry and runner.journal.get("job-1").stage == "accepted"
        file_server.statuses["/20mm-xyz-cube.stl"] = 404  # gone for good: the job fails
        record = runner.step("job-1")
        assert record.stage == "failed" and record.error and "404" in record.error
    finally:
        runner.close()


def test_a_job_the_agent_cannot_make_is_refused_before_anything_runs(tmp_path, http, file_server):
    no_slicer = ToolReport({"prusa-slicer": Tool("prusa-slicer", problem="not found")})
    runner = Runner(make_config(tmp_path), client=http, tools=no_slicer)
    try:
        with pytest.raises(Invalid, match="fdm is not offered here: prusa-slicer: not found"):
            runner.accept(_spec(file_server))
        with pytest.raises(Invalid, match="does not take"):
            runner.accept(_spec(file_server).model_copy(update={"material": "wood"}))
        assert runner.journal.jobs() == []
    finally:
        runner.close()


def test_a_failing_machine_fails_the_job(tmp_path, file_server, http, prusa_slicer):
    options = "duration_s = 0\nfail_at_percent = 0"
    runner = Runner(make_config(tmp_path, options=options), client=http)
    try:
        runner.accept(_spec(file_server))
        runner.run_until_started("job-1")
        status = runner.poll("job-1")
        assert status.state == "failed"
        assert runner.journal.get("job-1").error == "simulated failure at 0 %"
    finally:
        runner.close()


def test_cancel_stops_the_machine(tmp_path, file_server, http, prusa_slicer):
    runner = Runner(make_config(tmp_path, options="duration_s = 3600"), client=http)
    try:
        runner.accept(_spec(file_server))
        runner.run_until_started("job-1")
        assert runner.poll("job-1").state == "running"
        assert runner.cancel("job-1").stage == "cancelled"
        assert runner.poll("job-1").state == "cancelled"
    finally:
        runner.close()


def test_state_dir_deleted_between_runs(tmp_path, file_server, http, prusa_slicer, caplog):
    config = make_config(tmp_path)
    runner = Runner(config, client=http)
    runner.accept(_spec(file_server))
    runner.run_until_started("job-1")
    runner.close()
    shutil.rmtree(config.agent.state_dir)
    with caplog.at_level(logging.WARNING):
        runner = Runner(config, client=http)
    try:
        assert any("does not exist" in r.getMessage() for r in caplog.records)
        assert runner.journal.jobs() == [] and runner.resume_all() == []
        runner.accept(_spec(file_server))  # the same job, from the start again
        assert runner.run_until_started("job-1").stage == "started"
        assert runner.poll("job-1").state == "done"
    finally:
        runner.close()


def test_missing_artifacts_are_prepared_again(tmp_path, file_server, http, prusa_slicer):
    runner = Runner(make_config(tmp_path), client=http)
    try:
        runner.accept(_spec(file_server))
        runner.step("job-1")
        runner.step("job-1")
        shutil.rmtree(runner.artifacts_dir("job-1"))
        assert runner.step("job-1").stage == "started"
        assert (runner.artifacts_dir("job-1") / "20mm-xyz-cube.gcode").is_file()
        assert file_server.gets["/20mm-xyz-cube.stl"] == 1
    finally:
        runner.close()


# --- killed and started again ------------------------------------------------------------


def _child(config: Path, mode: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.agent_child", str(config), mode, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _restart_setup(tmp_path, file_server, counting_slicer):
    wrapper, slicer_log = counting_slicer
    config_path = tmp_path / "agent.toml"
    text = config_text(tmp_path / "state", options="duration_s = 1\nspeed = 1", slicer=str(wrapper))
    config_path.write_text(text)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        _spec(file_server, names=("20mm-xyz-cube.stl", "tube.obj")).model_dump_json()
    )
    return config_path, spec_path, slicer_log


def _resume_in_a_new_process(config_path: Path) -> dict:
    resumed = _child(config_path, "resume")
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_killed_mid_job_the_agent_resumes_without_starting_again(
    tmp_path, file_server, counting_slicer
):
    config_path, spec_path, slicer_log = _restart_setup(tmp_path, file_server, counting_slicer)
    first = _child(config_path, "hang-after-start", str(spec_path))
    try:
        line = first.stdout.readline() if first.stdout else ""
        assert line.startswith("STARTED started"), first.stderr.read() if first.stderr else ""
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    assert first.returncode == -signal.SIGKILL

    assert _resume_in_a_new_process(config_path) == {"job-1": "done"}
    simulator = SimulatorDriver(
        parse_config(config_path.read_text()).machines[0].simulator_options,
        tmp_path / "state" / "simulator" / "m1",
    )
    assert simulator.starts() == ["job-1"]  # resumed, not started again
    assert slicer_log.read_text().count("slice") == 2  # two parts, sliced once each
    assert file_server.gets["/20mm-xyz-cube.stl"] == 1
    assert file_server.gets["/tube.obj"] == 1


@pytest.mark.slow
def test_killed_between_journaling_the_start_and_starting_the_machine(
    tmp_path, file_server, counting_slicer
):
    config_path, spec_path, slicer_log = _restart_setup(tmp_path, file_server, counting_slicer)
    first = _child(config_path, "die-before-start", str(spec_path))
    out, _ = first.communicate(timeout=180)
    assert "RECORDED" in out and first.returncode == -signal.SIGKILL
    simulator_dir = tmp_path / "state" / "simulator" / "m1"
    assert not (simulator_dir / "starts.log").exists()  # the machine never got it

    assert _resume_in_a_new_process(config_path) == {"job-1": "done"}
    assert (simulator_dir / "starts.log").read_text().split() == ["job-1"]  # started once
    assert slicer_log.read_text().count("slice") == 2
    assert file_server.gets["/20mm-xyz-cube.stl"] == 1
