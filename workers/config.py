"""The agent's configuration file (TOML): where the hub is, how offers are accepted, and the
lab's machines with their driver and slicer settings.

A bad file is reported as one :class:`ConfigError` that names the file, the line and the key
(``agent.toml:14: machines[0].nozzle_mm: ...``), so an operator can fix it without reading a
traceback. ``tomllib`` keeps no positions, so :func:`key_lines` finds them with a small scan of
the text: table headers and ``key =`` lines, which is all a hand-written config holds.

Paths in the file (``state_dir``, a hotfolder's ``path``) are relative to the file's folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dgml.errors import Invalid
from workers.starter import starter_config, write_starter  # noqa: F401 - part of this API

Process = Literal["fdm", "sla", "sls", "cnc", "laser"]
DriverName = Literal["simulator", "octoprint", "hotfolder"]
DRIVER_TABLES: tuple[DriverName, ...] = ("simulator", "octoprint", "hotfolder")


class KeyProblem(ValueError):
    """A check across keys that blames one key, so the error names that key's line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class ConfigError(Invalid):
    """A configuration file that cannot be used; ``field`` is the dotted key at fault."""

    code = "bad_config"


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored would be a wrong machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Temperatures(Strict):
    """Nozzle and bed temperatures for one material, in degrees Celsius."""

    nozzle: int = Field(ge=150, le=450)
    bed: int = Field(ge=0, le=150)
    first_layer_nozzle: int | None = Field(default=None, ge=150, le=450)
    first_layer_bed: int | None = Field(default=None, ge=0, le=150)


# What PrusaSlicer needs per filament when the config says nothing: temperatures and density
# (g/cm3, so that the slicer reports grams too).
FILAMENTS: dict[str, tuple[Temperatures, float]] = {
    "pla": (Temperatures(nozzle=210, bed=60), 1.24),
    "petg": (Temperatures(nozzle=240, bed=80), 1.27),
    "abs": (Temperatures(nozzle=250, bed=100), 1.04),
    "tpu": (Temperatures(nozzle=225, bed=50), 1.21),
}


class SlicerSettings(Strict):
    """Print settings of an FDM machine's slicer profile; the defaults suit a 0.4 mm nozzle."""

    layer_height_mm: float = Field(default=0.2, gt=0.0, le=1.0)
    first_layer_height_mm: float = Field(default=0.2, gt=0.0, le=1.0)
    filament_diameter_mm: Literal[1.75, 2.85] = 1.75
    perimeters: int = Field(default=2, ge=1, le=20)
    fill_density_percent: int = Field(default=15, ge=0, le=100)
    supports: bool = False
    gcode_flavor: Literal["marlin2", "marlin", "reprapfirmware", "repetier", "smoothie"] = "marlin2"
    timeout_s: float = Field(default=900.0, gt=0, le=24 * 3600)
    temperatures: dict[str, Temperatures] = Field(default_factory=dict)

    @field_validator("temperatures")
    @classmethod
    def _casefold_materials(cls, value: dict[str, Temperatures]) -> dict[str, Temperatures]:
        return {name.casefold(): temps for name, temps in value.items()}


class SimulatorOptions(Strict):
    """A machine that only pretends: ``speed`` machine seconds pass per real second.

    ``duration_s`` fixes the machine time of every job (0 finishes at once); without it the
    simulator uses the slicer's estimate, or 10 minutes per artifact. ``fail_at_percent``
    makes every job fail when it gets that far, which is what tests want.
    """

    speed: float = Field(default=60.0, gt=0, le=1e9)
    duration_s: float | None = Field(default=None, ge=0, le=30 * 24 * 3600)
    fail_at_percent: float | None = Field(default=None, ge=0, lt=100)


class OctoPrintOptions(Strict):
    """An OctoPrint server; its API key is given in the file or, better, in an environment
    variable named by ``api_key_env``."""

    url: str
    api_key: str | None = Field(default=None, min_length=1)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://octopi.local")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key(self) -> OctoPrintOptions:
        if (self.api_key is None) == (self.api_key_env is None):
            raise ValueError("give exactly one of api_key and api_key_env")
        return self

    def resolved_api_key(self, environ: dict[str, str] | None = None) -> str:
        """The key itself; a missing variable is an error naming it, not an empty key."""
        if self.api_key is not None:
            return self.api_key
        env = os.environ if environ is None else environ
        key = env.get(self.api_key_env or "", "")
        if not key:
            raise ConfigError(
                f"the environment variable {self.api_key_env} (api_key_env) is not set",
                field="octoprint.api_key_env",
            )
        return key


class HotfolderOptions(Strict):
    """A folder where a person picks up each job's files and runs them by hand."""

    path: Path


class Machine(Strict):
    """One machine of the lab, as the config names it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
    process: Process
    materials: list[str] = Field(min_length=1)
    build_volume_mm: list[float] = Field(min_length=3, max_length=3)
    nozzle_mm: float | None = Field(default=None, gt=0, le=5)
    kerf_mm: float | None = Field(default=None, ge=0, le=5)
    driver: DriverName
    simulator: SimulatorOptions | None = None
    octoprint: OctoPrintOptions | None = None
    hotfolder: HotfolderOptions | None = None
    slicer: SlicerSettings | None = None

    @field_validator("materials")
    @classmethod
    def _materials(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for material in value:
            if not material.strip():
                raise ValueError("a material name is empty")
            if material.casefold() in seen:
                raise ValueError(f"{material!r} is listed twice")
            seen.add(material.casefold())
        return value

    @field_validator("build_volume_mm")
    @classmethod
    def _volume(cls, value: list[float]) -> list[float]:
        if not all(0 < size <= 10_000 for size in value):  # also false for NaN
            raise ValueError("needs three sizes in mm (x, y, z), each above 0 and at most 10000")
        return value

    @model_validator(mode="after")
    def _fits_process(self) -> Machine:
        if self.process == "fdm" and self.nozzle_mm is None:
            raise KeyProblem("nozzle_mm", "nozzle_mm is required for an fdm machine")
        if self.process != "fdm" and self.nozzle_mm is not None:
            raise KeyProblem("nozzle_mm", "only fdm machines have a nozzle_mm")
        if self.process == "laser" and self.kerf_mm is None:
            raise KeyProblem("kerf_mm", "kerf_mm is required for a laser machine")
        if self.process != "laser" and self.kerf_mm is not None:
            raise KeyProblem("kerf_mm", "only laser machines have a kerf_mm")
        if self.process != "fdm" and self.slicer is not None:
            raise KeyProblem("slicer", "slicer settings are only for fdm machines")
        for table in DRIVER_TABLES:
            if table != self.driver and getattr(self, table) is not None:
                raise KeyProblem(table, f"[{table}] is given but driver is {self.driver!r}")
        if self.driver in ("octoprint", "hotfolder") and getattr(self, self.driver) is None:
            raise KeyProblem("driver", f"driver {self.driver!r} needs a [{self.driver}] table")
        if self.process == "fdm":
            self._check_filaments()
        return self

    def _check_filaments(self) -> None:
        settings = self.slicer_settings
        for material in self.materials:
            if material.casefold() not in {*settings.temperatures, *FILAMENTS}:
                raise KeyProblem(
                    "materials",
                    f"no temperatures known for {material!r}: add a "
                    f"[machines.slicer.temperatures.{material}] table with nozzle and bed",
                )
        if self.nozzle_mm is not None and settings.layer_height_mm > self.nozzle_mm * 0.8:
            raise KeyProblem(
                "slicer.layer_height_mm",
                f"{settings.layer_height_mm} mm is too thick for a {self.nozzle_mm} mm nozzle "
                "(at most 80 % of it)",
            )

    @property
    def slicer_settings(self) -> SlicerSettings:
        return self.slicer or SlicerSettings()

    @property
    def simulator_options(self) -> SimulatorOptions:
        return self.simulator or SimulatorOptions()

    def takes(self, material: str) -> bool:
        return material.casefold() in {m.casefold() for m in self.materials}

    def filament(self, material: str) -> tuple[Temperatures, float | None]:
        """Temperatures and density for a material this machine takes (config first)."""
        key = material.casefold()
        known = FILAMENTS.get(key)
        temps = self.slicer_settings.temperatures.get(key) or (known[0] if known else None)
        if temps is None:
            raise ConfigError(f"no temperatures known for {material!r}", field="materials")
        return temps, known[1] if known else None

    def directory_entry(self) -> dict[str, Any]:
        """The machine as the hub's fablab directory describes machines."""
        entry: dict[str, Any] = {
            "process": self.process,
            "materials": list(self.materials),
            "build_volume_mm": list(self.build_volume_mm),
            "count": 1,
        }
        if self.nozzle_mm is not None:
            entry["nozzle_mm"] = self.nozzle_mm
        if self.kerf_mm is not None:
            entry["kerf_mm"] = self.kerf_mm
        return entry


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("dgml", appauthor=False)) / "agent"


class AgentSettings(Strict):
    """The ``[agent]`` table."""

    server: str
    state_dir: Path = Field(default_factory=default_state_dir)
    accept: Literal["auto", "manual"] = "auto"
    max_parallel_jobs: int = Field(default=1, ge=1, le=64)
    prusa_slicer: str = Field(default="prusa-slicer", min_length=1)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        """HTTPS, except to this machine: an agent token must not cross a network in clear."""
        match = re.match(r"^(https?)://(\[[^\]]+\]|[^/:\s]+)(:\d+)?(/\S*)?$", value)
        if not match:
            raise ValueError("must be a URL such as https://hub.example.org")
        scheme, host = match.group(1), match.group(2)
        if scheme == "http" and host not in ("localhost", "127.0.0.1", "[::1]"):
            raise ValueError("must use https:// (plain http only to localhost)")
        return value.rstrip("/")


class AgentConfig(Strict):
    """The whole file: ``[agent]`` and one ``[[machines]]`` table per machine."""

    agent: AgentSettings
    machines: list[Machine] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        seen: set[str] = set()
        for index, machine in enumerate(self.machines):
            if machine.name.casefold() in seen:
                raise KeyProblem(
                    f"machines.{index}.name", f"another machine is named {machine.name!r}"
                )
            seen.add(machine.name.casefold())
        return self

    def machine(self, name: str) -> Machine:
        for machine in self.machines:
            if machine.name == name:
                return machine
        raise ConfigError(f"no machine named {name!r} in the config", field="machines")


# --- reading -------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line numbers (1-based) of the tables and keys of a TOML text, by their path.

    Array-of-tables entries get their index, as pydantic reports them: ``("machines", 0,
    "name")``. Keys inside multi-line values are not seen, which only costs precision.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            parts = _split_key(header.group(2))
            base = _resolve_arrays(parts[:-1], counts)
            table = (*base, parts[-1])
            if header.group(1) == "[[":
                counts[table] = counts.get(table, -1) + 1
                table = (*table, counts[table])
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_split_key(key.group(1))), number)
    return lines


def _resolve_arrays(
    parts: tuple[str, ...], counts: dict[tuple[str | int, ...], int]
) -> tuple[str | int, ...]:
    """``machines.slicer`` inside the latest ``[[machines]]`` is ``machines.<n>.slicer``."""
    path: tuple[str | int, ...] = ()
    for part in parts:
        path = (*path, part)
        if path in counts:
            path = (*path, counts[path])
    return path


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _explain(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_config(
    text: str, *, source: str = "agent.toml", base_dir: Path | None = None
) -> AgentConfig:
    """The config in ``text``; relative paths are taken from ``base_dir`` (the file's folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, text, source) from None
    return _resolve_paths(config, base_dir or Path.cwd())


def _config_error(exc: ValidationError, text: str, source: str) -> ConfigError:
    error = exc.errors()[0]
    loc: tuple[str | int, ...] = tuple(error["loc"])
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, KeyProblem):
        loc += tuple(int(p) if p.isdigit() else p for p in problem.key.split("."))
    line = _line_of(loc, key_lines(text))
    where = f"{source}:{line}" if line else source
    key = _dotted(loc) or "(top level)"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{where}: {key}: {_explain(error)}{tail}", field=key, line=line)


def _resolve_paths(config: AgentConfig, base: Path) -> AgentConfig:
    agent = config.agent.model_copy(update={"state_dir": base / config.agent.state_dir})
    machines = []
    for machine in config.machines:
        if machine.hotfolder is not None:
            folder = machine.hotfolder.model_copy(update={"path": base / machine.hotfolder.path})
            machine = machine.model_copy(update={"hotfolder": folder})
        machines.append(machine)
    return config.model_copy(update={"agent": agent, "machines": machines})


def load_config(path: Path | str) -> AgentConfig:
    """Read and check the config file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with `dgml agent init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent)
