"""``dgml validate`` offline, as a maker runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data"
DGML = shutil.which("dgml", path=str(Path(sys.executable).parent)) or "dgml"


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DGML, "validate", *args], capture_output=True, text=True, timeout=120)


def test_sound_cube_passes_with_exit_0():
    result = validate(str(DATA / "20mm-xyz-cube.stl"))
    assert result.returncode == 0, result.stderr
    assert "pass" in result.stdout
    assert "20.00x20.00x20.00 mm" in result.stdout


def test_json_report_of_the_cube():
    result = validate(str(DATA / "20mm-xyz-cube.stl"), "--json")
    report = json.loads(result.stdout)
    assert report["verdict"] == "pass"
    assert report["metrics"]["volume_mm3"] == pytest.approx(8000, rel=0.01)
    assert report["format"] == "stl-binary"


def test_open_mesh_fails_with_exit_1():
    result = validate(str(DATA / "teapot.stl"), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["verdict"] == "fail"
    assert "OPEN_EDGES" in {issue["code"] for issue in report["issues"]}


def test_unreadable_file_exits_2_with_a_reason(tmp_path):
    fake = tmp_path / "photo.stl"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    result = validate(str(fake), "--json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["verdict"] == "unreadable"
    assert report["issues"][0]["code"] == "UNREADABLE"
    assert report["issues"][0]["message"]
    assert "Traceback" not in result.stderr


def test_part_too_big_for_the_build_volume_fails():
    result = validate(str(DATA / "20mm-xyz-cube.stl"), "--build-volume", "15x15x15", "--json")
    assert result.returncode == 1
    codes = {issue["code"] for issue in json.loads(result.stdout)["issues"]}
    assert "EXCEEDS_BUILD_VOLUME" in codes
    fits = validate(str(DATA / "20mm-xyz-cube.stl"), "--build-volume", "250x210x210")
    assert fits.returncode == 0


@pytest.mark.parametrize("volume", ["big", "10x10", "0x10x10", "-5x10x10"])
def test_bad_build_volume_is_a_usage_error(volume):
    result = validate(str(DATA / "20mm-xyz-cube.stl"), "--build-volume", volume)
    assert result.returncode == 2
    assert "XxYxZ" in result.stderr


def test_missing_path_is_a_usage_error(tmp_path):
    result = validate(str(tmp_path / "nothing.stl"))
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_folder_reports_every_model_and_exits_with_the_worst(tmp_path):
    shutil.copy(DATA / "20mm-xyz-cube.stl", tmp_path / "cube.stl")
    shutil.copy(DATA / "teapot.stl", tmp_path / "teapot.stl")
    (tmp_path / "README.md").write_text("not a model")
    result = validate(str(tmp_path), "--json")
    assert result.returncode == 1
    verdicts = {Path(r["path"]).name: r["verdict"] for r in json.loads(result.stdout)}
    assert verdicts == {"cube.stl": "pass", "teapot.stl": "fail"}


def test_process_checks_warn_about_thin_walls(tmp_path):
    import trimesh

    plate = tmp_path / "plate.stl"
    trimesh.creation.box((40, 40, 0.5)).export(plate)
    result = validate(str(plate), "--process", "fdm", "--json")
    assert result.returncode == 0  # a warning: it can be made, with a caveat
    report = json.loads(result.stdout)
    assert report["verdict"] == "warn"
    assert report["process"] == "fdm"
    assert "THIN_WALLS" in {issue["code"] for issue in report["issues"]}
    unknown = validate(str(plate), "--process", "plasma")
    assert unknown.returncode == 2


def test_laser_outline_is_written_as_dxf(tmp_path):
    import ezdxf
    import trimesh

    plate = trimesh.creation.box((40, 30, 3))
    hole = trimesh.creation.cylinder(radius=5, height=10, sections=64)
    part = plate.difference(hole, engine="manifold")
    part.export(tmp_path / "plate.stl")
    trimesh.creation.icosphere(radius=5).export(tmp_path / "ball.stl")
    result = validate(str(tmp_path), "--process", "laser", "--dxf", str(tmp_path / "cut"), "--json")
    reports = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert reports["plate.stl"]["metrics"]["sheet_thickness_mm"] == pytest.approx(3)
    assert "NOT_FLAT" in {i["code"] for i in reports["ball.stl"]["issues"]}
    assert result.returncode == 1  # the ball cannot be cut
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["plate.dxf"]
    loops = list(ezdxf.readfile(tmp_path / "cut" / "plate.dxf").modelspace().query("LWPOLYLINE"))
    assert len(loops) == 2


def test_dxf_needs_the_laser_process(tmp_path):
    result = validate(str(DATA / "unit_cube.STL"), "--dxf", str(tmp_path))
    assert result.returncode == 2
    assert "--dxf needs --process laser" in result.stderr
