"""The agent's TOML config: the starter file, a full file, and every kind of bad key, each
reported with the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgml.errors import Conflict
from workers.config import (
    ConfigError,
    key_lines,
    load_config,
    parse_config,
    starter_config,
    write_starter,
)

FULL = """\
[agent]
server = "https://hub.example.org"
state_dir = "state"
accept = "auto"
max_parallel_jobs = 3

[[machines]]
name = "mk3"
process = "fdm"
materials = ["PLA", "ASA"]
build_volume_mm = [250, 210, 210]
nozzle_mm = 0.6
driver = "octoprint"

[machines.octoprint]
url = "http://octopi.local/"
api_key_env = "MK3_KEY"

[machines.slicer]
layer_height_mm = 0.3
filament_diameter_mm = 2.85

[machines.slicer.temperatures.ASA]
nozzle = 260
bed = 105

[[machines]]
name = "laser"
process = "laser"
materials = ["plywood 3 mm"]
build_volume_mm = [600, 400, 10]
kerf_mm = 0.15
driver = "hotfolder"

[machines.hotfolder]
path = "laser-jobs"
"""


def test_the_starter_config_parses_to_one_simulated_fdm_machine(tmp_path):
    config = parse_config(starter_config(), base_dir=tmp_path)
    assert len(config.machines) == 1
    machine = config.machines[0]
    assert (machine.process, machine.driver) == ("fdm", "simulator")
    assert machine.nozzle_mm and machine.build_volume_mm
    assert config.agent.accept == "manual"
    assert config.agent.state_dir == tmp_path / "dgml-agent-state"
    assert "#" in starter_config()  # it explains itself


def test_write_starter_writes_a_loadable_file_and_keeps_an_existing_one(tmp_path):
    path = write_starter(tmp_path / "lab")
    assert path == tmp_path / "lab" / "agent.toml" or path.name == "lab"
    assert load_config(path).machines[0].driver == "simulator"
    with pytest.raises(Conflict):
        write_starter(path)
    path.write_text("# mine\n")
    write_starter(path, force=True)
    assert path.read_text() == starter_config()


def test_a_full_config(tmp_path):
    config = parse_config(FULL, base_dir=tmp_path)
    assert config.agent.accept == "auto" and config.agent.max_parallel_jobs == 3
    assert config.agent.state_dir == tmp_path / "state"
    mk3, laser = config.machines
    assert mk3.octoprint is not None and mk3.octoprint.url == "http://octopi.local"
    assert mk3.octoprint.resolved_api_key({"MK3_KEY": "k"}) == "k"
    temps, density = mk3.filament("asa")
    assert (temps.nozzle, temps.bed, density) == (260, 105, None)
    assert mk3.filament("PLA")[0].nozzle == 210
    assert mk3.slicer_settings.filament_diameter_mm == 2.85
    assert laser.hotfolder is not None and laser.hotfolder.path == tmp_path / "laser-jobs"
    assert laser.directory_entry() == {
        "process": "laser",
        "materials": ["plywood 3 mm"],
        "build_volume_mm": [600.0, 400.0, 10.0],
        "count": 1,
        "kerf_mm": 0.15,
    }
    assert config.machine("mk3") is mk3


def test_a_missing_api_key_variable_is_named(tmp_path):
    mk3 = parse_config(FULL, base_dir=tmp_path).machines[0]
    assert mk3.octoprint is not None
    with pytest.raises(ConfigError, match="MK3_KEY"):
        mk3.octoprint.resolved_api_key({})


def _line(text: str, needle: str) -> int:
    """The line that is ``needle``, or else the last one holding it (a key the mutation
    added sits below its twin)."""
    lines = list(enumerate(text.splitlines(), 1))
    exact = [n for n, line in lines if line == needle]
    return exact[-1] if exact else [n for n, line in lines if needle in line][-1]


# (what to replace, with what, the key named, the line holding this text, words of the message)
BAD = [
    ('server = "https://hub.example.org"', 'server = "http://hub.example.org"',
     "agent.server", "server =", "https"),
    ('server = "https://hub.example.org"', 'server = "hub"', "agent.server", "server =", "URL"),
    ('accept = "auto"', 'accept = "sometimes"', "agent.accept", "accept =", "auto"),
    ("max_parallel_jobs = 3", "max_parallel_jobs = 0", "agent.max_parallel_jobs",
     "max_parallel_jobs", "greater than or equal to 1"),
    ("max_parallel_jobs = 3", "max_parallel_jobs = 3\nspeed = 2", "agent.speed", "speed = 2",
     "unknown key"),
    ('name = "mk3"', 'name = "../mk3"', "machines[0].name", 'name = "../mk3"', "pattern"),
    ('name = "laser"', 'name = "MK3"', "machines[1].name", 'name = "MK3"', "another machine"),
    ('process = "fdm"', 'process = "weaving"', "machines[0].process", 'process = "weaving"',
     "fdm"),
    ('materials = ["PLA", "ASA"]', "materials = []", "machines[0].materials", "materials = []",
     "at least 1"),
    ('materials = ["PLA", "ASA"]', 'materials = ["PLA", "pla"]', "machines[0].materials",
     'materials = ["PLA", "pla"]', "twice"),
    ('materials = ["PLA", "ASA"]', 'materials = ["PLA", "PEEK"]', "machines[0].materials",
     'materials = ["PLA", "PEEK"]', "temperatures.PEEK"),
    ("build_volume_mm = [250, 210, 210]", "build_volume_mm = [250, 210]",
     "machines[0].build_volume_mm", "build_volume_mm = [250, 210]", "3 items"),
    ("build_volume_mm = [250, 210, 210]", "build_volume_mm = [250, -1, 210]",
     "machines[0].build_volume_mm", "build_volume_mm = [250, -1", "above 0"),
    ("build_volume_mm = [250, 210, 210]", "build_volume_mm = [250, nan, 210]",
     "machines[0].build_volume_mm", "build_volume_mm = [250, nan", "above 0"),
    ("nozzle_mm = 0.6\n", "", "machines[0].nozzle_mm", '[[machines]]', "required"),
    ("kerf_mm = 0.15", "kerf_mm = 0.15\nnozzle_mm = 0.4", "machines[1].nozzle_mm",
     "nozzle_mm = 0.4", "only fdm"),
    ("kerf_mm = 0.15\n", "", "machines[1].kerf_mm", "[[machines]]", "required"),
    ("nozzle_mm = 0.6", "nozzle_mm = 0.6\nkerf_mm = 0.1", "machines[0].kerf_mm",
     "kerf_mm = 0.1", "only laser"),
    ('driver = "octoprint"', 'driver = "serial"', "machines[0].driver", 'driver = "serial"',
     "simulator"),
    ('driver = "octoprint"', 'driver = "simulator"', "machines[0].octoprint",
     "[machines.octoprint]", "driver is 'simulator'"),
    ('driver = "hotfolder"', 'driver = "octoprint"', "machines[1].hotfolder",
     "[machines.hotfolder]", "driver is 'octoprint'"),
    ('path = "laser-jobs"', "", "machines[1].hotfolder.path", "[machines.hotfolder]",
     "required"),
    ('api_key_env = "MK3_KEY"', 'api_key_env = "MK3_KEY"\napi_key = "k"',
     "machines[0].octoprint", "[machines.octoprint]", "exactly one"),
    ('api_key_env = "MK3_KEY"', 'api_key_env = "MK3 KEY"', "machines[0].octoprint.api_key_env",
     "api_key_env", "pattern"),
    ('url = "http://octopi.local/"', 'url = "octopi.local"', "machines[0].octoprint.url",
     "url =", "http"),
    ("layer_height_mm = 0.3", "layer_height_mm = 0.55", "machines[0].slicer.layer_height_mm",
     "layer_height_mm", "too thick"),
    ("filament_diameter_mm = 2.85", "filament_diameter_mm = 3",
     "machines[0].slicer.filament_diameter_mm", "filament_diameter_mm", "1.75"),
    ("filament_diameter_mm = 2.85", "filament_diameter_mm = 2.85\ninfill = 20",
     "machines[0].slicer.infill", "infill = 20", "unknown key"),
    ("nozzle = 260", "nozzle = 900", "machines[0].slicer.temperatures.ASA.nozzle",
     "nozzle = 900", "less than or equal to 450"),
    ("bed = 105", "bed = 105\nchamber = 40", "machines[0].slicer.temperatures.ASA.chamber",
     "chamber = 40", "unknown key"),
    ('path = "laser-jobs"', 'path = "laser-jobs"\n[machines.slicer]\nperimeters = 2',
     "machines[1].slicer", "[machines.slicer]\nperimeters = 2", "only for fdm"),
    ("max_parallel_jobs = 3", "max_parallel_jobs = 3\n[agent.extra]\nx = 1", "agent.extra",
     "[agent.extra]", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "key", "at", "words"), BAD, ids=[b[2] + ":" + b[4] for b in BAD]
)
def test_a_bad_key_is_named_with_its_line(old, new, key, at, words):
    assert old in FULL
    text = FULL.replace(old, new, 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="lab.toml")
    error = caught.value
    assert error.data["field"] == key
    first = at.split("\n")[0]
    if first == "[[machines]]":  # the machine's own table: the first or the second one
        index = int(key.split("[")[1][0])
        expected = [n for n, line in enumerate(text.splitlines(), 1) if line == first][index]
    else:
        expected = _line(text, first)
    assert error.data["line"] == expected
    assert error.detail.startswith(f"lab.toml:{expected}: {key}: ")
    assert words in error.detail


def test_missing_tables_are_named():
    with pytest.raises(ConfigError, match="agent: required key is missing"):
        parse_config('[[machines]]\nname = "x"\n')
    with pytest.raises(ConfigError, match="machines: required key is missing"):
        parse_config('[agent]\nserver = "https://h.example.org"\n')


def test_not_toml_at_all_names_the_line():
    with pytest.raises(ConfigError, match=r"lab.toml: not valid TOML: .*line 2"):
        parse_config('[agent]\nserver = "unterminated\n', source="lab.toml")


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(binary)


def test_key_lines_follow_arrays_of_tables():
    lines = key_lines(FULL)
    assert lines[("machines", 1, "kerf_mm")] == _line(FULL, "kerf_mm")
    assert lines[("machines", 0, "slicer", "temperatures", "ASA", "bed")] == _line(FULL, "bed =")
    assert lines[("agent", "server")] == 2


def test_paths_are_relative_to_the_file(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "agent.toml").write_text(FULL)
    config = load_config(folder / "agent.toml")
    assert config.agent.state_dir == folder.resolve() / "state"
    assert config.machines[1].hotfolder is not None
    assert config.machines[1].hotfolder.path == folder.resolve() / "laser-jobs"
    assert isinstance(config.agent.state_dir, Path)
