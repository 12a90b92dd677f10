"""Machine drivers behind one interface (``base.Driver``): simulator, OctoPrint, hotfolder."""

from __future__ import annotations

from pathlib import Path

from workers.config import Machine
from workers.drivers.base import Driver, DriverError, MachineUnreachable, Status

__all__ = ["Driver", "DriverError", "MachineUnreachable", "Status", "make_driver"]


def make_driver(machine: Machine, state_dir: Path, environ: dict[str, str] | None = None) -> Driver:
    """The driver the config names for this machine; the simulator keeps its state in
    ``<state_dir>/simulator/<machine>/``."""
    if machine.driver == "simulator":
        from workers.drivers.simulator import SimulatorDriver

        return SimulatorDriver(machine.simulator_options, state_dir / "simulator" / machine.name)
    if machine.driver == "octoprint":
        from workers.drivers.octoprint import OctoPrintDriver

        assert machine.octoprint is not None
        return OctoPrintDriver(machine.octoprint, machine.octoprint.resolved_api_key(environ))
    from workers.drivers.hotfolder import HotfolderDriver

    assert machine.hotfolder is not None
    return HotfolderDriver(machine.hotfolder, machine.name)
