"""The verbs that work in a working copy: ``status``, ``push``, ``pull``, ``propose``, ``diff``.

``push`` refuses when the hub has moved past the version the copy is based on, as git refuses a
push that is not a fast-forward: a new version always contains the whole design, so pushing
from a stale base would silently undo the versions in between.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

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
    transfer,
    verdict_text,
)
from dgml.errors import Conflict, DgmlError, Forbidden
from dgml.workcopy import (
    Origin,
    Status,
    WorkingCopy,
    compare,
    find,
    safe_path,
    sha256_file,
    walk_up_empty,
)

MessageOpt = Annotated[str, typer.Option("--message", "-m", help="What this change is.")]
POLL_SECONDS = 1.0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _status_json(copy: WorkingCopy, status: Status) -> dict[str, Any]:
    return {
        "design": copy.origin.full_name,
        "server": copy.origin.server,
        "base": copy.origin.version,
        "root": str(copy.root),
        "clean": status.clean,
        "changed": status.changed,
        "added": status.added,
        "removed": status.removed,
    }


def _show_changes(status: Status) -> None:
    for label, paths, colour in (
        ("modified", status.changed, "yellow"),
        ("added", status.added, "green"),
        ("deleted", status.removed, "red"),
    ):
        for path in paths:
            out.print(f"  [{colour}]{label + ':':<10}[/] {escape(path)}", highlight=False)


def status(as_json: JsonOpt = False) -> None:
    """Show the files changed, added and deleted since the version this copy is based on."""
    copy = find()
    changes = copy.status()
    if as_json:
        print_json(_status_json(copy, changes))
        return
    out.print(
        f"{escape(copy.origin.full_name)} at version {copy.origin.version} "
        f"({escape(copy.origin.server)})",
        highlight=False,
    )
    if changes.clean:
        out.print(f"Nothing changed since version {copy.origin.version}.")
    else:
        _show_changes(changes)


# --- push -------------------------------------------------------------------------------------


def _stale(latest: int | None, base: int) -> DgmlError:
    return DgmlError(
        f"the server is at version {latest}, your copy is based on {base}: run dgml pull (or "
        "fetch into a new folder) and apply your changes again"
    )


def _wait_for_verdict(hub: Hub, origin: Origin, verdict: str, seconds: float) -> str:
    """Ask again until the geometry verdict is in or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    spinner = err.status("waiting for the geometry check...") if err.is_terminal else None
    try:
        if spinner:
            spinner.start()
        while verdict == "pending" and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_SECONDS, left))
            verdict = hub.version(origin.owner, origin.name, origin.version)["verdict"]
    except KeyboardInterrupt:
        pass
    finally:
        if spinner:
            spinner.stop()
    return verdict


def _carried_manifest(hub: Hub, origin: Origin) -> str | None:
    """The base version's manifest, for a copy without a ``manifest.json``: a version holds
    the whole design, its description included. The fields the hub fills in itself (licence,
    licensor, and a version number it made up) are left for it to fill again."""
    manifest = hub.version(origin.owner, origin.name, origin.version)["manifest"]
    kept = {k: v for k, v in manifest.items() if k not in ("license", "licensor")}
    if kept.get("version") == str(origin.version):
        del kept["version"]
    return json.dumps(kept) if kept else None


def _push_fields(
    hub: Hub, origin: Origin, message: str, tag: str | None, files: dict[str, Path]
) -> dict[str, str]:
    fields = {"message": message}
    if tag:
        fields["tag"] = tag
    file = files.get("manifest.json")
    # The hub keeps the manifest with the version; it checks it and names a bad field.
    manifest = (
        _carried_manifest(hub, origin)
        if file is None
        else file.read_bytes().decode("utf-8", errors="replace")
    )
    if manifest:
        fields["manifest"] = manifest
    return fields


def push(
    message: MessageOpt,
    tag: Annotated[str | None, typer.Option("--tag", help="Name the new version.")] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="Seconds to wait for the geometry verdict (0: don't)."),
    ] = 60.0,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push the working copy as a new version of its design (refused if the hub moved on)."""
    copy = find()
    files = copy.scan()
    current = {path: sha256_file(file) for path, file in files.items()}
    changes = compare(copy.files, current)
    base = copy.origin.version
    if changes.clean:
        raise DgmlError(f"nothing to push: the files are as in version {base}")
    owner, name = copy.origin.owner, copy.origin.name
    with connect(server, copy.origin.server, login=True) as hub:
        latest = hub.design(owner, name)["latest_version"]
        if latest != base:
            raise _stale(latest, base)
        ordered = sorted(files.items())
        total = sum(path.stat().st_size for _, path in ordered)
        fields = _push_fields(hub, copy.origin, message, tag, files)
        # The hub checks the base again under the design's lock: a push landing in between
        # is refused there too.
        fields["base"] = str(base)
        try:
            with transfer(total, f"{owner}/{name}", enabled=not as_json) as advance:
                version = hub.push(owner, name, ordered, fields, advance)
        except Conflict as exc:
            if "latest_version" in exc.data:
                raise _stale(exc.data["latest_version"], base) from None
            raise
        except Forbidden as exc:
            exc.detail += (
                f" (fork it with dgml fork {owner}/{name}@{base} into a new folder, push there, "
                "then dgml propose)"
            )
            raise
        pushed = {f["path"]: f["sha256"] for f in version["files"]}
        copy.origin = Origin(copy.origin.server, owner, name, version["number"])
        copy.files = pushed
        copy.save()
        verdict = version["verdict"]
        if wait > 0:
            verdict = _wait_for_verdict(hub, copy.origin, verdict, wait)
    parents = [p["version"] for p in version["parents"] if (p["owner"], p["name"]) == (owner, name)]
    _report_push(version, verdict, base, parents, pushed != current, as_json)


def _report_push(
    version: dict[str, Any],
    verdict: str,
    base: int,
    parents: list[int],
    moved: bool,
    as_json: bool,
) -> None:
    if as_json:
        print_json(
            {
                "design": version["design"],
                "version": version["number"],
                "base": base,
                "verdict": verdict,
                "files": version["files"],
            }
        )
    else:
        size = size_text(sum(f["size"] for f in version["files"]))
        out.print(
            f"Pushed {escape(version['design'])} version {version['number']} "
            f"({_plural(len(version['files']), 'file')}, {size}).",
            highlight=False,
        )
        note = " (no model files to check)" if verdict == "none" else ""
        out.print(f"Geometry: {verdict_text(verdict)}{note}", highlight=False)
        if verdict == "pending":
            err.print("The check goes on at the hub: see dgml log.", highlight=False)
    if parents and parents[0] != base:
        err.print(
            f"[yellow]note:[/] version {parents[0]} was pushed just before yours, which now "
            f"follows it: compare them with dgml diff {parents[0]} {version['number']}",
            highlight=False,
        )
    if moved:
        err.print(
            "[yellow]note:[/] some files changed while they were being pushed: dgml status "
            "shows them",
            highlight=False,
        )


# --- pull -------------------------------------------------------------------------------------


def _apply(hub: Hub, copy: WorkingCopy, doc: dict[str, Any], quiet: bool) -> None:
    """Bring the unchanged copy to version ``doc``: new files go to a staging folder first and
    are moved into place once all of them have arrived intact."""
    new = {safe_path(f["path"]): f["sha256"] for f in doc["files"]}
    wanted = [f for f in doc["files"] if copy.files.get(f["path"]) != f["sha256"]]
    gone = sorted(p for p in copy.files if p not in new)
    staging = Path(tempfile.mkdtemp(prefix=".dgml-pull-", dir=copy.root))
    try:
        owner, name = copy.origin.owner, copy.origin.name
        total = sum(f["size"] for f in wanted)
        with transfer(total, f"{owner}/{name}@{doc['number']}", enabled=not quiet) as advance:
            for entry in wanted:
                hub.download(owner, name, doc["number"], entry, staging / entry["path"], advance)
        for entry in wanted:
            target = copy.root / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / entry["path"], target)
        for path in gone:
            (copy.root / path).unlink(missing_ok=True)
            for folder in walk_up_empty((copy.root / path).parent, copy.root):
                folder.rmdir()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    copy.origin = Origin(copy.origin.server, copy.origin.owner, copy.origin.name, doc["number"])
    copy.files = new
    copy.save()


def pull(server: ServerOpt = None, as_json: JsonOpt = False) -> None:
    """Bring an unchanged working copy to the design's latest version."""
    copy = find()
    changes = copy.status()
    base = copy.origin.version
    if not changes.clean:
        raise DgmlError(
            f"you have local changes ({_plural(changes.count, 'file')}; see dgml status): push "
            "them, or fetch the latest version into a new folder and copy them over"
        )
    with connect(server, copy.origin.server) as hub:
        doc = hub.version(copy.origin.owner, copy.origin.name, "latest")
        before = dict(copy.files)
        if doc["number"] != base:
            _apply(hub, copy, doc, as_json)
    moved = compare(before, copy.files)
    if as_json:
        print_json(
            {"design": doc["design"], "from": base, "to": doc["number"]}
            | {"changed": moved.changed, "added": moved.added, "removed": moved.removed}
        )
        return
    if doc["number"] == base:
        out.print(f"Already at the latest version ({base}).")
        return
    out.print(
        f"Updated {escape(doc['design'])} from version {base} to {doc['number']}.",
        highlight=False,
    )
    _show_changes(moved)


# --- propose ----------------------------------------------------------------------------------


def _title_and_body(message: str, title: str | None) -> tuple[str, str]:
    if title:
        return title, message
    first, _, rest = message.strip().partition("\n")
    if len(first) > 200:
        return first[:197] + "...", message.strip()
    return first, rest.strip()


def propose(
    message: MessageOpt,
    title: Annotated[
        str | None, typer.Option("--title", help="Title (default: the message's first line).")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="OWNER/NAME to propose to (default: the design forked from)."),
    ] = None,
    server: ServerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a change request: offer this fork's version to the design it was forked from."""
    copy = find()
    changes = copy.status()
    if not changes.clean:
        raise DgmlError(
            f"you have changes that are not pushed ({_plural(changes.count, 'file')}): run "
            "dgml push -m MSG first, a change request offers a pushed version"
        )
    if not message.strip():
        raise typer.BadParameter("the message is empty", param_hint="--message")
    origin = copy.origin
    with connect(server, origin.server, login=True) as hub:
        if to:
            target_owner, target_name, _ = parse_design(to, "--to")
        else:
            source = hub.design(origin.owner, origin.name)["forked_from"]
            if source is None:
                raise DgmlError(
                    f"{origin.full_name} is not a fork: a change request goes from a fork to "
                    "the design it came from (or name one with --to)"
                )
            target_owner, target_name = source["owner"], source["name"]
        head, body = _title_and_body(message, title)
        ref = {"owner": origin.owner, "name": origin.name, "version": origin.version}
        request = hub.propose(target_owner, target_name, ref, head, body)
    if as_json:
        print_json(request)
        return
    out.print(
        f"Proposed {escape(origin.full_name)}@{origin.version} to {escape(request['design'])} "
        f"as change request #{request['id']}.",
        highlight=False,
    )
