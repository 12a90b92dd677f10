"""What the maker's commands share: the ``--json`` and ``--server`` options, choosing the hub
and its token, design references, progress bars and the way figures are shown.

Which hub: ``--server``, else ``DGML_SERVER``, else the working copy's hub (for commands run
in one), else the hub of the last login. Which token: ``DGML_TOKEN``, else the stored login of
that hub, else none (reading public data needs none).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dgml.client import Advance, Hub
from dgml.config_store import LoginStore, normalise_server
from dgml.errors import DgmlError

# Messages are not broken at the terminal's width: they may be piped, grepped or pasted.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="The hub's address (default: DGML_SERVER, the working copy's hub, the last login).",
        metavar="URL",
    ),
]
VERDICT_COLOURS = {
    "pass": "green",
    "warn": "yellow",
    "fail": "red",
    "unreadable": "red",
    "pending": "cyan",
}
_REF_RE = re.compile(r"^([^/@\s]+)/([^/@\s]+)(?:@([^/@\s]+))?$")


def parse_design(text: str, hint: str = "DESIGN") -> tuple[str, str, str | None]:
    """``OWNER/NAME[@REF]`` as (owner, name, ref or None); bad usage (exit 2) otherwise."""
    match = _REF_RE.match(text.strip())
    if not match:
        raise typer.BadParameter(
            f"give OWNER/NAME or OWNER/NAME@VERSION, not {text!r}", param_hint=hint
        )
    return match.group(1), match.group(2), match.group(3)


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def choose_server(flag: str | None, fallback: str | None = None) -> str:
    for value in (flag, env("DGML_SERVER"), fallback):
        if value:
            return normalise_server(value)
    default = LoginStore().default_server()
    if default:
        return default
    raise DgmlError("no hub chosen: log in with dgml login --server URL, or give --server URL")


def token_for(server: str) -> str | None:
    given = env("DGML_TOKEN")
    if given:
        return given
    login = LoginStore().get(server)
    return login.token if login else None


def connect(flag: str | None, fallback: str | None = None, *, login: bool = False) -> Hub:
    """A client for the chosen hub; with ``login``, an error now when there is no token."""
    server = choose_server(flag, fallback)
    token = token_for(server)
    if login and not token:
        raise DgmlError(f"not logged in to {server}: run dgml login --server {server}")
    return Hub(server, token)


def table_console() -> Console:
    """Where tables go: the terminal at its width, or, when stdout is piped, a console wide
    enough for every column (a pipe has no width, and 80 columns would cut them)."""
    return out if out.is_terminal else Console(soft_wrap=True, width=200)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@contextlib.contextmanager
def transfer(total: int, description: str, *, enabled: bool = True) -> Iterator[Advance]:
    """A progress bar over ``total`` bytes on stderr, when stderr is a terminal."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not (enabled and err.is_terminal),
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} B"


def verdict_text(verdict: str | None) -> str:
    verdict = verdict or "-"
    colour = VERDICT_COLOURS.get(verdict)
    return f"[{colour}]{verdict}[/]" if colour else verdict


def _signed(value: float | None, unit: str) -> str | None:
    return None if value is None else f"{value:+,.2f} {unit}"


def geometry_text(geometry: dict[str, Any] | None) -> str:
    """One line for a model file's geometry diff."""
    if not geometry:
        return ""
    if "error" in geometry:
        return f"not compared: {geometry['error']}"
    parts = []
    if (volume := _signed(geometry.get("volume_delta_mm3"), "mm3")) is not None:
        parts.append(f"volume {volume}")
    if (area := _signed(geometry.get("area_delta_mm2"), "mm2")) is not None:
        parts.append(f"area {area}")
    if size := geometry.get("size_delta_mm"):
        parts.append("size " + " x ".join(f"{v:+.2f}" for v in size) + " mm")
    if distance := geometry.get("distance"):
        parts.append(
            f"surface moved up to {distance['max_mm']:.2f} mm (p95 {distance['p95_mm']:.2f})"
        )
    return ", ".join(parts) or "no geometric change measured"
