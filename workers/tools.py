"""The outside programs the pipelines need, found once at start-up.

A missing or broken tool is not an error at start-up: the agent reports it and does not offer
the processes that need it, so a lab without PrusaSlicer can still take laser and CNC work.
PrusaSlicer is checked by running ``--help`` without a display, the way the agent will run it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from workers.config import AgentConfig, Machine

# Which tool each process needs; processes not named here need none (the files pass through).
NEEDS: dict[str, str] = {"fdm": "prusa-slicer"}
CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Tool:
    """One program: where it is and its version, or why it cannot be used."""

    name: str
    path: str | None = None
    version: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ToolReport:
    """What was found, and the processes that cannot be offered for want of a tool."""

    tools: dict[str, Tool] = field(default_factory=dict)

    def tool(self, name: str) -> Tool:
        return self.tools.get(name) or Tool(name, problem="not checked")

    def available(self, process: str) -> bool:
        needed = NEEDS.get(process)
        return needed is None or self.tool(needed).ok

    def unavailable(self) -> dict[str, str]:
        """process -> why it is not offered."""
        return {
            process: f"{tool}: {self.tool(tool).problem}"
            for process, tool in NEEDS.items()
            if not self.tool(tool).ok
        }

    def lines(self) -> list[str]:
        """A short human report, one line per tool and one per process left out."""
        out = []
        for tool in self.tools.values():
            if tool.ok:
                out.append(f"{tool.name}: {tool.version or 'found'} ({tool.path})")
            else:
                out.append(f"{tool.name}: {tool.problem}")
        out.extend(f"not offering {p}: {why}" for p, why in self.unavailable().items())
        return out


def headless_env() -> dict[str, str]:
    """The environment without a display, so a GUI build of a tool cannot try to open one."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def check_prusa_slicer(command: str = "prusa-slicer") -> Tool:
    """Find PrusaSlicer and make sure it answers ``--help`` headless with exit status 0."""
    name = "prusa-slicer"
    path = shutil.which(command)
    if path is None:
        return Tool(name, problem=f"{command!r} not found (Debian package prusa-slicer)")
    try:
        run = subprocess.run(
            [path, "--help"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=CHECK_TIMEOUT_S,
            env=headless_env(),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Tool(name, path, problem=f"`{path} --help` did not finish in {CHECK_TIMEOUT_S} s")
    except OSError as exc:
        return Tool(name, path, problem=f"cannot run {path}: {exc.strerror or exc}")
    output = run.stdout + run.stderr
    if run.returncode != 0:
        last = [line for line in output.splitlines() if line.strip()][-1:] or ["no output"]
        return Tool(name, path, problem=f"`--help` failed ({run.returncode}): {last[0][:200]}")
    found = re.search(r"PrusaSlicer-([0-9][\w.+-]*)", output)
    if found is None:
        return Tool(name, path, problem="`--help` did not name PrusaSlicer; another program?")
    return Tool(name, path, version=found.group(1))


def find_tools(config: AgentConfig | None = None) -> ToolReport:
    """Check every tool some process needs, with the commands the config names."""
    command = config.agent.prusa_slicer if config else "prusa-slicer"
    return ToolReport({"prusa-slicer": check_prusa_slicer(command)})


def usable_machines(
    config: AgentConfig, report: ToolReport
) -> tuple[list[Machine], dict[str, str]]:
    """The machines the agent may offer, and for the others why not (by machine name)."""
    usable: list[Machine] = []
    left_out: dict[str, str] = {}
    for machine in config.machines:
        if report.available(machine.process):
            usable.append(machine)
        else:
            left_out[machine.name] = report.unavailable()[machine.process]
    return usable, left_out
