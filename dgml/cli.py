"""The ``dgml`` command line: the root, error handling, and the hub operator's commands.

Errors are one line on stderr and a non-zero exit code (1 for a failure the user can act on,
2 for bad usage); ``--debug`` or ``DGML_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from dgml.commands import account, designs, diff_cmd, orders, workcopy_cmds
from dgml.commands import agent as agent_commands
from dgml.commands.build import build as build_command
from dgml.commands.demo import demo as demo_command
from dgml.commands.validate import validate as validate_command
from dgml.errors import DgmlError

app = typer.Typer(
    name="dgml",
    help="Design global, manufacture local: open hardware designs, forks and local fabrication.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(
    help="Accounts on this hub (works on the configured database directly).", no_args_is_help=True
)
app.add_typer(user_app, name="user")
# The fablab's job agent and the commands a person uses beside it.
app.add_typer(agent_commands.app, name="agent")
app.command("validate")(validate_command)
app.command("build")(build_command)
app.command("demo")(demo_command)
# The maker's verbs: every one has --json, and --server where it talks to a hub.
for _verb, _function in (
    ("login", account.login),
    ("logout", account.logout),
    ("whoami", account.whoami),
    ("search", designs.search),
    ("fetch", designs.fetch),
    ("fork", designs.fork),
    ("status", workcopy_cmds.status),
    ("push", workcopy_cmds.push),
    ("pull", workcopy_cmds.pull),
    ("log", designs.log),
    ("diff", diff_cmd.diff),
    ("propose", workcopy_cmds.propose),
    ("order", orders.order),
    ("orders", orders.orders),
    ("order-status", orders.order_status),
    ("order-cancel", orders.order_cancel),
):
    app.command(_verb)(_function)

out = Console()
err = Console(stderr=True)
_state = {"debug": os.environ.get("DGML_DEBUG", "") not in ("", "0")}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True


def _settings():
    from dgml.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "DGML_" + "_".join(str(p) for p in first["loc"]).upper()
        raise DgmlError(f"{name}: {first['msg']}") from None


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="The account's name.")],
    admin: Annotated[bool, typer.Option("--admin", help="May create other accounts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an account and print its API token (shown once) as the last line."""
    from dgml.db import make_engine, make_sessionmaker, migrate, write_session
    from registry import accounts

    settings = _settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        migrate(engine)
        with write_session(make_sessionmaker(engine)) as session:
            user = accounts.create_user(session, name, is_admin=admin)
            token = accounts.issue_token(session, user, label="dgml user create")
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps({"name": name, "is_admin": admin, "token": token}))
    else:
        err.print(
            f"Created {'admin ' if admin else ''}account [bold]{name}[/]. Its token, shown once:"
        )
        print(token)


@app.command("up")
def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Also publish designs/, register the French fab labs, run agents."
        ),
    ] = False,
) -> None:
    """Run the hub until Ctrl-C (embedded default: SQLite, blobs and Redis in the data dir).

    The API serves on HOST:PORT; a Redis server is started in the data dir unless
    DGML_REDIS_URL names one, and DGML_DATABASE_URL may name PostgreSQL instead of SQLite.
    With --demo, the designs library is published, the French fab labs are registered and
    simulated agents of a dozen of them take orders until the hub stops.
    """
    settings = _settings()
    # The API and the workers it starts count into one metrics folder, so that /metrics shows
    # the validation and placement timings measured in the workers.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        shared = settings.data_dir / "metrics"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    from dgml.stack import run_stack

    host = host or settings.host
    port = settings.port if port is None else port
    live = None
    if demo:
        from dgml.commands.demo import LiveDemo

        reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        live = LiveDemo(settings, f"http://{reach}:{port}")
        live.start()
    try:
        run_stack(settings, host=host, port=port)
    finally:
        if live is not None:
            live.stop()


@app.command("worker")
def worker(
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue to serve (repeatable).")
    ] = None,
    burst: Annotated[bool, typer.Option(help="Stop once the queues are empty.")] = False,
) -> None:
    """Run one RQ worker of the hub (checks, builds and routing); needs DGML_REDIS_URL."""
    from dgml.worker import QUEUES, run_worker

    settings = _settings()
    unknown = sorted(set(queue or ()) - set(QUEUES))
    if unknown:
        raise typer.BadParameter(f"unknown queue {unknown[0]!r} (queues: {', '.join(QUEUES)})")
    run_worker(settings, tuple(queue or QUEUES), burst=burst)


@app.command("scheduler")
def scheduler() -> None:
    """Run the hub's housekeeping alone: hand over the outbox, move due scheduled jobs, enqueue
    the periodic sweeps and reconciler once per time slot (workers do it too; compose runs this
    so that it happens on time however busy they are). Needs DGML_REDIS_URL."""
    from dgml.worker import run_scheduler

    run_scheduler(_settings())


@app.command("reconciler")
def reconciler(
    every: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds between rounds (default DGML_RECONCILE_EVERY_S)."),
    ] = None,
) -> None:
    """Post again the placements a fault lost (Redis wiped, a worker killed), every few
    seconds, until stopped. Needs DGML_REDIS_URL."""
    from dgml.worker import run_reconciler

    run_reconciler(_settings(), every)


@app.command("migrate")
def migrate_command(as_json: JsonOpt = False) -> None:
    """Bring the configured database's schema to the newest revision (safe to run again)."""
    from alembic.runtime.migration import MigrationContext

    from dgml.db import make_engine, migrate

    settings = _settings()
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            heads = sorted(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    backend = settings.resolved_database_url.split("://", 1)[0]
    if as_json:
        print(json.dumps({"database": backend, "revisions": heads}))
    else:
        err.print(f"The {backend} database is at revision {', '.join(heads)}.")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=256, help="Server processes sharing the port.")
    ] = 1,
    migrate_first: Annotated[
        bool,
        typer.Option(
            "--migrate/--no-migrate", help="Migrate the schema before the processes start."
        ),
    ] = True,
) -> None:
    """Run the API alone, in one or more processes: no Redis and no workers of its own.

    This is the API of a production deployment (compose.yaml): DGML_DATABASE_URL and
    DGML_REDIS_URL name the shared database and Redis; queue work is run by `dgml worker`.
    Logs are JSON lines (DGML_LOG_FORMAT=text for plain ones), access lines included."""
    import uvicorn

    from dgml.db import make_engine, migrate
    from dgml.logs import configure_logging, logging_config
    from dgml.metrics import shared_dir_for

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate_first:
        engine = make_engine(settings.resolved_database_url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
    with shared_dir_for(workers):
        uvicorn.run(
            "dgml.app:serve_app",
            factory=True,
            host=host or settings.host,
            port=settings.port if port is None else port,
            workers=workers,
            log_config=logging_config(settings.log_format, settings.log_level),
            log_level=settings.log_level,
            access_log=True,
        )


def main(args: list[str] | None = None) -> None:
    """Entry point: usage errors and help are Typer's (exit 2); any other error is one line.

    ``args`` defaults to the process's arguments; tests pass their own."""
    try:
        app(args=args)
    except DgmlError as exc:
        if _state["debug"]:
            raise
        # Details may quote file names or a hub's words: shown as text, never as markup.
        err.print(f"[red]error:[/] {escape(exc.detail)}", highlight=False, soft_wrap=True)
        sys.exit(2 if exc.status_code == 422 else 1)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except Exception as exc:
        if _state["debug"]:
            raise
        err.print(
            f"[red]error:[/] {type(exc).__name__}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
