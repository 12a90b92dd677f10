"""``dgml diff``: what changed between two versions, or between a version and the working copy,
file by file and, for model files, in geometry (volume, area, size, how far the surface moved).

Two versions are compared by the hub, which keeps the result. A version and the working copy
are compared here: the old model file is downloaded (hash checked) and both are compared in a
child process with caps on time and memory, as the hub does it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.markup import escape

from dgml.client import Hub
from dgml.commands.common import (
    JsonOpt,
    ServerOpt,
    connect,
    geometry_text,
    out,
    parse_design,
    print_json,
)
from dgml.commands.validate import MODEL_SUFFIXES
from dgml.workcopy import WorkingCopy, compare, find, sha256_file

WORKING_COPY = "working copy"


def _local_geometry(
    hub: Hub, copy: WorkingCopy, number: int, entry: dict[str, Any], current: Path
) -> dict[str, Any]:
    from registry.geometry.runner import Limits, run_diff

    suffix = PurePosixPath(entry["path"]).suffix.lower()
    origin = copy.origin
    with tempfile.TemporaryDirectory(prefix="dgml-diff-") as tmp:
        old = Path(tmp) / f"old{suffix}"
        hub.download(origin.owner, origin.name, number, entry, old)
        limits = Limits(seconds=300.0, memory_bytes=4 * 1024**3)
        return run_diff(old, f"old{suffix}", current, f"new{suffix}", limits)


def _is_model(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in MODEL_SUFFIXES


def local_diff(hub: Hub, copy: WorkingCopy, ref: str | None, geometry: bool) -> dict[str, Any]:
    """Version ``ref`` (default: the base) against the files on disk."""
    origin = copy.origin
    on_disk = copy.scan()
    current = {path: sha256_file(file) for path, file in on_disk.items()}
    doc: dict[str, Any] | None = None
    if ref is None or ref == str(origin.version):
        number, before = origin.version, copy.files
    else:
        doc = hub.version(origin.owner, origin.name, ref)
        number, before = doc["number"], {f["path"]: f["sha256"] for f in doc["files"]}
    changes = compare(before, current)
    changed = []
    for path in changes.changed:
        item: dict[str, Any] = {
            "path": path,
            "old_sha256": before[path],
            "new_sha256": current[path],
        }
        if geometry and _is_model(path):
            doc = doc or hub.version(origin.owner, origin.name, number)
            entry = next(f for f in doc["files"] if f["path"] == path)
            item["geometry"] = _local_geometry(hub, copy, number, entry, on_disk[path])
        changed.append(item)
    return {
        "design": origin.full_name,
        "old": number,
        "new": WORKING_COPY,
        "added": changes.added,
        "removed": changes.removed,
        "changed": changed,
        "unchanged": sorted(p for p in before.keys() & current.keys() if before[p] == current[p]),
    }


def _show(result: dict[str, Any]) -> None:
    new = result["new"]
    label = new if new == WORKING_COPY else f"version {new}"
    out.print(f"{escape(result['design'])}: version {result['old']} -> {label}", highlight=False)
    if not (result["changed"] or result["added"] or result["removed"]):
        out.print("No differences.")
        return
    for item in result["changed"]:
        line = f"  [yellow]{'modified:':<10}[/] {escape(item['path'])}"
        if item.get("geometry"):
            line += f"  {escape(geometry_text(item['geometry']))}"
        out.print(line, highlight=False)
    for path in result["added"]:
        out.print(f"  [green]{'added:':<10}[/] {escape(path)}", highlight=False)
    for path in result["removed"]:
        out.print(f"  [red]{'deleted:':<10}[/] {escape(path)}", highlight=False)


def diff(
    a: Annotated[
        str | None, typer.Argument(help="Old version (default: the working copy's base).")
    ] = None,
    b: Annotated[
        str | None, typer.Argument(help="New version (default: the working copy's files).")
    ] = None,
    design: Annotated[
        str | None,
        typer.Option("--design", help="OWNER/NAME, to compare two versions outside a copy."),
    ] = None,
    geometry: Annotated[
        bool, typer.Option("--geometry/--no-geometry", help="Compare model files' geometry.")
    ] = True,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what changed, files and geometry: from version A to B, or to the working copy.

    With no versions: the working copy's base to its files; with A: version A to the files;
    with A and B: version A to version B, compared by the hub."""
    if b is not None:
        if design:
            owner, name, _ = parse_design(design, "--design")
            fallback = None
        else:
            copy = find()
            owner, name, fallback = copy.origin.owner, copy.origin.name, copy.origin.server
        with connect(server, fallback) as hub:
            result = hub.diff(owner, name, a, b)
        if not geometry:
            for item in result["changed"]:
                item.pop("geometry", None)
    else:
        if design:
            raise typer.BadParameter(
                "outside a working copy, give two versions: dgml diff A B --design OWNER/NAME",
                param_hint="--design",
            )
        copy = find()
        with connect(server, copy.origin.server) as hub:
            result = local_diff(hub, copy, a, geometry)
    if as_json:
        print_json(result)
    else:
        _show(result)
