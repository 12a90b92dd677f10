"""``dgml agent status``: the machines and whether their tools are there, the journal's jobs
with the progress the running agent last saw, and the hub: whether it answers now, and when
the agent last heard from it.

It only reads: the journal and ``status.json`` in the state dir (a state dir that is not there
is reported, not created) and the hub's ``/healthz``, which needs no token and does not count
as the fablab being online.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from dgml.commands.common import err, out

RECENT_JOBS = 20
STAGE_COLOURS = {"failed": "red", "cancelled": "yellow", "done": "green", "started": "cyan"}


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def _machines(setup: Any, tools: Any) -> list[dict[str, Any]]:
    from workers.tools import usable_machines

    _usable, left_out = usable_machines(setup.config, tools)
    return [
        {
            "name": m.name,
            "process": m.process,
            "driver": m.driver,
            "materials": list(m.materials),
            "build_volume_mm": list(m.build_volume_mm),
            "available": m.name not in left_out,
            "problem": left_out.get(m.name),
        }
        for m in setup.config.machines
    ]


def _jobs(setup: Any, live: dict[str, Any]) -> list[dict[str, Any]]:
    from workers.journal import Journal

    if not (setup.state_dir / "journal.sqlite3").is_file():
        return []
    with Journal(setup.state_dir) as journal:
        records = journal.jobs()[-RECENT_JOBS:]
    jobs = []
    for record in records:
        seen = live.get(record.job_id) or {}
        jobs.append(
            {
                "job_id": record.job_id,
                "machine": record.machine,
                "process": record.process,
                "material": record.material,
                "stage": record.stage,
                "percent": seen.get("percent"),
                "message": seen.get("message") or "",
                "disconnected": bool(seen.get("disconnected")),
                "error": record.error,
                "updated_at": record.updated_at,
            }
        )
    return jobs


def gather(setup: Any) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (``--json`` prints it as it is)."""
    from workers.agent_reports import read_status
    from workers.hub import HubClient
    from workers.tools import find_tools

    tools = find_tools(setup.config)
    seen = read_status(setup.state_dir) if setup.state_dir.is_dir() else None
    running = bool(seen and not seen.get("stopped") and _alive(seen.get("pid")))
    with HubClient(setup.server, timeout=5.0) as hub:
        reachable = hub.healthy()
        problem = None if reachable else hub.last_error
    credentials = setup.credentials
    return {
        "config": {
            "accept": setup.config.agent.accept,
            "max_parallel_jobs": setup.config.agent.max_parallel_jobs,
        },
        "state_dir": str(setup.state_dir),
        "state_dir_exists": setup.state_dir.is_dir(),
        "enrolled": credentials is not None,
        "fablab_id": credentials.fablab_id if credentials else None,
        "agent": {
            "running": running,
            "pid": seen.get("pid") if running and seen else None,
            "updated_at": seen.get("updated_at") if seen else None,
        },
        "hub": {
            "server": setup.server,
            "reachable": reachable,
            "error": problem,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "last_contact": ((seen or {}).get("hub") or {}).get("last_contact"),
        },
        "tools": [
            {"name": t.name, "ok": t.ok, "path": t.path, "version": t.version, "problem": t.problem}
            for t in tools.tools.values()
        ],
        "machines": _machines(setup, tools),
        "jobs": _jobs(setup, (seen or {}).get("jobs") or {}),
    }


def show(report: dict[str, Any]) -> None:
    """The report as Rich tables."""
    hub = report["hub"]
    agent = report["agent"]
    state = (
        "[green]answers[/]"
        if hub["reachable"]
        else f"[red]does not answer[/] ({escape(hub['error'] or '')})"
    )
    contact = hub["last_contact"] or "never"
    out.print(f"Hub {escape(hub['server'])}: {state}; the agent's last contact: {contact}")
    who = f" of fablab {escape(report['fablab_id'])}" if report["enrolled"] else ""
    running = f"running (pid {agent['pid']})" if agent["running"] else "not running"
    if not report["enrolled"]:
        running += ", [red]not enrolled[/] (dgml agent --enrol TOKEN)"
    accept = report["config"]["accept"]
    out.print(f"Agent{who}: {running}; accept {accept}; state dir {escape(report['state_dir'])}")
    machines = Table("machine", "process", "driver", "materials", "available", title="Machines")
    for m in report["machines"]:
        available = (
            "[green]yes[/]" if m["available"] else f"[red]no[/]: {escape(m['problem'] or '')}"
        )
        machines.add_row(
            escape(m["name"]),
            m["process"],
            m["driver"],
            escape(", ".join(m["materials"])),
            available,
        )
    out.print(machines)
    if not report["jobs"]:
        err.print("No jobs in the journal.")
        return
    jobs = Table("job", "machine", "stage", "%", "message", title="Jobs")
    for job in report["jobs"]:
        colour = STAGE_COLOURS.get(job["stage"])
        stage = f"[{colour}]{job['stage']}[/]" if colour else job["stage"]
        percent = "" if job["percent"] is None else f"{job['percent']:.0f}"
        note = job["error"] or job["message"] or ""
        if job["disconnected"]:
            note = "lease lost at the hub; " + note
        jobs.add_row(escape(job["job_id"]), escape(job["machine"]), stage, percent, escape(note))
    out.print(jobs)
