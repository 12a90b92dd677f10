"""``dgml validate``: the registry's geometry checks, offline, on files or a design folder."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

MODEL_SUFFIXES = {".stl", ".3mf", ".obj", ".ply", ".step", ".stp"}
EXIT_FOR_VERDICT = {"pass": 0, "warn": 0, "fail": 1, "unreadable": 2}
_NUMBER = r"(\d+(?:\.\d+)?)"
_VOLUME_RE = re.compile(rf"^\s*{_NUMBER}\s*[xX]\s*{_NUMBER}\s*[xX]\s*{_NUMBER}\s*$")
_COLOURS = {"pass": "green", "warn": "yellow", "fail": "red", "unreadable": "red"}

out = Console()
err = Console(stderr=True)


class Process(StrEnum):
    fdm = "fdm"
    sla = "sla"
    sls = "sls"
    cnc = "cnc"
    laser = "laser"


def parse_build_volume(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    match = _VOLUME_RE.match(text)
    if not match or not all(float(v) > 0 for v in match.groups()):
        raise typer.BadParameter("give the build volume in mm as XxYxZ, e.g. 250x210x210")
    x, y, z = (float(v) for v in match.groups())
    return x, y, z


def model_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES)
    return [path]


def _show(report) -> None:
    colour = _COLOURS[report.verdict.value]
    out.print(f"[bold]{report.path}[/]  [{colour}]{report.verdict.value}[/]", highlight=False)
    m = report.metrics
    if report.verdict.value != "unreadable":
        size = "x".join(f"{v:.2f}" for v in m.size_mm) + " mm" if m.size_mm else "-"
        volume = f"{m.volume_mm3:,.1f} mm3" if m.volume_mm3 is not None else "-"
        out.print(
            f"  {m.triangles:,} triangles, {m.bodies} {'body' if m.bodies == 1 else 'bodies'}, "
            f"size {size}, volume {volume}, "
            f"watertight {'yes' if m.watertight else 'no'}",
            highlight=False,
        )
    if report.issues:
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        table.add_column("severity")
        table.add_column("code")
        table.add_column("message")
        for issue in report.issues:
            table.add_row(issue.severity.value, issue.code.value, issue.message)
        out.print(table)


def _write_dxf(file: Path, directory: Path, report) -> None:
    from registry.geometry.dxf import dxf_for
    from registry.geometry.readers import read_model

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{file.stem}.dxf"
    target.write_bytes(dxf_for(read_model(file, file.name)))
    err.print(f"cut outline of {file.name} written to {target}", highlight=False)


def validate(
    path: Annotated[Path, typer.Argument(help="A model file (STL, 3MF, OBJ, PLY) or a folder.")],
    build_volume: Annotated[
        str | None, typer.Option("--build-volume", help="Check the part fits XxYxZ mm.")
    ] = None,
    process: Annotated[
        Process | None,
        typer.Option(
            "--process",
            help="Also check what this process needs: walls, overhangs, trapped volumes, "
            "undercuts, internal corners, flatness.",
        ),
    ] = None,
    dxf: Annotated[
        Path | None,
        typer.Option(
            "--dxf",
            help="With --process laser: write each flat part's cut outline to DIR/NAME.dxf.",
            metavar="DIR",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report(s) as JSON.")] = False,
) -> None:
    """Check model files as the registry does. Exit 0 pass or warn, 1 fail, 2 unreadable."""
    from registry.geometry.validate import unreadable_report, validate_model

    volume = parse_build_volume(build_volume)
    if dxf is not None and process is not Process.laser:
        raise typer.BadParameter("--dxf needs --process laser", param_hint="--dxf")
    if not path.exists():
        raise typer.BadParameter(f"no such file or folder: {path}", param_hint="PATH")
    files = model_files(path)
    if not files:
        raise typer.BadParameter(f"no model files in {path}", param_hint="PATH")
    reports = []
    for file in files:
        try:
            report = validate_model(
                file,
                file.name,
                build_volume_mm=volume,
                process=process.value if process else None,
            )
        except OSError as exc:
            report = unreadable_report(file.name, f"cannot read the file: {exc.strerror}")
        report.path = str(file)
        reports.append(report)
        if dxf is not None and report.metrics.model_extra.get("sheet_thickness_mm"):
            _write_dxf(file, dxf, report)
    if as_json:
        dumped = [r.model_dump(mode="json") for r in reports]
        print(json.dumps(dumped[0] if path.is_file() else dumped, indent=2))
    else:
        for report in reports:
            _show(report)
    raise typer.Exit(max(EXIT_FOR_VERDICT[r.verdict.value] for r in reports))
