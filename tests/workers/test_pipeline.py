"""Pipelines by process: FDM slices each mesh, the others pass their file type through, and a
job without the files its process needs fails with a sentence naming what it had."""

from __future__ import annotations

import shutil

import pytest

from tests.workers.conftest import make_config, mesh_path
from workers.pipeline import InputFile, PrepareFailed, prepare, safe_name, totals


def _inputs(tmp_path, *names: str) -> list[InputFile]:
    """Files as the cache keeps them: named by hash, without their extension."""
    out = []
    for index, name in enumerate(names):
        stored = tmp_path / "cache" / f"{index:064x}"
        stored.parent.mkdir(exist_ok=True)
        source = mesh_path(name) if not name.endswith(".dxf") else None
        if source is not None:
            shutil.copyfile(source, stored)
        else:
            stored.write_text("0\nSECTION\n2\nENTITIES\n0\nENDSEC\n0\nEOF\n")
        out.append(InputFile(f"parts/{name}", stored))
    return out


def test_fdm_slices_every_mesh_and_leaves_the_rest(tmp_path, prusa_slicer):
    machine = make_config(tmp_path).machines[0]
    files = _inputs(tmp_path, "20mm-xyz-cube.stl", "tube.obj", "box_sides.STEP")
    out = tmp_path / "job" / "artifacts"
    artifacts = prepare("fdm", machine, "PLA", files, out, slicer_command=prusa_slicer)
    assert [a.name for a in artifacts] == ["20mm-xyz-cube.gcode", "tube.gcode"]
    assert [a.source for a in artifacts] == ["parts/20mm-xyz-cube.stl", "parts/tube.obj"]
    assert sorted(p.name for p in out.iterdir()) == ["20mm-xyz-cube.gcode", "tube.gcode"]
    for artifact in artifacts:
        assert artifact.kind == "gcode" and artifact.estimated_s and artifact.estimated_s > 0
    total = totals(artifacts)
    assert total["estimated_s"] == pytest.approx(sum(a.estimated_s or 0 for a in artifacts))
    assert not (tmp_path / "job" / "artifacts.partial").exists()


def test_fdm_without_a_mesh_fails_naming_what_it_had(tmp_path):
    machine = make_config(tmp_path).machines[0]
    files = _inputs(tmp_path, "box_sides.STEP")
    with pytest.raises(PrepareFailed, match=r"fdm job needs meshes .*has: parts/box_sides.STEP"):
        prepare("fdm", machine, "PLA", files, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_slice_fails_the_job_and_leaves_no_folder(tmp_path, prusa_slicer):
    machine = make_config(tmp_path, volume="[10, 10, 10]").machines[0]
    files = _inputs(tmp_path, "20mm-xyz-cube.stl")
    with pytest.raises(PrepareFailed, match="does not fit the bed"):
        prepare("fdm", machine, "PLA", files, tmp_path / "out", slicer_command=prusa_slicer)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize(
    ("process", "names", "kept", "kind"),
    [
        ("laser", ["lid.dxf", "20mm-xyz-cube.stl", "side.dxf"], ["lid.dxf", "side.dxf"], "dxf"),
        ("cnc", ["box_sides.STEP", "20mm-xyz-cube.stl"], ["box_sides.STEP"], "step"),
        ("sla", ["tube.obj", "box_sides.STEP"], ["tube.obj"], "mesh"),
        ("sls", ["20mm-xyz-cube.stl"], ["20mm-xyz-cube.stl"], "mesh"),
    ],
)
def test_other_processes_pass_their_files_through(tmp_path, process, names, kept, kind):
    machine = make_config(tmp_path, process=process).machines[0]
    files = _inputs(tmp_path, *names)
    out = tmp_path / "out"
    artifacts = prepare(process, machine, "plywood", files, out)
    assert [a.name for a in artifacts] == kept
    assert {a.kind for a in artifacts} == {kind}
    for artifact in artifacts:
        source = next(f for f in files if f.name.endswith(artifact.name))
        assert (out / artifact.name).read_bytes() == source.path.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(kept)


def test_laser_without_dxf_fails(tmp_path):
    machine = make_config(tmp_path, process="laser").machines[0]
    with pytest.raises(PrepareFailed, match=r"laser job needs DXF files \(.dxf\)"):
        prepare("laser", machine, "plywood", _inputs(tmp_path, "tube.obj"), tmp_path / "out")


def test_a_job_for_another_process_or_material_is_refused(tmp_path):
    machine = make_config(tmp_path).machines[0]
    files = _inputs(tmp_path, "tube.obj")
    with pytest.raises(PrepareFailed, match="does fdm, not cnc"):
        prepare("cnc", machine, "PLA", files, tmp_path / "out")
    with pytest.raises(PrepareFailed, match="does not take 'nylon'"):
        prepare("fdm", machine, "nylon", files, tmp_path / "out")


def test_a_rerun_replaces_what_a_killed_run_left(tmp_path):
    machine = make_config(tmp_path, process="cnc").machines[0]
    out = tmp_path / "out"
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "half.step").write_text("half")
    out.mkdir()
    (out / "stale.step").write_text("old")
    artifacts = prepare("cnc", machine, "plywood", _inputs(tmp_path, "box_sides.STEP"), out)
    assert [p.name for p in out.iterdir()] == [artifacts[0].name]
    assert not (tmp_path / "out.partial").exists()


def test_file_names_are_tamed_and_kept_apart(tmp_path):
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("a\\b\\c d$.stl") == "c d_.stl"
    assert safe_name("...") == "file"
    machine = make_config(tmp_path, process="sls").machines[0]
    files = _inputs(tmp_path, "tube.obj", "tube.obj")
    files = [InputFile("a/tube.obj", files[0].path), InputFile("b/TUBE.obj", files[1].path)]
    artifacts = prepare("sls", machine, "plywood", files, tmp_path / "out")
    assert [a.name for a in artifacts] == ["tube.obj", "TUBE-2.obj"]
