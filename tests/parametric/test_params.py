"""Parameters read from a script's syntax tree and a manifest, values checked and hashed."""

from __future__ import annotations

import ast

import pytest

from dgml.errors import Invalid
from registry.parametric.params import (
    Parameter,
    ParameterError,
    ScriptError,
    parameter_hash,
    parse_text_values,
    read_parameters,
    resolve,
    substitute,
)

SCRIPT = """\
import cadquery as cq

width = 40.0
teeth = 12
lid = True
style = "round"
offset = -2.5
label: str = "A1"
depth = width * 2
count = 1
count = 2
__version__ = "1"

def inner():
    hidden = 3
    return hidden

if lid:
    nested = 5
result = cq.Workplane().box(width, width, teeth)
"""


def by_name(parameters: list[Parameter]) -> dict[str, Parameter]:
    return {p.name: p for p in parameters}


def test_top_level_literals_are_parameters_in_script_order():
    parameters = read_parameters(SCRIPT, None)
    assert [p.name for p in parameters] == ["width", "teeth", "lid", "style", "offset", "label"]
    found = by_name(parameters)
    assert (found["width"].type, found["width"].default) == ("float", 40.0)
    assert (found["teeth"].type, found["teeth"].default) == ("int", 12)
    assert (found["lid"].type, found["lid"].default) == ("bool", True)
    assert (found["style"].type, found["style"].default) == ("string", "round")
    assert found["offset"].default == -2.5
    assert found["label"].default == "A1"
    assert found["width"].min is None and found["width"].max is None


def test_computed_twice_assigned_nested_and_dunder_names_are_not_parameters():
    names = {p.name for p in read_parameters(SCRIPT, None)}
    assert not names & {"depth", "count", "__version__", "hidden", "nested", "result"}


def test_the_manifest_adds_bounds_units_and_descriptions():
    manifest = {
        "parameters": [
            {"name": "width", "type": "float", "min": 10, "max": 100, "unit": "mm"},
            {"name": "style", "type": "choice", "choices": ["round", "square"]},
            {"name": "teeth", "description": "how many", "default": 16},
        ]
    }
    found = by_name(read_parameters(SCRIPT, manifest))
    assert (found["width"].min, found["width"].max, found["width"].unit) == (10, 100, "mm")
    assert found["style"].type == "choice" and found["style"].default == "round"
    assert found["teeth"].type == "int" and found["teeth"].default == 16
    assert found["teeth"].description == "how many"


def test_a_float_declared_over_an_int_literal_takes_it_as_float():
    found = by_name(
        read_parameters("size = 3\n", {"parameters": [{"name": "size", "type": "float"}]})
    )
    assert found["size"].type == "float" and found["size"].default == 3.0
    assert type(found["size"].default) is float


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "depth", "type": "float"}, "no top-level assignment of a literal"),
        ({"name": "count", "type": "int"}, "assigns one twice"),
        ({"name": "nested"}, "no top-level assignment"),
        ({"name": "width", "type": "angle"}, "type"),
        ({"name": "width", "minimum": 3}, "minimum"),
        ({"name": "width", "min": 50, "max": 10}, "min 50 is above max 10"),
        ({"name": "width", "min": 50}, "default: 40 is below the minimum 50"),
        ({"name": "width", "type": "int"}, "default: must be a whole number"),
        ({"name": "lid", "type": "bool", "min": 0}, "a bool has no min or max"),
        ({"name": "style", "type": "choice"}, "a choice needs a list of choices"),
        ({"name": "style", "type": "choice", "choices": ["a", "b"]}, "must be one of 'a', 'b'"),
        ({"name": "style", "type": "choice", "choices": ["round", "round"]}, "repeat"),
        ({"name": "style", "type": "choice", "choices": ["round", [1]]}, "not a number or text"),
        ({"name": "style", "choices": ["round"]}, "only a choice has choices"),
        ({"name": "style", "type": "string", "default": 3}, "default: must be text"),
    ],
)
def test_a_bad_declaration_names_the_parameter(entry, words):
    with pytest.raises(ParameterError) as caught:
        read_parameters(SCRIPT, {"parameters": [entry]})
    assert caught.value.name == entry["name"]
    assert words in caught.value.detail
    assert caught.value.data["field"] == f"manifest.parameters.{entry['name']}"
    assert caught.value.status_code == 422


def test_a_parameter_declared_twice_is_refused():
    entries = [{"name": "width"}, {"name": "width"}]
    with pytest.raises(ParameterError, match="declared twice"):
        read_parameters(SCRIPT, {"parameters": entries})


def test_parameters_must_be_a_list_of_objects():
    with pytest.raises(ParameterError, match="must be a list"):
        read_parameters(SCRIPT, {"parameters": {"width": 3}})
    with pytest.raises(ParameterError, match="each parameter is an object"):
        read_parameters(SCRIPT, {"parameters": ["width"]})


def test_a_script_that_does_not_parse_is_a_script_error_with_its_line():
    with pytest.raises(ScriptError, match=r"design.py, line 2") as caught:
        read_parameters("width = 3\nif width\n", None)
    assert isinstance(caught.value, Invalid) and caught.value.data["field"] == "source"


def test_a_huge_script_is_refused_before_parsing():
    with pytest.raises(ScriptError, match="larger than"):
        read_parameters("x = 1\n" * 300_000, None)


@pytest.fixture
def declared() -> list[Parameter]:
    manifest = {
        "parameters": [
            {"name": "width", "min": 10, "max": 100},
            {"name": "style", "type": "choice", "choices": ["round", "square"]},
            {"name": "teeth", "min": 6},
        ]
    }
    return read_parameters(SCRIPT, manifest)


def test_resolve_fills_in_defaults_in_script_order(declared):
    resolved = resolve(declared, {"width": 50, "lid": False})
    assert resolved == {
        "width": 50.0,
        "teeth": 12,
        "lid": False,
        "style": "round",
        "offset": -2.5,
        "label": "A1",
    }
    assert type(resolved["width"]) is float


@pytest.mark.parametrize(
    ("values", "name", "words"),
    [
        ({"depth": 3}, "depth", "no such parameter"),
        ({"width": "3"}, "width", "must be a number"),
        ({"width": True}, "width", "must be a number"),
        ({"width": float("nan")}, "width", "finite"),
        ({"width": 5}, "width", "below the minimum 10"),
        ({"width": 500.0}, "width", "above the maximum 100"),
        ({"width": 10**400}, "width", "too large a number"),
        ({"teeth": 2**70}, "teeth", "too large a whole number"),
        ({"teeth": True}, "teeth", "whole number"),
        ({"teeth": 12.0}, "teeth", "whole number"),
        ({"teeth": 3}, "teeth", "below the minimum 6"),
        ({"lid": 1}, "lid", "true or false"),
        ({"lid": "true"}, "lid", "true or false"),
        ({"style": "oval"}, "style", "must be one of 'round', 'square'"),
        ({"label": 7}, "label", "must be text"),
        ({"label": "x" * 1001}, "label", "longer than"),
    ],
)
def test_a_bad_value_names_the_parameter(declared, values, name, words):
    with pytest.raises(ParameterError) as caught:
        resolve(declared, values)
    assert caught.value.name == name
    assert words in caught.value.detail
    assert caught.value.data["field"] == f"params.{name}"


def test_choices_compare_by_type_too():
    parameters = read_parameters(
        "teeth = 12\n", {"parameters": [{"name": "teeth", "type": "choice", "choices": [12, 16]}]}
    )
    assert resolve(parameters, {"teeth": 16}) == {"teeth": 16}
    with pytest.raises(ParameterError, match="must be one of"):
        resolve(parameters, {"teeth": "16"})
    with pytest.raises(ParameterError, match="must be one of"):
        resolve(parameters, {"teeth": True})


def test_the_hash_is_canonical_and_follows_every_value(declared):
    first = parameter_hash(resolve(declared, {}))
    assert first == parameter_hash(resolve(declared, {"width": 40}))  # the default, as an int
    assert first == parameter_hash(dict(reversed(resolve(declared, {}).items())))
    assert first != parameter_hash(resolve(declared, {"width": 41}))
    assert len(first) == 64


def test_text_values_parse_by_declared_type(declared):
    values = parse_text_values(
        declared,
        {"width": "50", "teeth": "8", "lid": "yes", "style": "square", "label": "B 2"},
    )
    assert values == {"width": 50.0, "teeth": 8, "lid": True, "style": "square", "label": "B 2"}
    assert parse_text_values(declared, {"lid": "off"}) == {"lid": False}


@pytest.mark.parametrize(
    ("texts", "name", "words"),
    [
        ({"width": "wide"}, "width", "must be a number"),
        ({"teeth": "8.5"}, "teeth", "whole number"),
        ({"lid": "maybe"}, "lid", "true or false"),
        ({"style": "oval"}, "style", "must be one of round, square"),
        ({"colour": "red"}, "colour", "no such parameter"),
    ],
)
def test_bad_text_values_name_the_parameter(declared, texts, name, words):
    with pytest.raises(ParameterError) as caught:
        parse_text_values(declared, texts)
    assert caught.value.name == name and words in caught.value.detail


def test_substitution_rewrites_the_tree_and_keeps_line_numbers():
    tree = ast.parse(SCRIPT)
    substitute(tree, {"width": 55.0, "offset": 1.5, "label": "Z", "count": 9})
    namespace: dict = {}
    code = compile(tree, "design.py", "exec")
    body = [s for s in tree.body if isinstance(s, ast.Assign | ast.AnnAssign)]
    assert body[0].lineno == 3
    # run only the assignments (the script itself needs CadQuery)
    assignments = ast.Module(body=body[:6], type_ignores=[])
    exec(compile(assignments, "design.py", "exec"), namespace)
    assert namespace["width"] == 55.0 and namespace["offset"] == 1.5
    assert namespace["label"] == "Z" and namespace["teeth"] == 12
    assert code.co_filename == "design.py"


def test_substitution_leaves_assignments_that_are_not_parameters():
    tree = substitute(ast.parse("count = 1\ncount = 2\n"), {"count": 9})
    namespace: dict = {}
    exec(compile(tree, "design.py", "exec"), namespace)
    assert namespace["count"] == 2
