"""Build a design's CadQuery script in this process and export its parts.

A design is ``designs/<name>/design.py``: its parameters are the top-level assignments of
literals before any other statement (CQGI style), and it calls ``show_object(shape, name=...)``
once per part. ``build`` runs it with chosen parameter values and returns the parts; a sandboxed
builder is meant to take this module's place.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cadquery as cq

# Deflection (mm) and angle (rad) of the exported triangles: fine enough that a fillet turns by
# a few degrees per facet, coarse enough that the checks stay fast.
STL_TOLERANCE = 0.1
STL_ANGULAR_TOLERANCE = 0.1


@dataclass
class Part:
    name: str
    shape: cq.Shape


def is_literal(value: ast.expr) -> bool:
    """A number, a string or a boolean written out: what CQGI takes for a parameter."""
    return isinstance(value, ast.Constant) and isinstance(value.value, bool | int | float | str)


def parameter_nodes(tree: ast.Module) -> dict[str, ast.Assign]:
    """The leading top-level ``name = literal`` statements (after the docstring and imports)."""
    found: dict[str, ast.Assign] = {}
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and is_literal(node.value)
        ):
            found[node.targets[0].id] = node
            continue
        break
    return found


def parameters(script: Path) -> dict[str, Any]:
    """The script's parameters and their default values."""
    nodes = parameter_nodes(ast.parse(script.read_text()))
    return {name: node.value.value for name, node in nodes.items()}


def _solid(shape: Any) -> cq.Shape:
    if isinstance(shape, cq.Workplane):
        values = [v for v in shape.vals() if isinstance(v, cq.Shape)]
        if len(values) != 1:
            raise ValueError(f"a part must be one shape, got {len(values)}")
        return values[0]
    if isinstance(shape, cq.Shape):
        return shape
    raise TypeError(f"show_object got {type(shape).__name__}, not a CadQuery shape")


def build(script: Path, values: dict[str, Any] | None = None) -> list[Part]:
    """Run ``script`` with ``values`` in place of its parameters' defaults; its parts in order."""
    tree = ast.parse(script.read_text())
    nodes = parameter_nodes(tree)
    for name, value in (values or {}).items():
        if name not in nodes:
            raise KeyError(f"{script}: no parameter {name!r}")
        nodes[name].value = ast.copy_location(ast.Constant(value), nodes[name].value)
    parts: list[Part] = []

    def show_object(shape: Any, name: str | None = None, options: Any = None) -> None:
        parts.append(Part(name or f"part{len(parts) + 1}", _solid(shape)))

    namespace = {"__name__": "__cqgi__", "__file__": str(script), "show_object": show_object}
    exec(compile(ast.fix_missing_locations(tree), str(script), "exec"), namespace)
    return parts


def export_stl(part: Part, directory: Path) -> Path:
    """Write ``part`` as binary STL in ``directory``; the file's path."""
    path = directory / f"{part.name}.stl"
    cq.exporters.export(
        part.shape, str(path), tolerance=STL_TOLERANCE, angularTolerance=STL_ANGULAR_TOLERANCE
    )
    return path
