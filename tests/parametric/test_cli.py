"""``dgml build`` as a maker runs it: exit 0 built, 1 failed or capped, 2 bad parameters."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SCRIPTS

DGML = shutil.which("dgml", path=str(Path(sys.executable).parent)) or "dgml"


def dgml(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DGML, *args], capture_output=True, text=True, timeout=180, cwd=cwd, check=False
    )


@pytest.fixture
def design(tmp_path) -> Path:
    folder = tmp_path / "box"
    folder.mkdir()
    shutil.copyfile(SCRIPTS / "box.py", folder / "design.py")
    manifest = {
        "name": "Box",
        "license": "CC-BY-4.0",
        "process": "fdm",
        "parameters": [
            {"name": "width", "type": "float", "min": 5, "max": 100, "unit": "mm"},
            {"name": "height", "type": "int", "min": 2, "description": "how tall"},
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_build_writes_the_files_and_exits_0(design, tmp_path):
    result = dgml("build", str(design), "--param", "width=50", "-p", "height=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "build" / "box.stl").stat().st_size > 84
    assert (tmp_path / "build" / "box.step").exists()
    assert "box.stl" in result.stdout and "1 part written to build" in result.stdout


def test_json_prints_the_build_result(design, tmp_path):
    result = dgml("build", str(design), "--json", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["ok"] is True and built["parameters"] == {"width": 20.0, "height": 10}
    assert [f["path"] for f in built["parts"][0]["files"]] == ["box.stl", "box.step"]


@pytest.mark.parametrize(
    ("param", "words"),
    [
        ("width=500", "parameter 'width': 500 is above the maximum 100"),
        ("width=wide", "parameter 'width': must be a number"),
        ("height=2.5", "parameter 'height': must be a whole number"),
        ("depth=3", "parameter 'depth': the design has no such parameter"),
    ],
)
def test_a_bad_parameter_exits_2_naming_it(design, tmp_path, param, words):
    result = dgml("build", str(design), "--param", param, "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert words in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [("--param", "width"), ("--timeout", "0"), ("--memory", "100")])
def test_bad_usage_exits_2(design, args):
    assert dgml("build", str(design), *args).returncode == 2


def test_a_missing_path_exits_2(tmp_path):
    result = dgml("build", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr


def test_a_script_hitting_the_time_cap_exits_1_with_one_line(tmp_path):
    result = dgml("build", str(SCRIPTS / "loop.py"), "--timeout", "1", "-o", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: stopped by the time cap of 1 s"]


def test_a_failing_script_exits_1_and_shows_its_log_on_request(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("print('working on it')\nwidth = 1 / 0\n")
    result = dgml("build", str(script), "--log", "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "working on it" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: broken.py, line 2: ZeroDivisionError: division by zero"
    )


def test_list_params_prints_the_declarations(design):
    result = dgml("build", str(design), "--list-params")
    assert result.returncode == 0, result.stderr
    assert "width" in result.stdout and "5..100" in result.stdout and "how tall" in result.stdout
    listed = json.loads(dgml("build", str(design), "--list-params", "--json").stdout)
    assert listed[0] == {
        "name": "width",
        "type": "float",
        "default": 20.0,
        "min": 5.0,
        "max": 100.0,
        "unit": "mm",
    }


def test_list_params_exits_2_when_the_manifest_names_a_missing_parameter(design):
    manifest = json.loads((design / "manifest.json").read_text())
    manifest["parameters"].append({"name": "depth"})
    (design / "manifest.json").write_text(json.dumps(manifest))
    result = dgml("build", str(design), "--list-params")
    assert result.returncode == 2 and "parameter 'depth'" in result.stderr
