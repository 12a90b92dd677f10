"""``dgml build``: a parametric CadQuery design built offline, in the same sandbox as the hub.

Exit status 0 when every part was written, 1 when the script failed or hit a cap (one line
says which), 2 for bad parameters or bad usage (the line names the parameter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()
err = Console(stderr=True)


def _pairs(params: list[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for item in params:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise typer.BadParameter(f"give NAME=VALUE, not {item!r}", param_hint="--param")
        texts[name.strip()] = value
    return texts


def _range(parameter) -> str:
    if parameter.choices:
        return ", ".join(str(c) for c in parameter.choices)
    if parameter.min is None and parameter.max is None:
        return ""
    low = "" if parameter.min is None else f"{parameter.min:g}"
    high = "" if parameter.max is None else f"{parameter.max:g}"
    return f"{low}..{high}"


def _show_parameters(parameters, as_json: bool) -> None:
    if as_json:
        print(json.dumps([p.model_dump(exclude_none=True) for p in parameters], indent=2))
        return
    if not parameters:
        out.print("This design has no parameters.")
        return
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for column in ("name", "type", "default", "range", "unit", "description"):
        table.add_column(column)
    for p in parameters:
        table.add_row(
            p.name, p.type, json.dumps(p.default), _range(p), p.unit or "", p.description or ""
        )
    out.print(table)


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:,} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _show_result(result, output: Path) -> None:
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for column in ("part", "file", "size"):
        table.add_column(column)
    for part in result.parts:
        for index, file in enumerate(part.files):
            table.add_row(part.name if index == 0 else "", file.path, _size(file.size))
    out.print(table)
    out.print(
        f"{len(result.parts)} part{'s' if len(result.parts) != 1 else ''} written to {output} "
        f"in {result.seconds:.1f} s (parameters {result.parameter_hash[:12]})",
        highlight=False,
    )


def build(
    path: Annotated[Path, typer.Argument(help="A CadQuery script, or a design folder.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A parameter value, NAME=VALUE (repeatable)."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the parts' files.")
    ] = Path("build"),
    list_params: Annotated[
        bool, typer.Option("--list-params", help="Print the design's parameters and stop.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Wall-clock cap in seconds.")
    ] = 120.0,
    memory: Annotated[int, typer.Option("--memory", min=256, help="Memory cap in MiB.")] = 2048,
    show_log: Annotated[bool, typer.Option("--log", help="Print what the script printed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build a parametric design in the sandbox and write STL, STEP (and DXF for laser parts).

    Exit 0 built, 1 the script failed or hit a cap, 2 bad parameters or usage.
    """
    from registry.parametric.build import build_design, load_folder
    from registry.parametric.params import ScriptError, parse_text_values, read_parameters
    from registry.parametric.sandbox import Limits

    if not path.exists():
        raise typer.BadParameter(f"no such file or folder: {path}", param_hint="PATH")
    texts = _pairs(param or [])
    script, manifest = load_folder(path)
    if list_params:
        _show_parameters(read_parameters(script, manifest), as_json)
        return
    try:
        values = parse_text_values(read_parameters(script, manifest), texts)
    except ScriptError:
        values = {}  # a script that does not parse fails its build, with the line at fault
    limits = Limits(seconds=timeout, memory_bytes=memory * 1024**2)
    name = path.name if path.is_file() else None
    result = build_design(script, manifest, values, output, limits, script_name=name)
    if as_json:
        print(result.model_dump_json(indent=2))
    if show_log and result.log:
        err.print(result.log, end="", markup=False, highlight=False)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    if not result.ok:
        err.print(f"[red]error:[/] {escape(result.error or '')}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if not as_json:
        _show_result(result, output)
