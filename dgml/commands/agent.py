"""``dgml agent``: the job agent a fablab runs beside its machines, and the commands a person
uses with it.

``dgml agent [--server URL] [--config PATH] [--enrol TOKEN] [--state-dir DIR]`` runs the loop
(:mod:`workers.agent`) until SIGTERM or Ctrl-C. The other verbs work beside a running agent,
through the same state dir: ``accept`` journals the job it took, so the loop starts it within a
second; ``done``/``failed`` write a hotfolder marker the loop reads; ``status`` reads the
journal and the ``status.json`` the loop keeps.

Which hub: ``--server``, else the hub the agent enrolled with (recorded beside its token), else
the config's ``server``. Which config: ``--config``, else ``DGML_AGENT_CONFIG``, else
``./agent.toml``. Options given before the verb (``dgml agent --config X offers``) count as
given to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dgml.commands.agent_setup import Setup, hub_for, load_setup
from dgml.commands.common import JsonOpt, err, out, print_json
from dgml.errors import DgmlError, Invalid, NotFound

app = typer.Typer(
    help="The fablab's job agent: takes offers from the hub and runs them on the lab's machines.",
)

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", metavar="URL", help="The hub (default: the enrolled one, then the config's)."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="The config file (default: DGML_AGENT_CONFIG, ./agent.toml).",
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", metavar="DIR", help="Where the journal, cache and token live."),
]


# --- running the loop --------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def agent(
    ctx: typer.Context,
    server: ServerOpt = None,
    config: ConfigOpt = None,
    enrol: Annotated[
        str | None,
        typer.Option(
            "--enrol", metavar="TOKEN", help="Exchange an enrolment token first (first run)."
        ),
    ] = None,
    state_dir: StateOpt = None,
    grace: Annotated[
        float,
        typer.Option(min=0, max=3600, help="Seconds running jobs get to finish on SIGTERM."),
    ] = 10.0,
) -> None:
    """Run the job agent until SIGTERM or Ctrl-C (or use one of the commands below)."""
    ctx.obj = {"server": server, "config": config, "state_dir": state_dir}
    if ctx.invoked_subcommand is not None:
        if enrol:
            raise typer.BadParameter("--enrol runs the agent: give it without a command")
        return
    setup = load_setup(None, config, server, state_dir)
    raise typer.Exit(run(setup, enrol=enrol, grace=grace))


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


@contextlib.contextmanager
def _only_agent(state_dir: Path) -> Iterator[None]:
    """One agent per state dir: two would run each job twice."""
    lock = open(state_dir / "agent.lock", "a+")  # noqa: SIM115 - held for the agent's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DgmlError(f"another agent is running on {state_dir}") from None
    try:
        yield
    finally:
        lock.close()


def run(setup: Setup, *, enrol: str | None, grace: float) -> int:
    from workers.agent import Agent
    from workers.agent_reports import LoopOptions
    from workers.enrolment import enrol as enrol_agent
    from workers.journal import ensure_state_dir

    _logging()
    log = logging.getLogger("dgml.agent")
    state_dir = ensure_state_dir(setup.state_dir)
    with _only_agent(state_dir):
        if enrol is not None:
            setup.credentials = enrol_agent(setup.server, enrol, state_dir)
            log.info("enrolled as the agent of %s at %s", setup.credentials.fablab_id, setup.server)
        credentials = setup.token()
        agent = Agent(
            setup.config,
            hub_for(setup),
            fablab_id=credentials.fablab_id,
            options=LoopOptions(grace_s=grace),
        )
        _on_signals(agent)
        code = agent.run()
    if agent.fatal:
        raise DgmlError(agent.fatal)
    return code


def _on_signals(agent: Any) -> None:
    """SIGTERM and Ctrl-C stop claiming and wind down; a second one skips the grace period."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, _frame: Any) -> None:
        if agent.stopping.is_set():
            agent.halt.set()
        agent.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


# --- the config --------------------------------------------------------------------------------


@app.command("init")
def init(
    path: Annotated[
        Path, typer.Argument(help="Where to write it (a folder gets agent.toml).")
    ] = Path("agent.toml"),
    as_json: JsonOpt = False,
) -> None:
    """Write a commented starter config with one simulated FDM machine (never overwrites)."""
    from workers.config import write_starter

    written = write_starter(path)
    if as_json:
        print_json({"config": str(written)})
        return
    err.print(f"Wrote {escape(str(written))}. Next, with the token the hub gave for this fablab:")
    print(f"dgml agent --config {written} --server URL --enrol TOKEN")


# --- offers ------------------------------------------------------------------------------------


def _verdict(
    setup: Setup, tools: Any, offer: dict[str, Any], resolve: Any
) -> tuple[list[str], str | None]:
    """The machines that could make the offer, or why none can (as the loop would decline)."""
    from workers.agent_offers import offer_machines

    machines, reason = offer_machines(setup.config, tools, offer, resolve)
    return [m.name for m in machines], reason


@app.command("offers")
def offers(
    ctx: typer.Context,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The open offers for this fablab, and which machine could make each."""
    from workers.tools import find_tools

    setup = load_setup(ctx, config, server, state_dir)
    tools = find_tools(setup.config)
    rows = []
    with hub_for(setup) as hub:
        for offer in hub.claim(0.0):
            machines, reason = _verdict(setup, tools, offer, hub.resolve)
            rows.append({**offer, "machines": machines, "cannot": reason})
    if as_json:
        print_json({"accept": setup.config.agent.accept, "offers": rows})
        return
    if not rows:
        err.print("No open offers.")
        return
    table = Table("offer", "design", "process", "material", "qty", "files", "expires", "here")
    for row in rows:
        design = row["design"]
        table.add_row(
            str(row["id"]),
            escape(f"{design['owner']}/{design['name']}@{design['version']}"),
            escape(row["process"]),
            escape(row["material"]),
            str(row["quantity"]),
            str(len(row["files"])),
            str(row["expires_at"])[:19],
            escape(", ".join(row["machines"]))
            if not row["cannot"]
            else f"[red]{escape(row['cannot'])}[/]",
        )
    out.print(table)
    err.print(
        "Take one with: dgml agent accept ID   Refuse one with: dgml agent decline ID --reason ..."
    )


@app.command("accept")
def accept(
    ctx: typer.Context,
    offer_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The offer.")],
    machine: Annotated[
        str | None, typer.Option(help="The machine to run it on (default: a free one).")
    ] = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accept an offer held for a person; the running agent (or its next start) makes it."""
    from workers.agent_offers import spec_for
    from workers.journal import Journal
    from workers.tools import find_tools

    setup = load_setup(ctx, config, server, state_dir)
    with hub_for(setup) as hub:
        offer = next((o for o in hub.claim(0.0) if int(o["id"]) == offer_id), None)
        if offer is None:
            raise NotFound(
                f"offer {offer_id} is not open for this fablab "
                "(taken, declined, expired or unknown)"
            )
        names, reason = _verdict(setup, find_tools(setup.config), offer, hub.resolve)
        if reason is not None:
            raise Invalid(
                f"no machine here can make offer {offer_id}: {reason}; refuse it with "
                f"dgml agent decline {offer_id} --reason ...",
                field="offer",
            )
        chosen = _choose(setup, names, machine)
        job = hub.accept(offer_id, f"dgml-agent-{uuid.uuid4().hex}")
        spec = spec_for(job, setup.config.machine(chosen), hub.resolve)
    with Journal(setup.state_dir) as journal:
        journal.add(spec)
    if as_json:
        print_json({"offer": offer_id, "job": job["id"], "machine": chosen})
        return
    err.print(
        f"Accepted offer {offer_id}: job {job['id']} on {escape(chosen)}. The running agent "
        "starts it (or the next `dgml agent`)."
    )


def _choose(setup: Setup, names: list[str], wanted: str | None) -> str:
    """The machine asked for (if it can make the offer), else the least busy one."""
    from workers.journal import Journal

    if wanted is not None:
        if wanted not in names:
            raise Invalid(
                f"machine {wanted!r} cannot make this offer (these can: {', '.join(names)})",
                field="machine",
            )
        return wanted
    busy: list[str] = []
    if (setup.state_dir / "journal.sqlite3").is_file():
        with Journal(setup.state_dir) as journal:
            busy = [r.machine for r in journal.unfinished()]
    return min(names, key=busy.count)


@app.command("decline")
def decline(
    ctx: typer.Context,
    offer_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The offer.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (the maker sees it).")],
    config: ConfigOpt = None,
    server: ServerOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refuse an offer; the hub offers the order to another fablab."""
    if not reason.strip():
        raise Invalid("give a reason: why this lab cannot make it", field="reason")
    setup = load_setup(ctx, config, server, state_dir)
    with hub_for(setup) as hub:
        answer = hub.decline(offer_id, reason)
    if as_json:
        print_json(answer)
        return
    err.print(f"Declined offer {offer_id}: {escape(answer.get('reason') or reason)}")


# --- hotfolder confirmations -------------------------------------------------------------------


@app.command("done")
def done(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id (its folder's name).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Confirm that a hotfolder job was made; the agent reports it to the hub."""
    from workers.drivers.hotfolder import find_job_folder, mark_done

    setup = load_setup(ctx, config, None, None, warn=False)
    written = mark_done(find_job_folder(setup.config, job), job)
    _confirmed(job, "done", written, as_json)


@app.command("failed")
def failed(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id (its folder's name).")],
    reason: Annotated[str, typer.Option("--reason", help="What went wrong.")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Say that a hotfolder job could not be made, and why; the hub routes it elsewhere."""
    from workers.drivers.hotfolder import find_job_folder, mark_failed

    setup = load_setup(ctx, config, None, None, warn=False)
    written = mark_failed(find_job_folder(setup.config, job), job, reason)
    _confirmed(job, "failed", written, as_json)


def _confirmed(job: str, state: str, written: bool, as_json: bool) -> None:
    if as_json:
        print_json({"job": job, "marked": state, "already": not written})
    else:
        err.print(
            f"Job {escape(job)} marked {state}" + ("" if written else " (it already was)") + "."
        )


# --- status ------------------------------------------------------------------------------------


@app.command("status")
def status(
    ctx: typer.Context,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Machines, jobs and the hub connection."""
    from dgml.commands.agent_status import gather, show

    setup = load_setup(ctx, config, server, state_dir, warn=False)
    report = gather(setup)
    if as_json:
        print_json(report)
    else:
        show(report)
