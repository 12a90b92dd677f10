"""STEP: real B-rep files tessellate into closed meshes that agree with OCP's own measures;
files that are not STEP, or not whole, are refused with a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from registry.geometry.checks import check_mesh
from registry.geometry.limits import ReadLimits
from registry.geometry.mesh import MeshData, Unreadable
from registry.geometry.read_step import MAX_DEFLECTION_MM, brep_problems, read_step
from registry.geometry.readers import read_model
from registry.geometry.report import Code, Severity, Verdict

pytest.importorskip("OCP")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

# file: (solids, declared unit, size in mm); all three were drawn in inches
STEP_FILES = {
    "featuretype.STEP": (1, "inch", [127.0, 63.5, 34.925]),
    "box_sides.STEP": (10, "inch", [184.15, 114.3, 95.25]),
    "base_interface_AP214.STEP": (1, "inch", [599.41, 638.67, 4.7625]),
}


def brep_reference(path: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """Volume (mm3) and tight bounding box (mm) of the file's B-rep, measured by OCP."""
    from OCP.Bnd import Bnd_Box
    from OCP.BRepBndLib import BRepBndLib
    from OCP.BRepGProp import BRepGProp
    from OCP.GProp import GProp_GProps
    from OCP.STEPControl import STEPControl_Reader

    reader = STEPControl_Reader()
    reader.ReadFile(str(path))
    reader.TransferRoots()
    shape = reader.OneShape()
    props = GProp_GProps()
    BRepGProp.VolumeProperties_s(shape, props)
    box = Bnd_Box()
    BRepBndLib.AddOptimal_s(shape, box, False, False)
    bounds = np.array(box.Get())
    return props.Mass(), bounds[:3], bounds[3:]


@pytest.mark.parametrize("name", sorted(STEP_FILES))
def test_real_step_reads_into_a_closed_mesh_matching_the_brep(name):
    solids, unit, size = STEP_FILES[name]
    mesh = read_step((DATA / name).read_bytes())
    assert mesh.source_format == "step"
    assert mesh.unit == unit
    assert mesh.brep_valid is True
    assert mesh.brep_problems == ()
    assert len(mesh.objects) == solids
    assert mesh.object_of_face.shape == (mesh.triangle_count,)
    assert np.bincount(mesh.object_of_face).min() > 0

    report = check_mesh(mesh)
    metrics = report.metrics
    assert metrics.watertight
    assert metrics.winding_consistent
    assert metrics.bodies == solids
    codes = {issue.code for issue in report.issues}
    assert Code.INVERTED_NORMALS not in codes
    assert Code.INVALID_BREP not in codes
    assert report.verdict is (Verdict.PASS if solids == 1 else Verdict.WARN)

    volume, low, high = brep_reference(DATA / name)
    assert metrics.volume_mm3 == pytest.approx(volume, rel=0.01)
    # the mesh lies within the chordal deflection of the surfaces it approximates
    assert np.allclose(metrics.bbox_min_mm, low, atol=MAX_DEFLECTION_MM + 1e-3)
    assert np.allclose(metrics.bbox_max_mm, high, atol=MAX_DEFLECTION_MM + 1e-3)
    assert np.all(np.array(metrics.bbox_min_mm) >= low - 1e-3)
    assert np.all(np.array(metrics.bbox_max_mm) <= high + 1e-3)
    # inches become millimetres
    assert high - low == pytest.approx(size, abs=0.01)


def test_step_matches_the_same_part_exported_as_stl_in_inches():
    # featuretype.STL holds the same part in inches (STL carries no unit): 25.4 times smaller
    step = check_mesh(read_step((DATA / "featuretype.STEP").read_bytes())).metrics
    stl = check_mesh(read_model(DATA / "featuretype.STL", "featuretype.STL")).metrics
    assert step.bbox_min_mm == pytest.approx(np.multiply(stl.bbox_min_mm, 25.4), abs=1e-4)
    assert step.bbox_max_mm == pytest.approx(np.multiply(stl.bbox_max_mm, 25.4), abs=1e-4)
    assert step.volume_mm3 == pytest.approx(stl.volume_mm3 * 25.4**3, rel=0.01)


@pytest.mark.parametrize("name", ["part.step", "part.STP", "part.stp"])
def test_read_model_takes_step_by_either_suffix(name):
    # the magic that refuses a STEP file renamed .stl must let a real one through
    mesh = read_model((DATA / "featuretype.STEP").read_bytes(), name)
    assert mesh.source_format == "step"
    with pytest.raises(Unreadable, match="is a STEP file, not a STL model"):
        read_model(DATA / "featuretype.STEP", "part.stl")


def test_mirrored_placement_keeps_the_faces_pointing_out():
    from OCP.BRepPrimAPI import BRepPrimAPI_MakeBox
    from OCP.gp import gp_Ax2, gp_Dir, gp_Pnt, gp_Trsf
    from OCP.TopLoc import TopLoc_Location

    from registry.geometry.read_step import _mesh

    mirror = gp_Trsf()
    mirror.SetMirror(gp_Ax2(gp_Pnt(0, 0, 0), gp_Dir(1, 0, 0)))
    box = BRepPrimAPI_MakeBox(10, 20, 30).Shape().Moved(TopLoc_Location(mirror))
    report = check_mesh(_mesh(box, "mm", ReadLimits()))
    assert report.verdict is Verdict.PASS, report.issues
    assert report.metrics.volume_mm3 == pytest.approx(6000)
    assert report.metrics.bbox_min_mm == pytest.approx([-10, 0, 0])


def test_triangle_limit_applies_to_the_tessellation():
    with pytest.raises(Unreadable, match="more than the 100 a model may have"):
        read_step((DATA / "featuretype.STEP").read_bytes(), limits=ReadLimits(max_triangles=100))


def truncated() -> bytes:
    data = (DATA / "featuretype.STEP").read_bytes()
    return data[: len(data) // 2]


NO_DATA = b"""ISO-10303-21;
HEADER;
FILE_DESCRIPTION(('empty'),'2;1');
FILE_NAME('empty.step','2024-01-01T00:00:00',(''),(''),'','','');
FILE_SCHEMA(('AUTOMOTIVE_DESIGN'));
ENDSEC;
DATA;
ENDSEC;
END-ISO-10303-21;
"""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "does not start with 'ISO-10303-21;'"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "does not start with 'ISO-10303-21;'"),
        (b"solid cube\nthis is not a STEP file\n", "does not start with 'ISO-10303-21;'"),
        (b"ISO-10303-21;\nnot a header at all\n", r"cannot be parsed: .*expecting HEADER"),
        (truncated(), r"cannot be parsed: .*unexpected end of file"),
        (NO_DATA, "holds no shape"),
    ],
    ids=["empty", "png", "garbage", "garbage-after-magic", "truncated", "no-entities"],
)
def test_bad_step_is_unreadable_with_a_reason(data, reason):
    with pytest.raises(Unreadable, match=reason) as caught:
        read_step(data)
    assert "\n" not in caught.value.reason


def test_png_renamed_step_says_what_it_is():
    with pytest.raises(Unreadable, match=r"part\.step is a PNG image, not a STEP model"):
        read_model(b"\x89PNG\r\n\x1a\n" + bytes(64), "part.step")


def test_invalid_brep_is_named():
    from OCP.BRepBuilderAPI import BRepBuilderAPI_MakeFace, BRepBuilderAPI_MakePolygon
    from OCP.BRepCheck import BRepCheck_Analyzer
    from OCP.BRepPrimAPI import BRepPrimAPI_MakePrism
    from OCP.gp import gp_Pnt, gp_Vec

    # a bow tie: the outline crosses itself (the STEP reader's healing repairs this one, so the
    # shape is built here rather than read from a file)
    corners = [gp_Pnt(0, 0, 0), gp_Pnt(10, 10, 0), gp_Pnt(10, 0, 0), gp_Pnt(0, 10, 0)]
    outline = BRepBuilderAPI_MakePolygon(*corners, True).Wire()
    face = BRepBuilderAPI_MakeFace(outline, True).Face()
    prism = BRepPrimAPI_MakePrism(face, gp_Vec(0, 0, 5)).Shape()
    analyzer = BRepCheck_Analyzer(prism)
    assert not analyzer.IsValid()
    problems = brep_problems(prism, analyzer)
    assert "self intersecting wire (2 wires)" in problems


def test_invalid_brep_fails_the_report():
    mesh = read_step((DATA / "featuretype.STEP").read_bytes())
    broken = MeshData(
        vertices=mesh.vertices,
        faces=mesh.faces,
        source_format="step",
        brep_valid=False,
        brep_problems=("self intersecting wire (2 wires)", "unorientable shape (2 faces)"),
    )
    report = check_mesh(broken)
    assert report.verdict is Verdict.FAIL
    (issue,) = [i for i in report.issues if i.code is Code.INVALID_BREP]
    assert issue.severity is Severity.FAIL
    assert "self intersecting wire (2 wires); unorientable shape" in issue.message
    assert issue.model_extra["problems"] == list(broken.brep_problems)
    assert not any(i.code is Code.INVALID_BREP for i in check_mesh(mesh).issues)


def test_reading_meshes_does_not_load_ocp():
    code = "import sys, registry.geometry.readers; print('OCP' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_dgml_validate_step_json():
    dgml = Path(sys.executable).with_name("dgml")
    out = subprocess.run(
        [str(dgml), "validate", str(DATA / "featuretype.STEP"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)  # nothing from OCCT mixed into the JSON
    assert report["format"] == "step"
    assert report["verdict"] in ("pass", "warn", "fail")
    assert report["metrics"]["watertight"] is True
