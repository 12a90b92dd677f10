"""A CadQuery script's parameters: found in its syntax tree, described by its manifest.

Decisions:

- A parameter is a top-level assignment of one name to a literal: an int, a float, a bool or a
  str, a number may carry a sign (``width = 40.0``, ``offset = -2``, ``label: str = "A"``).
  This is the CQGI convention, and it is read with ``ast`` only: nothing of the script runs.
  A name given a literal more than once at the top level is ambiguous (which one would a value
  replace?) and is not a parameter; a later computed reassignment (``width = width + 2``) is
  the author's business. Names starting with ``__`` are not parameters.
- The manifest's ``parameters`` list adds metadata. Its entries must name a parameter of the
  script (otherwise the manifest and the script disagree: an error naming the parameter), and
  unknown keys are refused, so that a typo such as ``minimum`` is not silently ignored.
- Types: ``float`` (an int value is accepted and stored as a float, so 40 and 40.0 hash the
  same), ``int`` (a bool is not an int), ``bool``, ``string`` and ``choice`` (one of
  ``choices``). Strings are capped at ``MAX_STRING`` characters.
- ``resolve`` checks values and fills in defaults; ``parameter_hash`` is the sha256 of the
  sorted, compact JSON of that complete set, the key a build is cached under.
- Values reach the script by replacing the literal of each parameter's assignment in the tree
  (``substitute``), which keeps line numbers, so errors point at the author's own lines.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from dgml.errors import Invalid

ParameterType = Literal["float", "int", "bool", "choice", "string"]
MAX_SOURCE_BYTES = 1024 * 1024
MAX_STRING = 1000
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ParameterError(Invalid):
    """A parameter value or declaration that breaks a rule; ``name`` is the parameter.

    An ``Invalid`` (HTTP 422, exit status 2 on the command line) whose ``field`` is
    ``params.<name>`` for values and ``manifest.parameters.<name>`` for declarations.
    """

    def __init__(self, name: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"parameter {name!r}: {message}", field=field or f"params.{name}")
        self.name = name
        self.message = message


class ScriptError(Invalid):
    """A script that cannot be read as Python (or is too large); ``field`` is ``source``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="source")


class Parameter(BaseModel):
    """One parameter of a design: its type, default and limits."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: ParameterType
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    unit: str | None = None
    description: str | None = None


def _literal(node: ast.expr) -> tuple[bool, Any]:
    """(True, value) when ``node`` is a literal a parameter may hold."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool, str):
        return True, node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        value = node.operand.value
        return True, -value if isinstance(node.op, ast.USub) else value
    return False, None


def _assigned(statement: ast.stmt) -> tuple[str, ast.expr] | None:
    """The name and value of a one-name top-level assignment."""
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
    ):
        return statement.targets[0].id, statement.value
    if (
        isinstance(statement, ast.AnnAssign)
        and isinstance(statement.target, ast.Name)
        and statement.value is not None
    ):
        return statement.target.id, statement.value
    return None


def parse_script(script_source: str, filename: str = "design.py") -> ast.Module:
    """The script's syntax tree; ``ScriptError`` when it is too large or not Python."""
    if len(script_source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise ScriptError(f"{filename} is larger than {MAX_SOURCE_BYTES // 1024} KiB")
    try:
        return ast.parse(script_source, filename=filename)
    except SyntaxError as exc:
        raise ScriptError(f"{filename}, line {exc.lineno}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ScriptError(f"{filename} cannot be parsed: {exc}") from None


def script_literals(tree: ast.Module) -> dict[str, Any]:
    """Top-level names given a literal exactly once, with that literal, in script order."""
    found: dict[str, Any] = {}
    twice: set[str] = set()
    for statement in tree.body:
        assigned = _assigned(statement)
        if assigned is None or assigned[0].startswith("__"):
            continue
        is_literal, value = _literal(assigned[1])
        if is_literal:
            if assigned[0] in found:
                twice.add(assigned[0])
            found[assigned[0]] = value
    return {name: value for name, value in found.items() if name not in twice}


def _type_of(value: Any) -> ParameterType:
    return {bool: "bool", int: "int", float: "float", str: "string"}[type(value)]


def _declared(entry: Any, index: int) -> Parameter:
    if not isinstance(entry, dict):
        raise ParameterError(
            f"#{index + 1}", "each parameter is an object", field="manifest.parameters"
        )
    name = entry.get("name")
    label = name if isinstance(name, str) else f"#{index + 1}"
    field = f"manifest.parameters.{label}"
    missing_type = "type" not in entry
    try:
        return Parameter.model_validate({"type": "string", **entry} if missing_type else entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ParameterError(label, f"{where}: {first['msg']}", field=field) from None


def _merge(script_value: Any, entry: Parameter | None, name: str, typed: bool) -> Parameter:
    """One parameter from its script literal and its manifest entry (if any)."""
    field = f"manifest.parameters.{name}"
    if entry is None:
        return Parameter(name=name, type=_type_of(script_value), default=script_value)
    declared = entry.model_copy()
    if not typed:
        declared.type = _type_of(script_value)
    if declared.default is None:
        declared.default = script_value
    if declared.type == "choice":
        if not declared.choices:
            raise ParameterError(name, "a choice needs a list of choices", field=field)
        for choice in declared.choices:
            if type(choice) not in (int, float, str):
                raise ParameterError(
                    name, f"choice {choice!r} is not a number or text", field=field
                )
        if len({json.dumps(c) for c in declared.choices}) != len(declared.choices):
            raise ParameterError(name, "the choices repeat themselves", field=field)
    elif declared.choices is not None:
        raise ParameterError(name, "only a choice has choices", field=field)
    if declared.type not in ("float", "int") and (declared.min, declared.max) != (None, None):
        raise ParameterError(name, f"a {declared.type} has no min or max", field=field)
    if declared.min is not None and declared.max is not None and declared.min > declared.max:
        raise ParameterError(
            name, f"min {declared.min:g} is above max {declared.max:g}", field=field
        )
    try:
        declared.default = check_value(declared, declared.default)
    except ParameterError as exc:
        raise ParameterError(name, f"default: {exc.message}", field=field) from None
    return declared


def read_parameters(
    script_source: str, manifest: dict | None, filename: str = "design.py"
) -> list[Parameter]:
    """The script's parameters in script order, with the manifest's metadata merged in.

    Raises ``ScriptError`` for a script that does not parse (``filename`` is what its message
    calls the script) and ``ParameterError`` for a manifest entry that is malformed or names
    no top-level literal of the script.
    """
    literals = script_literals(parse_script(script_source, filename))
    entries = (manifest or {}).get("parameters") or []
    if not isinstance(entries, list):
        raise ParameterError("parameters", "must be a list", field="manifest.parameters")
    declared: dict[str, tuple[Parameter, bool]] = {}
    for index, raw in enumerate(entries):
        entry = _declared(raw, index)
        field = f"manifest.parameters.{entry.name}"
        if entry.name in declared:
            raise ParameterError(entry.name, "is declared twice", field=field)
        if entry.name not in literals:
            raise ParameterError(
                entry.name,
                "the script has no top-level assignment of a literal to this name "
                "(such as `name = 40.0`), or assigns one twice",
                field=field,
            )
        declared[entry.name] = (entry, "type" in raw)
    parameters = []
    for name, value in literals.items():
        entry, typed = declared.get(name, (None, False))
        parameters.append(_merge(value, entry, name, typed))
    return parameters


def check_value(parameter: Parameter, value: Any) -> Any:
    """``value`` checked against ``parameter``, in its canonical form (floats as float)."""
    name, kind = parameter.name, parameter.type
    if kind == "bool":
        if type(value) is not bool:
            raise ParameterError(name, f"must be true or false, not {value!r}")
        return value
    if kind == "string":
        if type(value) is not str:
            raise ParameterError(name, f"must be text, not {value!r}")
        if len(value) > MAX_STRING:
            raise ParameterError(name, f"is longer than {MAX_STRING} characters")
        return value
    if kind == "choice":
        for choice in parameter.choices or []:
            if type(choice) is type(value) and choice == value:
                return value
        listed = ", ".join(repr(c) for c in parameter.choices or [])
        raise ParameterError(name, f"must be one of {listed}, not {value!r}")
    if kind == "int":
        if type(value) is not int:
            raise ParameterError(name, f"must be a whole number, not {value!r}")
        if not -(2**63) <= value < 2**63:
            raise ParameterError(name, "is too large a whole number")
    elif type(value) not in (int, float):
        raise ParameterError(name, f"must be a number, not {value!r}")
    else:
        try:
            value = float(value)
        except OverflowError:
            raise ParameterError(name, "is too large a number") from None
        if not math.isfinite(value):
            raise ParameterError(name, f"must be a finite number, not {value!r}")
    if parameter.min is not None and value < parameter.min:
        raise ParameterError(name, f"{value:g} is below the minimum {parameter.min:g}")
    if parameter.max is not None and value > parameter.max:
        raise ParameterError(name, f"{value:g} is above the maximum {parameter.max:g}")
    return value


def resolve(parameters: list[Parameter], values: dict) -> dict:
    """The complete parameter set: ``values`` checked, defaults for the rest, script order."""
    known = {p.name: p for p in parameters}
    for name in values:
        if name not in known:
            names = ", ".join(known) or "none"
            raise ParameterError(str(name), f"the design has no such parameter (it has: {names})")
    return {
        p.name: check_value(p, values[p.name]) if p.name in values else p.default
        for p in parameters
    }


def parameter_hash(resolved: dict) -> str:
    """sha256 of the sorted, compact JSON of a complete, resolved parameter set."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_text_value(parameter: Parameter, text: str) -> Any:
    """A value typed on a command line or in a query string, read by the parameter's type."""
    name, kind = parameter.name, parameter.type
    if kind == "bool":
        if text.strip().lower() in _TRUE | _FALSE:
            return text.strip().lower() in _TRUE
        raise ParameterError(name, f"must be true or false, not {text!r}")
    if kind == "string":
        return text
    if kind == "choice":
        for choice in parameter.choices or []:
            if str(choice) == text.strip():
                return choice
        listed = ", ".join(str(c) for c in parameter.choices or [])
        raise ParameterError(name, f"must be one of {listed}, not {text!r}")
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        what = "a whole number" if kind == "int" else "a number"
        raise ParameterError(name, f"must be {what}, not {text!r}") from None


def parse_text_values(parameters: list[Parameter], texts: dict[str, str]) -> dict:
    """``{name: text}`` read into typed values; unknown names are refused by name."""
    known = {p.name: p for p in parameters}
    values = {}
    for name, text in texts.items():
        if name not in known:
            names = ", ".join(known) or "none"
            raise ParameterError(name, f"the design has no such parameter (it has: {names})")
        values[name] = parse_text_value(known[name], text)
    return values


def substitute(tree: ast.Module, resolved: dict) -> ast.Module:
    """``tree`` with each parameter's literal replaced by its value (in place, lines kept)."""
    literals = script_literals(tree)
    for statement in tree.body:
        assigned = _assigned(statement)
        if assigned is None or assigned[0] not in resolved or assigned[0] not in literals:
            continue
        # Assign and AnnAssign both keep the assigned expression in ``value``
        statement.value = ast.copy_location(ast.Constant(resolved[assigned[0]]), assigned[1])
    return ast.fix_missing_locations(tree)
