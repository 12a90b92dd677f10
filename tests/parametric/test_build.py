"""Real builds: parameters change the geometry, parts become files, failures say why."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import ezdxf
import pytest

from dgml.errors import Invalid
from registry.geometry.checks import check_mesh
from registry.geometry.readers import read_model
from registry.parametric import sandbox
from registry.parametric.build import build_design, load_folder
from registry.parametric.params import ParameterError, parameter_hash

from .conftest import CAD, FAST, SCRIPTS, script


def volume_of(path: Path, bodies: int = 1) -> float:
    report = check_mesh(read_model(path, path.name))
    assert report.metrics.watertight and report.metrics.bodies == bodies
    assert report.verdict.value == ("pass" if bodies == 1 else "warn")
    return report.metrics.volume_mm3


def test_the_box_grows_with_its_parameters(tmp_path):
    small = build_design(script("box"), None, {}, tmp_path / "small", CAD)
    large = build_design(script("box"), None, {"width": 30, "height": 12}, tmp_path / "large", CAD)
    assert small.ok and large.ok, (small.error, large.error)
    assert small.parameters == {"width": 20.0, "height": 10}
    assert large.parameters == {"width": 30.0, "height": 12}
    assert large.parameter_hash == parameter_hash({"width": 30.0, "height": 12})
    assert large.parameter_hash != small.parameter_hash
    assert volume_of(tmp_path / "small" / "box.stl") == pytest.approx(20 * 15 * 10, rel=1e-6)
    assert volume_of(tmp_path / "large" / "box.stl") == pytest.approx(30 * 15 * 12, rel=1e-6)
    [part] = large.parts
    assert part.name == "box" and [f.path for f in part.files] == ["box.stl", "box.step"]
    for file in part.files:
        data = (tmp_path / "large" / file.path).read_bytes()
        assert (file.size, file.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    step = (tmp_path / "large" / "box.step").read_bytes()
    assert step.startswith(b"ISO-10303-21")
    assert read_model(tmp_path / "large" / "box.stl", "box.stl").source_format == "stl-binary"


@pytest.fixture
def laser_folder(tmp_path) -> Path:
    folder = tmp_path / "plate"
    folder.mkdir()
    shutil.copyfile(SCRIPTS / "plate.py", folder / "plate.py")
    manifest = {
        "name": "Mounting plate",
        "license": "CERN-OHL-S-2.0",
        "process": "laser",
        "source": "plate.py",
        "parameters": [
            {"name": "hole", "type": "float", "min": 2, "max": 8, "unit": "mm"},
            {"name": "thickness", "type": "float", "min": 1, "max": 6, "unit": "mm"},
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_laser_plate_gets_its_cut_outline_as_dxf(laser_folder, tmp_path):
    source, manifest = load_folder(laser_folder)
    out = tmp_path / "out"
    result = build_design(source, manifest, {"with_knob": True}, out, CAD)
    assert result.ok, result.error
    plate, knob = result.parts
    assert [f.path for f in plate.files] == ["plate.stl", "plate.step", "plate.dxf"]
    assert [f.path for f in knob.files] == ["knob.stl", "knob.step"]
    assert any("'knob' gets no DXF" in note for note in result.notes)
    drawing = ezdxf.readfile(out / "plate.dxf")
    layers = sorted(e.dxf.layer for e in drawing.modelspace().query("LWPOLYLINE"))
    assert layers == ["INNER"] * 4 + ["OUTER"]
    outer = next(e for e in drawing.modelspace() if e.dxf.layer == "OUTER")
    xs = [p[0] for p in outer.get_points("xy")]
    ys = [p[1] for p in outer.get_points("xy")]
    assert sorted([max(xs) - min(xs), max(ys) - min(ys)]) == pytest.approx([50, 80], abs=0.05)


def test_a_value_out_of_bounds_is_refused_before_anything_runs(laser_folder, monkeypatch):
    def no_sandbox(*args, **kwargs):
        raise AssertionError("the sandbox must not start")

    monkeypatch.setattr(sandbox.Sandbox, "run", no_sandbox)
    source, manifest = load_folder(laser_folder)
    with pytest.raises(ParameterError) as caught:
        build_design(source, manifest, {"hole": 20}, Path("unused"), CAD)
    assert caught.value.data["field"] == "params.hole"
    assert "above the maximum 8" in caught.value.detail
    with pytest.raises(ParameterError, match="'colour'"):
        build_design(source, manifest, {"colour": "red"}, Path("unused"), CAD)


def test_several_parts_names_assemblies_and_text(tmp_path):
    result = build_design(script("parts"), None, {"label": "v2"}, tmp_path, CAD)
    assert result.ok, result.error
    names = [p.name for p in result.parts]
    assert names == ["part", "part-2", "peg", "peg-2", "stand-.-.-x", "label"]
    for name in names:
        assert (tmp_path / f"{name}.stl").stat().st_size > 84
    # the assembly is exported as one compound: base and (placed) post together
    stand = volume_of(tmp_path / "stand-.-.-x.stl", bodies=2)
    assert stand == pytest.approx(10 * 10 * 2 + 2 * 2 * 10, rel=1e-6)


def test_a_cqgi_script_with_only_result_and_no_import(tmp_path):
    result = build_design(script("result_var"), None, {"side": 8, "rounded": False}, tmp_path, CAD)
    assert result.ok, result.error
    assert [p.name for p in result.parts] == ["part"]
    assert volume_of(tmp_path / "part.stl") == pytest.approx(512, rel=1e-6)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("width = 3\nif width\n", "design.py, line 2: expected ':'"),
        ("width = 3\nraise ValueError('too wide')\n", "design.py, line 2: ValueError: too wide"),
        ("width = 3\n", "the script showed nothing"),
        ("show_object(42)\n", "part 'part' is a int, not a CadQuery"),
        ("import sys\nsys.exit(3)\n", "called exit(3)"),
    ],
)
def test_a_failing_script_gives_one_line_and_its_log(source, words, tmp_path):
    result = build_design(source, None, {}, tmp_path, FAST)
    assert not result.ok and result.limit is None
    assert words in result.error and "\n" not in result.error
    assert result.parts == []


def test_the_log_holds_what_the_script_printed_and_its_traceback(tmp_path):
    source = "print('hello from the script')\nraise KeyError('missing')\n"
    result = build_design(source, None, {}, tmp_path, FAST)
    assert "hello from the script" in result.log
    assert 'File "design.py", line 2' in result.log and "KeyError" in result.log


def test_a_long_log_keeps_its_head_and_tail(tmp_path):
    source = "print('FIRST')\nfor i in range(20000):\n    print('x' * 50)\nprint('LAST')\n"
    result = build_design(source, None, {}, tmp_path, FAST)
    assert result.log.startswith("FIRST") and result.log.rstrip().endswith("LAST")
    assert "bytes left out" in result.log and len(result.log) < 70_000


def test_load_folder_reads_the_manifest_and_its_source(laser_folder):
    source, manifest = load_folder(laser_folder)
    assert "length = 80.0" in source and manifest["process"] == "laser"
    assert load_folder(laser_folder / "plate.py") == (source, None)


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"source": "../plate.py"}', "outside the design folder"),
        ('{"source": "missing.py"}', "no script missing.py"),
        ('{"source": "notes.txt"}', "must name a .py file"),
    ],
)
def test_load_folder_refuses_a_bad_manifest(tmp_path, manifest, words):
    folder = tmp_path / "design"
    folder.mkdir()
    (folder / "manifest.json").write_text(manifest)
    (tmp_path / "plate.py").write_text("x = 1\n")
    with pytest.raises(Invalid, match=words):
        load_folder(folder)


def test_an_unknown_process_is_refused(tmp_path):
    with pytest.raises(Invalid, match="process must be one of") as caught:
        build_design("x = 1\n", {"process": "waterjet"}, {}, tmp_path, FAST)
    assert caught.value.data["field"] == "manifest.process"
