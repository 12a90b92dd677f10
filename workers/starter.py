"""The commented starter config that ``dgml agent init`` writes: one simulated FDM machine, and
commented examples of an OctoPrint and a hotfolder machine. It parses as it is (a test checks)."""

from __future__ import annotations

import os
from pathlib import Path

from dgml.errors import Conflict

_STARTER = """\
# dgml job agent: the machines of this lab and how they take jobs.
# Paths are relative to this file's folder. Check it with a dry start of the agent.

[agent]
# The hub this lab works for. https:// is required, except to localhost.
server = "http://127.0.0.1:8765"
# Where the agent keeps its journal of jobs and its download cache.
state_dir = "dgml-agent-state"
# "manual": offers wait for a person to accept them; "auto": accepted while there is room.
accept = "manual"
# How many jobs may be downloading, slicing or running at the same time.
max_parallel_jobs = 1
# The PrusaSlicer command (slices FDM jobs); a full path works too.
prusa_slicer = "prusa-slicer"

# One [[machines]] table per machine. This one only pretends to print: a simulator.
[[machines]]
name = "simulated-mk3"
process = "fdm"                      # fdm, sla, sls, cnc or laser
materials = ["PLA", "PETG"]          # PLA, PETG, ABS and TPU have built-in temperatures
build_volume_mm = [250, 210, 210]    # x, y, z
nozzle_mm = 0.4                      # fdm only (laser machines give kerf_mm instead)
driver = "simulator"                 # simulator, octoprint or hotfolder

[machines.simulator]
speed = 60.0                         # machine seconds per real second
# duration_s = 0                     # fixed machine time per job instead of the estimate
# fail_at_percent = 50               # make every job fail there (for trying things out)

# Slicer settings for this machine; every key is optional.
[machines.slicer]
layer_height_mm = 0.2
first_layer_height_mm = 0.2
filament_diameter_mm = 1.75
perimeters = 2
fill_density_percent = 15
supports = false
gcode_flavor = "marlin2"
timeout_s = 900

# Temperatures for a material, overriding the built-in ones (or for another material).
# [machines.slicer.temperatures.PETG]
# nozzle = 235
# bed = 85

# A printer behind OctoPrint:
# [[machines]]
# name = "prusa-i3"
# process = "fdm"
# materials = ["PLA"]
# build_volume_mm = [250, 210, 210]
# nozzle_mm = 0.4
# driver = "octoprint"
# [machines.octoprint]
# url = "http://octopi.local"
# api_key_env = "OCTOPRINT_API_KEY"  # or api_key = "..." (the variable keeps it out of this file)

# A machine a person runs by hand from a folder:
# [[machines]]
# name = "laser"
# process = "laser"
# materials = ["plywood 3 mm"]
# build_volume_mm = [600, 400, 10]
# kerf_mm = 0.15
# driver = "hotfolder"
# [machines.hotfolder]
# path = "laser-jobs"
# (a person runs `dgml agent done JOB` or `dgml agent failed JOB --reason ...` when finished)
"""


def starter_config() -> str:
    """A commented config with one simulated FDM machine, that parses as it is."""
    return _STARTER


def write_starter(path: Path | str, *, force: bool = False) -> Path:
    """Write :func:`starter_config` to ``path``; an existing file is kept unless ``force``."""
    path = Path(path)
    if path.is_dir():
        path = path / "agent.toml"
    if path.exists() and not force:
        raise Conflict(f"{path} already exists; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(_STARTER, encoding="utf-8")
    os.replace(temp, path)
    return path
