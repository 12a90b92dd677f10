"""``dgml demo`` and the ``--demo`` part of ``dgml up``.

``dgml demo`` runs the finite scenario of :mod:`dgml.demo.scenario` on a fresh hub and exits 0
when every order ended as the scenario expects (1 otherwise, or on any error, in one line).
``dgml up --demo`` fills the hub it runs with the same designs, fab labs and agents
(:class:`LiveDemo`), which then work until the hub stops.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from dgml.commands.common import JsonOpt, err, out, print_json
from dgml.errors import DgmlError


def _log_to(path: Path) -> None:
    """The agents' and the demo's own log lines go to a file, not between the stage lines."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Keep the hub's data here (default: a fresh temp dir).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="The hub's port on 127.0.0.1 (default: a free one)."),
    ] = None,
    designs: Annotated[
        Path | None,
        typer.Option("--designs", metavar="DIR", help="The designs library (default: designs/)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole idea once on a fresh hub: publish, fork, order near makers, fabricate.

    Starts `dgml up` on a fresh data dir, publishes the designs library, registers the French
    fab labs and simulated agents near six cities, forks a design and changes a parameter,
    orders from makers in those cities (and one order no lab can make), lets the agents slice
    (PrusaSlicer) and fabricate, then prints the summary and writes a map. Stops everything it
    started, also on errors and Ctrl-C."""
    from dgml.demo.hub import prepare_data_dir
    from dgml.demo.report import print_summary
    from dgml.demo.scenario import run_demo

    data_dir = prepare_data_dir(data_dir)
    _log_to(data_dir / "demo.log")

    def say(text: str) -> None:
        if not as_json:
            err.print(f"[dim]{escape(text)}[/]", highlight=False)

    say(f"data dir: {data_dir}")
    outcome = run_demo(data_dir=data_dir, port=port, designs_dir=designs, say=say)
    if as_json:
        print_json(outcome.to_dict())
    else:
        # Piped output gets a table wide enough for its columns, not 80 characters.
        wide = out if out.is_terminal else Console(soft_wrap=True, width=160)
        print_summary(wide, outcome)
        stages = ", ".join(f"{name} {took:.1f} s" for name, took in outcome.stages.items())
        err.print(
            f"[dim]took {sum(outcome.stages.values()):.1f} s: {escape(stages)}[/]",
            highlight=False,
        )
    if not outcome.ok:
        wrong = [r for r in outcome.rows if r.state != r.expected]
        said = "; ".join(f"order {r.order} is {r.state}, not {r.expected}" for r in wrong)
        raise DgmlError(f"the demo did not go as expected: {said}")


class LiveDemo:
    """``dgml up --demo``: once the API answers, publish the library, register the fab labs and
    start simulated agents near the demo's cities; they work until :meth:`stop`."""

    def __init__(self, settings: Any, base: str) -> None:
        self.settings = settings
        self.base = base
        self.agents: Any = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _wait_ready(self, http: httpx.Client) -> bool:
        while not self.stopping.is_set():
            try:
                if http.get("/readyz").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def _run(self) -> None:
        from dgml.db import make_engine, make_sessionmaker
        from dgml.demo import library
        from dgml.demo.hub import embedded_redis_url
        from dgml.demo.scenario import FORK, Outcome, Stages, populate

        engine = make_engine(self.settings.resolved_database_url)
        try:
            with httpx.Client(base_url=self.base, timeout=60.0) as http:
                if not self._wait_ready(http):
                    return
                outcome = Outcome(data_dir=self.settings.data_dir, base=self.base)
                populated = populate(
                    http,
                    make_sessionmaker(engine),
                    base=self.base,
                    redis_url=self.settings.redis_url or embedded_redis_url(self.settings.data_dir),
                    data_dir=self.settings.data_dir,
                    designs_dir=library.default_designs_dir(),
                    stage=Stages(outcome, lambda text: err.print(f"demo: {escape(text)}")),
                )
                self.agents = populated.agents
                if self.stopping.is_set():
                    self.agents.stop()
                    return
                err.print(
                    f"demo: {len(populated.versions) + 1} designs, {len(populated.labs)} fab "
                    f"labs, {len(self.agents.agents)} simulated agents on {self.base}; order with "
                    "POST /api/v1/orders, or run `dgml demo` for the whole scenario."
                )
                maker = populated.accounts[FORK.maker]
                err.print(f"demo: the token of the maker {maker.name} (shown once): {maker.token}")
        except Exception as exc:  # the hub goes on without the demo's content
            if self.stopping.is_set():
                return  # the hub stopped during the set-up: nothing to say
            detail = exc.detail if isinstance(exc, DgmlError) else f"{type(exc).__name__}: {exc}"
            err.print(f"[red]demo:[/] {escape(detail)}", highlight=False)
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Stop the agents (and the set-up, if it is still going)."""
        self.stopping.set()
        self.thread.join(30)
        if self.agents is not None:
            self.agents.stop()
