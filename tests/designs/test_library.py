"""The project's own designs (designs/<name>/): manifests, parameters, and geometry.

Every folder in designs/ is a design. Its manifest must be complete and agree with the
script's parameters; the script must build at its defaults and at samples across the ranges
its manifest declares, and every part must pass the registry's geometry checks for the
manifest's process: one closed body, no self-intersections, and the process's rules (walls,
overhangs, bed contact for FDM; flat sheets for the laser; no undercuts or sharp inside
corners for CNC).
"""

from __future__ import annotations

import ast
import json
import math
import random
from itertools import combinations
from pathlib import Path
from typing import Any

import cadquery as cq
import pytest
from OCP.BRepExtrema import BRepExtrema_DistShapeShape

from registry.geometry.intersect import check_self_intersections
from registry.geometry.readers import read_model
from registry.geometry.report import GeometryReport, Verdict
from registry.geometry.validate import validate_model
from tests.designs.build import Part, build, export_stl, is_literal, parameters

DESIGNS_DIR = Path(__file__).resolve().parents[2] / "designs"
DESIGNS = sorted(
    path.name
    for path in DESIGNS_DIR.iterdir()
    if path.is_dir() and not path.name.startswith((".", "_"))
)

LICENSES = {"CERN-OHL-S-2.0", "CERN-OHL-P-2.0", "CC-BY-SA-4.0", "CC0-1.0"}
PROCESSES = {"fdm", "sla", "sls", "cnc", "laser"}
TYPES = {"float", "int", "bool", "choice", "string"}
REQUIRED = {
    "name": str,
    "version": str,
    "license": str,
    "licensor": str,
    "function": str,
    "documentation-language": str,
    "material": str,
    "process": str,
    "parameters": list,
}
# Warnings a design is allowed, by issue code, with the reason (also given in its README).
# None so far: every part of every design passes outright.
ALLOWED_WARNINGS: dict[str, dict[str, str]] = {}
SAMPLES = 5  # mixed samples per design: each parameter takes its min, its max, 3 others


def manifest(design: str) -> dict[str, Any]:
    return json.loads((DESIGNS_DIR / design / "manifest.json").read_text())


def script(design: str) -> Path:
    return DESIGNS_DIR / design / "design.py"


def test_there_are_at_least_eight_designs():
    assert len(DESIGNS) >= 8, DESIGNS


@pytest.mark.parametrize("design", DESIGNS)
def test_design_folder_is_complete(design):
    folder = DESIGNS_DIR / design
    for name in ("design.py", "manifest.json", "README.md"):
        assert (folder / name).is_file(), f"{design} has no {name}"
    readme = (folder / "README.md").read_text()
    assert manifest(design)["license"] in readme, "the README names the licence"


@pytest.mark.parametrize("design", DESIGNS)
def test_manifest_fields(design):
    data = manifest(design)
    for field, kind in REQUIRED.items():
        assert isinstance(data.get(field), kind), f"{field} missing or not a {kind.__name__}"
        if kind is str:
            assert data[field].strip(), f"{field} is empty"
    assert data["name"] == design
    assert data["license"] in LICENSES
    assert data["licensor"] == "dgml contributors"
    assert data["documentation-language"] == "en"
    assert data["process"] in PROCESSES
    names = [p.get("name") for p in data["parameters"]]
    assert len(names) == len(set(names)), "a parameter is listed twice"
    for parameter in data["parameters"]:
        check_parameter_entry(parameter)


def check_parameter_entry(parameter: dict[str, Any]) -> None:
    name = parameter.get("name")
    assert isinstance(name, str) and name.isidentifier(), parameter
    assert parameter.get("type") in TYPES, parameter
    assert isinstance(parameter.get("description"), str) and parameter["description"].strip()
    assert "default" in parameter, parameter
    kind, default = parameter["type"], parameter["default"]
    if kind in ("float", "int"):
        number = float if kind == "float" else int
        for key in ("default", "min", "max"):
            value = parameter.get(key)
            assert isinstance(value, number) and not isinstance(value, bool), (name, key)
        assert parameter["min"] <= default <= parameter["max"], name
        assert parameter["min"] < parameter["max"], name
    elif kind == "bool":
        assert isinstance(default, bool), name
    elif kind == "choice":
        choices = parameter.get("choices")
        assert isinstance(choices, list) and len(choices) >= 2, name
        assert default in choices, name
    else:
        assert isinstance(default, str), name
    if "unit" in parameter:
        assert isinstance(parameter["unit"], str) and parameter["unit"], name


@pytest.mark.parametrize("design", DESIGNS)
def test_manifest_parameters_are_the_script_literals(design):
    declared = {p["name"]: p for p in manifest(design)["parameters"]}
    literals = parameters(script(design))
    assert set(declared) == set(literals), "manifest and script list different parameters"
    for name, value in literals.items():
        entry = declared[name]
        assert value == entry["default"], f"{name}: script {value!r}, manifest {entry['default']!r}"
        kind = entry["type"]
        if kind == "float":
            assert isinstance(value, float), name
        elif kind == "int":
            assert isinstance(value, int) and not isinstance(value, bool), name
        elif kind == "bool":
            assert isinstance(value, bool), name
        elif kind == "choice":
            assert type(value) is type(entry["default"]), name


def literal_assignments(tree: ast.Module) -> list[str]:
    """Every top-level name assigned a literal, or a tuple holding one: what CQGI (which reads
    all top-level assignments) would offer as a parameter."""
    names = []
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and (
                is_literal(node.value) or isinstance(node.value, ast.Tuple)
            ):
                names.append(target.id)
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                names += [
                    t.id
                    for t, v in zip(target.elts, node.value.elts, strict=False)
                    if isinstance(t, ast.Name) and is_literal(v)
                ]
    return names


@pytest.mark.parametrize("design", DESIGNS)
def test_only_the_parameters_are_top_level_literals(design):
    """Constants are written so that no tool reading the script takes them for parameters."""
    names = literal_assignments(ast.parse(script(design).read_text()))
    assert names == list(parameters(script(design))), "a constant reads as a parameter"


@pytest.mark.parametrize("design", DESIGNS)
def test_cqgi_reads_the_same_parameters(design):
    from cadquery import cqgi

    model = cqgi.parse(script(design).read_text())
    assert set(model.metadata.parameters) == {p["name"] for p in manifest(design)["parameters"]}


@pytest.mark.parametrize("design", DESIGNS)
def test_script_uses_only_cadquery_and_the_standard_library(design):
    tree = ast.parse(script(design).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules <= {"cadquery", "math", "types"}, modules
    assert not any(
        isinstance(node, ast.FunctionDef) and node.name == "show_object" for node in tree.body
    ), "show_object is the caller's"


# ----------------------------------------------------------------------------- geometry


def validate_part(part: Part, process: str, directory: Path) -> GeometryReport:
    path = export_stl(part, directory)
    report = validate_model(path, path.name, process=process)
    check_self_intersections(read_model(path, path.name), report)
    return report.decide()


def assert_sound(design: str, values: dict[str, Any], process: str, directory: Path) -> None:
    """Build ``design`` with ``values`` and check every part."""
    values = {**parameters(script(design)), **values}
    label = f"{design} {values}"
    parts = build(script(design), values)
    assert parts, f"{label}: the script showed no part"
    names = [part.name for part in parts]
    assert len(names) == len(set(names)), f"{label}: parts share a name: {names}"
    allowed = ALLOWED_WARNINGS.get(design, {})
    for part in parts:
        report = validate_part(part, process, directory)
        problems = [
            f"{issue.code}: {issue.message}"
            for issue in report.issues
            if issue.severity != "info" and issue.code not in allowed
        ]
        assert report.verdict in (Verdict.PASS, Verdict.WARN) and not problems, (
            f"{label} {part.name}: {report.verdict}\n" + "\n".join(problems)
        )
        assert report.metrics.bodies == 1 and report.metrics.watertight, f"{label} {part.name}"
    for check in DESIGN_CHECKS.get(design, ()):
        check(parts, values, label)


def distance(a: Part, b: Part) -> float:
    return BRepExtrema_DistShapeShape(a.shape.wrapped, b.shape.wrapped).Value()


def parts_do_not_overlap(parts: list[Part], values: dict[str, Any], label: str) -> None:
    for a, b in combinations(parts, 2):
        overlap = a.shape.intersect(b.shape).Volume()
        assert overlap < 1e-6, f"{label}: {a.name} and {b.name} overlap by {overlap:.4f} mm3"


def gears_turn_without_touching(parts: list[Part], values: dict[str, Any], label: str) -> None:
    """The gears sit at their centre distance; turned together through a tooth's pitch, their
    teeth never overlap. They are prisms, so their faces on the bed tell."""
    face_a, face_b = (
        next(f for f in part.shape.Faces() if f.normalAt().z < -0.99) for part in parts
    )
    teeth_a, teeth_b = values["teeth_a"], values["teeth_b"]
    centre = values["gear_module"] * (teeth_a + teeth_b) / 2
    for step in range(4):
        angle = 360 / teeth_a * step / 4
        a = face_a.rotate(cq.Vector(0, 0, 0), cq.Vector(0, 0, 1), angle)
        b = face_b.rotate(
            cq.Vector(centre, 0, 0), cq.Vector(centre, 0, 1), -angle * teeth_a / teeth_b
        )
        overlap = a.intersect(b).Area()
        assert overlap < 1e-6, f"{label}: turned {angle:.1f} degrees the teeth overlap"


def hinge_leaves_keep_clearance(parts: list[Part], values: dict[str, Any], label: str) -> None:
    """Printed in place, the leaves stay apart by the clearance they are drawn with, as drawn
    and turned a quarter of a turn."""
    leaf_a, leaf_b = parts
    clearance = values["clearance"]
    gap = distance(leaf_a, leaf_b)
    assert gap >= clearance - 1e-3, f"{label}: leaves {gap:.3f} mm apart, clearance {clearance}"
    axis_z = values["knuckle_diameter"] / 2 * math.cos(math.radians(45))
    turned = Part(
        "leaf_b", leaf_b.shape.rotate(cq.Vector(0, 0, axis_z), cq.Vector(0, 1, axis_z), -90)
    )
    gap = distance(leaf_a, turned)
    assert gap >= clearance - 1e-3, f"{label}: turned 90 degrees the leaves are {gap:.3f} mm apart"


# Checks beyond the geometry report, by design.
DESIGN_CHECKS = {
    "spur-gears": (gears_turn_without_touching,),
    "print-in-place-hinge": (parts_do_not_overlap, hinge_leaves_keep_clearance),
    "project-enclosure": (parts_do_not_overlap,),
}


@pytest.mark.parametrize("design", DESIGNS)
def test_builds_and_validates_at_defaults(design, tmp_path):
    assert_sound(design, {}, manifest(design)["process"], tmp_path)


# ----------------------------------------------------------------------------- ranges


def sample_values(entries: list[dict[str, Any]], seed: str, count: int = SAMPLES):
    """``count`` parameter sets: each parameter takes its min and its max once (its first and
    last choice, False and True) and random values otherwise, shuffled independently so that
    the samples mix extremes of different parameters."""
    rng = random.Random(seed)
    columns = {}
    for entry in entries:
        kind = entry["type"]
        if kind in ("float", "int"):
            low, high = entry["min"], entry["max"]
            pick = (
                (lambda lo=low, hi=high: round(rng.uniform(lo, hi), 3))
                if kind == "float"
                else (lambda lo=low, hi=high: rng.randint(lo, hi))
            )
            values = [low, high] + [pick() for _ in range(count - 2)]
        elif kind == "bool":
            values = [False, True] + [rng.choice([False, True]) for _ in range(count - 2)]
        elif kind == "choice":
            choices = entry["choices"]
            values = list(choices) + [rng.choice(choices) for _ in range(count - len(choices))]
        else:
            values = [entry["default"]] * count
        values = values[:count]
        rng.shuffle(values)
        columns[entry["name"]] = values
    return [{name: column[i] for name, column in columns.items()} for i in range(count)]


def corner_values(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every parameter at its low end together (min, False, first choice), then at its high
    end: where the parameters' effects pile up."""
    ends = []
    for end in (0, 1):
        values = {}
        for entry in entries:
            kind = entry["type"]
            if kind in ("float", "int"):
                values[entry["name"]] = (entry["min"], entry["max"])[end]
            elif kind == "bool":
                values[entry["name"]] = bool(end)
            elif kind == "choice":
                values[entry["name"]] = entry["choices"][-1 if end else 0]
            else:
                values[entry["name"]] = entry["default"]
        ends.append(values)
    return ends


def range_samples(design: str) -> list[dict[str, Any]]:
    entries = manifest(design)["parameters"]
    return sample_values(entries, seed=design) + corner_values(entries)


RANGE_CASES = [(design, index) for design in DESIGNS for index in range(SAMPLES + 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("design", "index"), RANGE_CASES)
def test_builds_and_validates_across_ranges(design, index, tmp_path):
    values = range_samples(design)[index]
    assert_sound(design, values, manifest(design)["process"], tmp_path)


def test_samples_reach_every_bound():
    entries = [
        {"name": "f", "type": "float", "default": 1.0, "min": 0.0, "max": 2.0},
        {"name": "i", "type": "int", "default": 3, "min": 1, "max": 9},
        {"name": "b", "type": "bool", "default": False},
        {"name": "c", "type": "choice", "default": "a", "choices": ["a", "b", "c"]},
    ]
    samples = sample_values(entries, seed="x")
    assert len(samples) == SAMPLES
    assert {s["f"] for s in samples} >= {0.0, 2.0}
    assert {s["i"] for s in samples} >= {1, 9}
    assert {s["b"] for s in samples} == {False, True}
    assert {s["c"] for s in samples} == {"a", "b", "c"}
    assert all(0.0 <= s["f"] <= 2.0 and 1 <= s["i"] <= 9 for s in samples)
    assert sample_values(entries, seed="x") == samples  # seeded: the same every run
    low, high = corner_values(entries)
    assert low == {"f": 0.0, "i": 1, "b": False, "c": "a"}
    assert high == {"f": 2.0, "i": 9, "b": True, "c": "c"}
