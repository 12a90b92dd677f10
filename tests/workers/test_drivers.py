"""The simulator and hotfolder drivers: progress, done, injected failure, cancel, resume, and
a person's done/failed markers."""

from __future__ import annotations

import pytest

from dgml.errors import Conflict, Invalid, NotFound
from tests.workers.conftest import make_config
from workers.config import HotfolderOptions, SimulatorOptions
from workers.drivers import DriverError, make_driver
from workers.drivers.hotfolder import HotfolderDriver, find_job_folder, mark_done, mark_failed
from workers.drivers.simulator import SimulatorDriver


class Clock:
    """A clock the test moves by hand: the simulator's progress without waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _artifacts(tmp_path, *names: str):
    paths = []
    for name in names:
        path = tmp_path / "artifacts" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"; {name}\n")
        paths.append(path)
    return paths


def test_the_simulator_runs_to_done_on_its_clock(tmp_path):
    clock = Clock()
    driver = SimulatorDriver(SimulatorOptions(speed=10, duration_s=100), tmp_path, clock=clock)
    handle = driver.start("job-1", _artifacts(tmp_path, "a.gcode"))
    assert driver.poll(handle).state == "running" and driver.poll(handle).percent == 0
    clock.now += 4  # 40 machine seconds of 100
    status = driver.poll(handle)
    assert (status.state, status.percent) == ("running", 40.0)
    clock.now += 6
    assert driver.poll(handle).state == "done" and driver.poll(handle).percent == 100
    assert driver.starts() == ["job-1"]


def test_the_simulator_fails_at_the_injected_percent(tmp_path):
    clock = Clock()
    options = SimulatorOptions(speed=1, duration_s=200, fail_at_percent=30)
    driver = SimulatorDriver(options, tmp_path, clock=clock)
    handle = driver.start("job-2", _artifacts(tmp_path, "a.gcode"))
    clock.now += 58  # 29 %
    assert driver.poll(handle).state == "running"
    clock.now += 2
    status = driver.poll(handle)
    assert (status.state, status.percent) == ("failed", 30)
    assert "30 %" in status.message
    clock.now += 1000
    assert driver.poll(handle).state == "failed"  # it stays failed


def test_the_simulator_uses_the_slicers_estimate(tmp_path):
    gcode = tmp_path / "part.gcode"
    gcode.write_text(
        "G1 X1\n; filament used [mm] = 10\n; filament used [cm3] = 1\n"
        "; estimated printing time (normal mode) = 1h 0m 0s\n"
    )
    other = _artifacts(tmp_path, "plate.dxf")
    driver = SimulatorDriver(SimulatorOptions(), tmp_path / "sim")
    assert driver.machine_seconds([gcode]) == 3600
    assert driver.machine_seconds([gcode, *other]) == 3600 + 600


def test_the_simulator_cancels_and_never_starts_twice(tmp_path):
    clock = Clock()
    driver = SimulatorDriver(SimulatorOptions(speed=1, duration_s=100), tmp_path, clock=clock)
    artifacts = _artifacts(tmp_path, "a.gcode")
    handle = driver.start("job-3", artifacts)
    with pytest.raises(DriverError, match="already started"):
        driver.start("job-3", artifacts)
    assert driver.resume(handle) == handle  # the machine has it: followed, not started
    clock.now += 10
    driver.cancel(handle)
    clock.now += 500
    status = driver.poll(handle)
    assert (status.state, status.percent) == ("cancelled", 10.0)
    assert driver.starts() == ["job-3"]


def test_the_simulator_resumes_a_job_it_never_got_by_starting_it(tmp_path):
    driver = SimulatorDriver(SimulatorOptions(duration_s=0), tmp_path / "sim")
    handle = driver.handle_for("job-4", _artifacts(tmp_path, "a.gcode"))
    assert driver.poll(handle).state == "failed"  # nothing on the machine
    driver.resume(handle)
    assert driver.poll(handle).state == "done"
    driver.resume(handle)
    assert driver.starts() == ["job-4"]


def test_the_simulator_refuses_missing_artifacts(tmp_path):
    driver = SimulatorDriver(SimulatorOptions(), tmp_path / "sim")
    with pytest.raises(DriverError, match="missing"):
        driver.start("job-5", [tmp_path / "nothing.gcode"])
    assert driver.starts() == []


def test_the_hotfolder_hands_over_files_and_reads_markers(tmp_path):
    driver = HotfolderDriver(HotfolderOptions(path=tmp_path / "hot"), "laser")
    artifacts = _artifacts(tmp_path, "lid.dxf", "side.dxf")
    handle = driver.start("job-6", artifacts)
    folder = tmp_path / "hot" / "job-6"
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "lid.dxf", "side.dxf"]
    readme = (folder / "README.txt").read_text()
    assert "dgml agent done job-6" in readme and "lid.dxf" in readme
    status = driver.poll(handle)
    assert status.state == "running" and "waiting for a person" in status.message
    assert mark_done(tmp_path / "hot", "job-6") is True
    assert mark_done(tmp_path / "hot", "job-6") is False  # said twice: fine
    assert driver.poll(handle).state == "done"
    with pytest.raises(Conflict, match="already marked done"):
        mark_failed(tmp_path / "hot", "job-6", "jammed")
    with pytest.raises(DriverError, match="already exists"):
        driver.start("job-6", artifacts)


def test_the_hotfolder_failed_marker_carries_the_reason(tmp_path):
    driver = HotfolderDriver(HotfolderOptions(path=tmp_path / "hot"))
    handle = driver.start("job-7", _artifacts(tmp_path, "lid.dxf"))
    with pytest.raises(Invalid, match="reason"):
        mark_failed(tmp_path / "hot", "job-7", "   ")
    mark_failed(tmp_path / "hot", "job-7", "the sheet\nwarped")
    status = driver.poll(handle)
    assert (status.state, status.message) == ("failed", "the sheet warped")


def test_the_hotfolder_cancel_and_resume(tmp_path):
    driver = HotfolderDriver(HotfolderOptions(path=tmp_path / "hot"))
    artifacts = _artifacts(tmp_path, "lid.dxf")
    handle = driver.handle_for("job-8", artifacts)
    driver.resume(handle)  # never handed over: resume hands it over
    assert (tmp_path / "hot" / "job-8" / "lid.dxf").is_file()
    assert driver.resume(handle) == handle
    driver.cancel(handle)
    assert driver.poll(handle).state == "cancelled"
    with pytest.raises(Conflict):
        mark_done(tmp_path / "hot", "job-8")


def test_hotfolder_markers_check_the_job(tmp_path):
    with pytest.raises(Invalid):
        mark_done(tmp_path, "../etc")
    with pytest.raises(NotFound):
        mark_done(tmp_path, "no-such-job")


def test_find_job_folder_looks_in_the_configs_hotfolders(tmp_path):
    config = make_config(tmp_path, driver="hotfolder", process="laser", options='path = "hot"')
    driver = make_driver(config.machines[0], tmp_path / "state")
    driver.start("job-9", _artifacts(tmp_path, "lid.dxf"))
    assert find_job_folder(config, "job-9") == tmp_path / "hot"
    with pytest.raises(NotFound):
        find_job_folder(config, "job-10")
