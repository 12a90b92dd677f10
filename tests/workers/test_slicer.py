"""PrusaSlicer headless: the profile from the config, estimates read from the G-code, and the
ways a slice fails (a part too big for the bed, a file that is no mesh, a slicer that hangs)."""

from __future__ import annotations

import pytest

from tests.workers.conftest import make_config, mesh_path
from workers.slicer import SliceError, parse_duration, profile_ini, read_summary, slice_mesh
from workers.tools import check_prusa_slicer, find_tools, usable_machines


def test_profile_carries_bed_nozzle_filament_and_temperatures(tmp_path):
    extra = "[machines.slicer]\nlayer_height_mm = 0.25\n[machines.slicer.temperatures.PETG]\n"
    extra += "nozzle = 245\nbed = 85\nfirst_layer_nozzle = 250"
    machine = make_config(tmp_path, extra=extra, volume="[220, 180, 150]").machines[0]
    ini = dict(
        line.split(" = ", 1) for line in profile_ini(machine, "petg").splitlines() if " = " in line
    )
    assert ini["bed_shape"] == "0x0,220x0,220x180,0x180"
    assert ini["max_print_height"] == "150"
    assert ini["nozzle_diameter"] == "0.4"
    assert ini["filament_diameter"] == "1.75"
    assert (ini["temperature"], ini["first_layer_temperature"]) == ("245", "250")
    assert (ini["bed_temperature"], ini["first_layer_bed_temperature"]) == ("85", "85")
    assert ini["layer_height"] == "0.25"
    assert ini["filament_density"] == "1.27"
    pla = dict(
        line.split(" = ", 1) for line in profile_ini(machine, "PLA").splitlines() if " = " in line
    )
    assert (pla["temperature"], pla["bed_temperature"]) == ("210", "60")
    with pytest.raises(SliceError, match="does not take 'ABS'"):
        profile_ini(machine, "ABS")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m 12s", 912), ("1h 6m 6s", 3966), ("45s", 45), ("2d 1h 0m 3s", 176403), ("3h", 10800)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_duration_that_is_none():
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_tools_are_found_and_report_their_version(prusa_slicer):
    tool = check_prusa_slicer(prusa_slicer)
    assert tool.ok and tool.version and tool.version[0].isdigit()
    report = find_tools()
    assert report.available("fdm") and report.unavailable() == {}


def test_a_missing_slicer_leaves_fdm_out_but_not_laser(tmp_path):
    config = make_config(tmp_path, slicer=str(tmp_path / "no-such-slicer"))
    report = find_tools(config)
    assert not report.tool("prusa-slicer").ok
    assert not report.available("fdm")
    assert report.available("laser") and report.available("cnc") and report.available("sla")
    usable, left_out = usable_machines(config, report)
    assert usable == [] and "not found" in left_out["m1"]
    assert any(line.startswith("not offering fdm") for line in report.lines())


def test_a_program_that_is_not_prusaslicer_is_refused(tmp_path):
    fake = tmp_path / "fake-slicer"
    fake.write_text("#!/bin/sh\necho usage: something else\n")
    fake.chmod(0o755)
    assert "another program" in (check_prusa_slicer(str(fake)).problem or "")
    broken = tmp_path / "broken-slicer"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    broken.chmod(0o755)
    assert "cannot open display" in (check_prusa_slicer(str(broken)).problem or "")


def test_slicing_a_real_stl_reports_time_and_filament(tmp_path, prusa_slicer):
    machine = make_config(tmp_path).machines[0]
    out = tmp_path / "cube.gcode"
    result = slice_mesh(mesh_path("20mm-xyz-cube.stl"), machine, "PLA", out, command=prusa_slicer)
    assert result.gcode == out and out.stat().st_size > 0
    summary = result.summary
    assert summary.estimated_s > 0
    assert summary.filament_mm > 0 and summary.filament_cm3 > 0
    assert summary.filament_g is not None and summary.filament_g > 0
    # 1.24 g/cm3 for PLA, as the profile says (PrusaSlicer rounds the figures it prints)
    assert summary.filament_g == pytest.approx(summary.filament_cm3 * 1.24, rel=0.02)
    assert summary.height_mm == pytest.approx(20, abs=0.3)
    assert read_summary(out) == summary
    assert "M109 S210" in out.read_text()
    assert list(tmp_path.glob("slice-*")) == []  # the temporary folder is gone


def test_a_part_wider_than_the_bed_fails_clearly(tmp_path, prusa_slicer):
    machine = make_config(tmp_path, volume="[15, 15, 100]").machines[0]
    out = tmp_path / "cube.gcode"
    with pytest.raises(SliceError, match=r"does not fit the bed of m1 \(15 x 15 mm\)"):
        slice_mesh(mesh_path("20mm-xyz-cube.stl"), machine, "PLA", out, command=prusa_slicer)
    assert not out.exists()


def test_a_part_taller_than_the_machine_fails_clearly(tmp_path, prusa_slicer):
    machine = make_config(tmp_path, volume="[200, 200, 12]").machines[0]
    out = tmp_path / "cube.gcode"
    with pytest.raises(SliceError, match=r"20 mm tall; m1 prints at most 12 mm"):
        slice_mesh(mesh_path("20mm-xyz-cube.stl"), machine, "PLA", out, command=prusa_slicer)
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"solid nothing\nthis is not an stl\n", b"\x00" * 10])
def test_a_file_that_is_no_mesh_fails_clearly(tmp_path, prusa_slicer, content):
    machine = make_config(tmp_path).machines[0]
    bad = tmp_path / "part.stl"
    bad.write_bytes(content)
    with pytest.raises(SliceError, match=r"part\.stl") as caught:
        slice_mesh(bad, machine, "PLA", tmp_path / "part.gcode", command=prusa_slicer)
    assert "\n" not in caught.value.detail
    assert not (tmp_path / "part.gcode").exists()


def test_a_hanging_slicer_is_stopped(tmp_path):
    machine = make_config(tmp_path).machines[0]
    slow = tmp_path / "slow-slicer"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    with pytest.raises(SliceError, match=r"longer than 0\.5 s"):
        slice_mesh(
            mesh_path("20mm-xyz-cube.stl"),
            machine,
            "PLA",
            tmp_path / "x.gcode",
            command=str(slow),
            timeout_s=0.5,
        )


def test_only_mesh_files_are_sliced(tmp_path):
    machine = make_config(tmp_path).machines[0]
    with pytest.raises(SliceError, match=r"takes \.stl"):
        slice_mesh(mesh_path("box_sides.STEP"), machine, "PLA", tmp_path / "x.gcode")
