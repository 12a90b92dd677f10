"""``dgml search``, ``dgml fetch``, ``dgml fork`` and ``dgml log``: finding designs and getting
a working copy of one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dgml.client import Hub
from dgml.commands.common import (
    JsonOpt,
    ServerOpt,
    connect,
    err,
    out,
    parse_design,
    print_json,
    size_text,
    table_console,
    transfer,
    verdict_text,
)
from dgml.errors import DgmlError
from dgml.workcopy import META, Origin, find, safe_path, write_meta

OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="The folder to fetch into (default: ./NAME).", metavar="DIR"
    ),
]


# --- search -----------------------------------------------------------------------------------


def _row(design: dict[str, Any]) -> dict[str, Any]:
    """A design of the hub's listing, which carries its latest version's verdict and the
    processes that make it (docs/registry.md, "What a design is made by")."""
    return {
        "design": design["full_name"],
        "title": design["title"],
        "latest_version": design["latest_version"],
        "license": design["license"],
        "verdict": design.get("verdict"),
        "fork_count": design["fork_count"],
        "processes": design.get("processes") or [],
        "tags": design["tags"],
        "forked_from": design["forked_from"],
    }


def _show_rows(rows: list[dict[str, Any]], more: bool) -> None:
    if not rows:
        out.print("No designs found.")
        return
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for column in ("design", "latest", "licence", "verdict", "forks", "made by", "title"):
        table.add_column(column)
    for row in rows:
        latest = f"v{row['latest_version']}" if row["latest_version"] else "-"
        table.add_row(
            escape(row["design"]),
            latest,
            escape(row["license"]),
            verdict_text(row["verdict"]),
            str(row["fork_count"]),
            escape(", ".join(row["processes"]) or "-"),
            escape(row["title"]),
        )
    table_console().print(table)
    if more:
        err.print("More designs match: narrow the search or raise --limit.", highlight=False)


def search(
    text: Annotated[str | None, typer.Argument(help="Words to look for.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only designs with this tag.")] = None,
    license: Annotated[
        str | None, typer.Option("--license", help="Only designs under this licence (SPDX id).")
    ] = None,
    process: Annotated[
        str | None,
        typer.Option("--process", help="Only designs made by this process (fdm, sla, cnc...)."),
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this account's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="At most this many.")] = 20,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find designs: their latest version, licence, geometry verdict, fork count and the
    processes that make them (one request to the hub)."""
    with connect(server) as hub:
        page = hub.search(
            q=text, tag=tag, license=license, owner=owner, process=process, limit=limit
        )
    rows = [_row(d) for d in page["items"]]
    if as_json:
        print_json(rows)
    else:
        _show_rows(rows, page["next_cursor"] is not None)


# --- fetch and fork ---------------------------------------------------------------------------


def check_target(target: Path) -> None:
    """A working copy goes into a new folder or an empty one, never over other files."""
    if target.exists() and not target.is_dir():
        raise DgmlError(f"{target} is a file: fetch into a new or empty folder (-o DIR)")
    if target.is_dir() and any(target.iterdir()):
        raise DgmlError(f"{target} is not empty: fetch into a new or empty folder (-o DIR)")


def materialise(hub: Hub, doc: dict[str, Any], target: Path, *, quiet: bool) -> Origin:
    """Download every file of the version ``doc`` into ``target`` and write ``dgml.toml``; on
    any failure nothing is left behind."""
    owner, name = doc["design"].split("/", 1)
    entries = doc["files"]
    for entry in entries:
        safe_path(entry["path"])
        if entry["path"] == META:
            raise DgmlError(f"this version has a file named {META}, which a working copy keeps")
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        total = sum(e["size"] for e in entries)
        with transfer(total, f"{owner}/{name}@{doc['number']}", enabled=not quiet) as advance:
            for entry in entries:
                hub.download(owner, name, doc["number"], entry, target / entry["path"], advance)
        origin = Origin(hub.server, owner, name, doc["number"])
        write_meta(target, origin, {e["path"]: e["sha256"] for e in entries})
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink(missing_ok=True)
        raise
    return origin


def _fetched(doc: dict[str, Any], target: Path, as_json: bool, **extra: Any) -> None:
    if as_json:
        files = [{k: f[k] for k in ("path", "sha256", "size")} for f in doc["files"]]
        print_json(
            {"design": doc["design"], "version": doc["number"], "path": str(target)}
            | extra
            | {"files": files}
        )
        return
    size = size_text(sum(f["size"] for f in doc["files"]))
    count = len(doc["files"])
    out.print(
        f"Fetched {escape(doc['design'])} version {doc['number']} ({count} "
        f"file{'s' if count != 1 else ''}, {size}) into {escape(str(target))}",
        highlight=False,
    )


def fetch(
    design: Annotated[str, typer.Argument(help="OWNER/NAME, OWNER/NAME@N or OWNER/NAME@TAG.")],
    output: OutputOpt = None,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Get a working copy of a design version: its files and a dgml.toml, hashes verified."""
    owner, name, ref = parse_design(design)
    target = output or Path(name)
    check_target(target)
    with connect(server) as hub:
        doc = hub.version(owner, name, ref or "latest")
        materialise(hub, doc, target, quiet=as_json)
    _fetched(doc, target, as_json)


def fork(
    design: Annotated[str, typer.Argument(help="OWNER/NAME or OWNER/NAME@N to fork.")],
    as_name: Annotated[
        str | None, typer.Option("--as", help="Name of the fork (default: the same name).")
    ] = None,
    license: Annotated[
        str | None,
        typer.Option("--license", help="Licence of the fork, where the origin's terms allow."),
    ] = None,
    output: OutputOpt = None,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fork a design into your account on the hub, then fetch the fork."""
    owner, name, ref = parse_design(design)
    target = output or Path(as_name or name)
    check_target(target)
    with connect(server, login=True) as hub:
        created = hub.fork(owner, name, ref or "latest", as_name=as_name, license=license)
        try:
            doc = hub.version(created["owner"], created["name"], 1)
            materialise(hub, doc, target, quiet=as_json)
        except DgmlError as exc:
            exc.detail = (
                f"forked as {created['full_name']}, but fetching it failed: {exc.detail} "
                f"(run dgml fetch {created['full_name']})"
            )
            raise
    origin = created["forked_from"]
    _fetched(doc, target, as_json, forked_from=origin)
    if not as_json and origin:
        err.print(
            f"Forked from {origin['owner']}/{origin['name']}@{origin['version']}: push to your "
            "fork, then dgml propose -m MSG to offer the change back.",
            highlight=False,
        )


# --- log --------------------------------------------------------------------------------------


def log(
    design: Annotated[
        str | None, typer.Argument(help="OWNER/NAME (default: the working copy's design).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="At most this many.")] = 20,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a design's versions, newest first, with author, message and geometry verdict."""
    base, fallback = None, None
    if design:
        owner, name, _ = parse_design(design)
    else:
        copy = find()
        owner, name, base = copy.origin.owner, copy.origin.name, copy.origin.version
        fallback = copy.origin.server
    with connect(server, fallback) as hub:
        page = hub.versions(owner, name, limit=limit)
    if as_json:
        print_json(page["items"])
        return
    if not page["items"]:
        out.print(f"{escape(owner)}/{escape(name)} has no versions yet.", highlight=False)
        return
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for column in ("version", "date", "author", "verdict", "message"):
        table.add_column(column)
    for item in page["items"]:
        number = f"{item['number']}" + (f" ({item['tag']})" if item["tag"] else "")
        if item["number"] == base:
            number = f"[bold]{number} *[/]"
        message = (item["message"] or "").strip().splitlines()
        table.add_row(
            number,
            str(item["created_at"])[:16].replace("T", " "),
            escape(item["author"]),
            verdict_text(item["verdict"]),
            escape(message[0] if message else ""),
        )
    out.print(table)
    if base is not None:
        err.print(f"* your working copy is based on version {base}", highlight=False)
