"""The OctoPrint driver against a real OctoPrint server with its virtual printer: a sliced job
prints to the end, a print cancelled at the printer is reported as failed, a file OctoPrint
refuses fails clearly, and a restarted agent follows its print instead of starting it again."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.workers.conftest import make_config, mesh_path
from workers.config import OctoPrintOptions
from workers.drivers import DriverError
from workers.drivers.octoprint import OctoPrintDriver
from workers.journal import JobSpec
from workers.runner import Runner

pytestmark = pytest.mark.slow


def _job_id() -> str:
    return "job-" + uuid.uuid4().hex[:10]


def _runner(tmp_path, octoprint, http, process: str = "fdm") -> Runner:
    options = f'url = "{octoprint.url}"\napi_key = "{octoprint.key}"'
    config = make_config(tmp_path, driver="octoprint", options=options, process=process)
    return Runner(config, client=http)


def _spec(file_server, job_id: str, name: str, process: str = "fdm") -> JobSpec:
    ref = file_server.add(f"{job_id}/{name}", mesh_path(name).read_bytes())
    material = "PLA" if process == "fdm" else "plywood"
    return JobSpec(job_id=job_id, machine="m1", process=process, material=material, files=[ref])


def _until_finished(runner: Runner, job_id: str, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runner.poll(job_id)
        if status.finished:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not finish within {timeout} s")


def _until_printing(octoprint, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = octoprint.state()
        if job["state"] == "Printing" and job["job"]["file"]["name"] == name:
            return
        time.sleep(0.1)
    raise AssertionError(f"OctoPrint did not start printing {name}")


def test_a_sliced_job_prints_to_the_end(tmp_path, octoprint, file_server, http, prusa_slicer):
    runner = _runner(tmp_path, octoprint, http)
    job_id = _job_id()
    try:
        runner.accept(_spec(file_server, job_id, "tube.obj"))
        record = runner.run_until_started(job_id)
        assert record.stage == "started", record.error
        assert record.handle is not None and record.handle["files"] == [f"dgml-{job_id}-1.gcode"]
        status = _until_finished(runner, job_id)
        assert (status.state, status.percent) == ("done", 100.0)
        assert runner.journal.get(job_id).stage == "done"
        prints = octoprint.file(f"dgml-{job_id}-1.gcode")["prints"]
        assert (prints["success"], prints["failure"]) == (1, 0)
    finally:
        runner.close()


def test_a_print_cancelled_at_the_printer_is_reported_as_failed(
    tmp_path, octoprint, file_server, http, prusa_slicer
):
    runner = _runner(tmp_path, octoprint, http)
    job_id = _job_id()
    try:
        runner.accept(_spec(file_server, job_id, "20mm-xyz-cube.stl"))
        assert runner.run_until_started(job_id).stage == "started"
        _until_printing(octoprint, f"dgml-{job_id}-1.gcode")
        running = runner.poll(job_id)
        assert running.state == "running" and "printing" in running.message
        octoprint.client.post("/api/job", json={"command": "cancel"})  # a person at the printer
        status = _until_finished(runner, job_id)
        assert status.state == "failed"
        assert "cancelled or failed at the printer" in status.message
        assert runner.journal.get(job_id).error == status.message
    finally:
        runner.close()


def test_the_agents_cancel_stops_the_print(tmp_path, octoprint, file_server, http, prusa_slicer):
    runner = _runner(tmp_path, octoprint, http)
    job_id = _job_id()
    try:
        runner.accept(_spec(file_server, job_id, "20mm-xyz-cube.stl"))
        runner.run_until_started(job_id)
        _until_printing(octoprint, f"dgml-{job_id}-1.gcode")
        assert runner.cancel(job_id).stage == "cancelled"
        octoprint.idle(60)
        deadline = time.monotonic() + 30
        while not (octoprint.file(f"dgml-{job_id}-1.gcode") or {}).get("prints"):
            assert time.monotonic() < deadline, "OctoPrint kept no history of the cancel"
            time.sleep(0.1)
        assert octoprint.file(f"dgml-{job_id}-1.gcode")["prints"]["last"]["success"] is False
    finally:
        runner.close()


def test_a_file_octoprint_refuses_fails_the_job_clearly(tmp_path, octoprint, file_server, http):
    # An SLA job passes its mesh through; OctoPrint takes G-code only and answers 415.
    runner = _runner(tmp_path, octoprint, http, process="sla")
    job_id = _job_id()
    try:
        runner.accept(_spec(file_server, job_id, "20mm-xyz-cube.stl", process="sla"))
        record = runner.run_until_started(job_id)
        assert record.stage == "failed"
        assert record.error == (
            "OctoPrint rejected 20mm-xyz-cube.stl: Could not upload file, invalid type (415)"
        )
        assert octoprint.state()["state"] == "Operational"
    finally:
        runner.close()


def test_a_printer_error_fails_the_job_with_octoprints_message(tmp_path, octoprint):
    driver = OctoPrintDriver(
        OctoPrintOptions(url=octoprint.url, api_key=octoprint.key), octoprint.key
    )
    gcode = tmp_path / "heater.gcode"
    moves = "".join(f"G1 X{x % 100} Y10 F3000\n" for x in range(400))
    gcode.write_text(f"G28\n{moves}!!DEBUG:trigger_fatal_error_marlin\n{moves}")
    job_id = _job_id()
    try:
        handle = driver.start(job_id, [gcode])
        deadline = time.monotonic() + 60
        while (status := driver.poll(handle)).state == "running":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status.state == "failed", status
        # the virtual printer's words for the failure it simulates
        assert "failed, the printer is in error: Thermal Runaway" in status.message
    finally:
        driver.close()
        octoprint.idle()


def test_a_wrong_api_key_is_a_clear_error(tmp_path, octoprint):
    driver = OctoPrintDriver(OctoPrintOptions(url=octoprint.url, api_key="wrong"), "wrong")
    gcode = tmp_path / "a.gcode"
    gcode.write_text("G28\n")
    try:
        with pytest.raises(DriverError, match="refused the API key"):
            driver.start(_job_id(), [gcode])
    finally:
        driver.close()


def test_a_busy_printer_refuses_a_second_job(tmp_path, octoprint, file_server, http, prusa_slicer):
    runner = _runner(tmp_path, octoprint, http)
    first, second = _job_id(), _job_id()
    try:
        runner.accept(_spec(file_server, first, "20mm-xyz-cube.stl"))
        runner.run_until_started(first)
        _until_printing(octoprint, f"dgml-{first}-1.gcode")
        runner.accept(_spec(file_server, second, "tube.obj"))
        record = runner.run_until_started(second)
        assert record.stage == "failed"
        assert record.error and "printer is not ready: Printing" in record.error
        assert octoprint.file(f"dgml-{second}-1.gcode") is None
        runner.cancel(first)
    finally:
        runner.close()


def test_a_restarted_agent_follows_its_print(tmp_path, octoprint, file_server, http, prusa_slicer):
    job_id = _job_id()
    runner = _runner(tmp_path, octoprint, http)
    runner.accept(_spec(file_server, job_id, "tube.obj"))
    assert runner.run_until_started(job_id).stage == "started"
    runner.close()  # the agent goes away; the printer goes on
    again = _runner(tmp_path, octoprint, http)
    try:
        again.resume_all()
        assert _until_finished(again, job_id).state == "done"
        prints = octoprint.file(f"dgml-{job_id}-1.gcode")["prints"]
        assert (prints["success"], prints["failure"]) == (1, 0)  # printed once
    finally:
        again.close()


def test_a_start_journaled_but_never_sent_is_sent_once_on_resume(
    tmp_path, octoprint, file_server, http, prusa_slicer
):
    job_id = _job_id()
    runner = _runner(tmp_path, octoprint, http)
    runner.accept(_spec(file_server, job_id, "tube.obj"))
    runner.step(job_id)
    record = runner.step(job_id)
    paths = [runner.artifacts_dir(job_id) / a["name"] for a in record.artifacts or []]
    runner.journal.record_start(job_id, runner.driver("m1").handle_for(job_id, paths))
    runner.close()  # as if killed right there
    assert octoprint.file(f"dgml-{job_id}-1.gcode") is None
    again = _runner(tmp_path, octoprint, http)
    try:
        again.resume_all()
        assert _until_finished(again, job_id).state == "done"
        again.resume_all()
        prints = octoprint.file(f"dgml-{job_id}-1.gcode")["prints"]
        assert (prints["success"], prints["failure"]) == (1, 0)
    finally:
        again.close()
