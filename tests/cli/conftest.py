"""Fixtures for the maker's command line: the CLI run in this process against ``live_server``,
with its own config dir, and designs published on the hub through the API.

Orders need the rest of a hub: ``hub_worker`` runs ``dgml worker`` (checks, builds,
placements) in a process of its own, and ``lab_agent`` registers a fablab in Villeurbanne
through the API and runs ``dgml agent`` for it, with a simulated FDM machine and the real
PrusaSlicer, as an operator would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from dgml.cli import main
from dgml.settings import Settings
from tests.conftest import Account, mesh
from tests.workers.conftest import prusa_slicer  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[2]
API = "/api/v1"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    @property
    def one_line_error(self) -> bool:
        lines = self.stderr.strip().splitlines()
        return len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in self.stderr


@dataclass
class Cli:
    """Runs ``dgml ARGS`` in this process, in ``cwd``, with the maker's environment."""

    env: dict[str, str | None]
    cwd: Path

    def __call__(
        self,
        *args: str,
        cwd: Path | None = None,
        input: str | None = None,
        env: dict[str, str | None] | None = None,
    ) -> Result:
        runner = CliRunner()
        before = Path.cwd()
        code = 0
        with runner.isolation(input=input, env={**self.env, **(env or {})}) as (out, err, _):
            os.chdir(cwd or self.cwd)
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                os.chdir(before)
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
        return Result(code, stdout, stderr)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def workdir(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def dgml(config_dir, workdir) -> Cli:
    """The CLI with no login, no DGML_SERVER and no DGML_TOKEN from the outside."""
    return Cli(
        env={
            "DGML_CONFIG_DIR": str(config_dir),
            "DGML_SERVER": None,
            "DGML_TOKEN": None,
            "DGML_DEBUG": None,
        },
        cwd=workdir,
    )


@pytest.fixture
def logged_in(dgml, live_server) -> Callable[[Account], None]:
    """Log the CLI in to the live hub as ``account``."""

    def login(account: Account) -> None:
        result = dgml("login", "--server", live_server, "--token", account.token)
        assert result.code == 0, result.stderr

    return login


def publish(
    server: str,
    account: Account,
    name: str,
    files: Sequence[tuple[str, bytes]],
    *,
    license: str = "CC-BY-4.0",
    tags: Sequence[str] = (),
    manifest: str | None = None,
    message: str = "first version",
) -> dict:
    """Create a design and push its first version through the API."""
    body = {"name": name, "title": f"Design {name}", "license": license, "tags": list(tags)}
    created = httpx.post(f"{server}{API}/designs", json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    return push_files(server, account, f"{account.name}/{name}", files, manifest, message)


def push_files(server, account, design, files, manifest=None, message="another") -> dict:
    form = {"message": message} | ({"manifest": manifest} if manifest else {})
    pushed = httpx.post(
        f"{server}{API}/designs/{design}/versions",
        files=[("files", (path, data)) for path, data in files],
        data=form,
        headers=account.headers,
        timeout=60,
    )
    assert pushed.status_code == 201, pushed.text
    return pushed.json()


def folder_files(folder: Path) -> list[tuple[str, bytes]]:
    return [
        (p.relative_to(folder).as_posix(), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def publish_folder(server: str, account: Account, folder: Path, **kwargs) -> dict:
    """Publish a design folder of designs/ with its manifest, as its author would."""
    manifest = (folder / "manifest.json").read_text()
    license = json.loads(manifest)["license"]
    return publish(
        server,
        account,
        folder.name,
        folder_files(folder),
        license=license,
        manifest=manifest,
        **kwargs,
    )


@pytest.fixture
def cube_design(live_server, alice, redis_client) -> dict:
    """alice/cube: a 20 mm cube and a README, version 1 (published after Redis was emptied
    for this test, so ``run_jobs`` finds its checks)."""
    return publish(
        live_server,
        alice,
        "cube",
        [("cube.stl", mesh("20mm-xyz-cube.stl")), ("README.md", b"# A cube\n")],
        tags=["calibration"],
        manifest=json.dumps({"process": "fdm"}),
    )


# --- a whole hub: workers, fablabs and their agents -------------------------------------------

LYON = (45.7640, 4.8357)
VILLEURBANNE = (45.7719, 4.8902)  # 4.1 km from the rounded centre of Lyon
FDM = {"process": "fdm", "materials": ["PLA", "PETG"], "build_volume_mm": [250, 210, 210]}


@pytest.fixture
def settings(tmp_path, database_url, redis_url) -> Settings:
    """The hub of these tests: an agent's claim waits at most a second, so agents stop fast."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url,
        max_upload_bytes=4 * 1024 * 1024,
        claim_wait_max_s=1.0,
    )


def start_process(args: Sequence[str], log: Path, env: dict[str, str] | None = None):
    """``python -m dgml ARGS`` with its output in ``log``."""
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "dgml", *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_process(proc: subprocess.Popen) -> int:
    """SIGTERM, as a service manager stops it; SIGKILL if it does not end in 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


@pytest.fixture
def hub_worker(settings, redis_client, tmp_path) -> Iterator[Path]:
    """``dgml worker`` on the hub's database and Redis, serving every queue; its log."""
    log = tmp_path / "worker.log"
    env = {
        "DGML_DATA_DIR": str(settings.data_dir),
        "DGML_DATABASE_URL": settings.resolved_database_url,
        "DGML_REDIS_URL": str(settings.redis_url),
        "DGML_WORKER_TICK_S": "0.2",
        "DGML_ROUTE_RECHECK_S": "0.2",
        "DGML_ROUTE_RECHECK_MAX_S": "1",
        "DGML_LOG_FORMAT": "text",
        "DGML_LOG_LEVEL": "warning",
    }
    proc = start_process(["worker"], log, env)
    yield log
    stop_process(proc)


@dataclass
class Lab:
    id: str
    name: str
    enrolment_token: str


def register_lab(
    server: str,
    operator: Account,
    name: str,
    where: tuple[float, float],
    machines: Sequence[dict] = (FDM,),
) -> Lab:
    """A fablab registered in the directory through the API, as its operator does."""
    body = {
        "name": name,
        "location": {"lat": where[0], "lon": where[1]},
        "legal_form": "nonprofit",
        "machines": list(machines),
    }
    response = httpx.post(f"{server}{API}/fablabs", json=body, headers=operator.headers)
    assert response.status_code == 201, response.text
    answer = response.json()
    return Lab(answer["id"], name, answer["enrolment_token"])


@pytest.fixture
def operator(make_account) -> Account:
    return make_account("carol")


AGENT_CONFIG = """
[agent]
server = "{server}"
state_dir = "{state_dir}"
accept = "auto"
max_parallel_jobs = 1
prusa_slicer = "{slicer}"

[[machines]]
name = "mk3"
process = "fdm"
materials = ["PLA", "PETG"]
build_volume_mm = [250, 210, 210]
nozzle_mm = 0.4
driver = "simulator"

[machines.simulator]
duration_s = 2
speed = 1
"""


def wait_until(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def lab_agent(live_server, operator, tmp_path, prusa_slicer) -> Iterator[Lab]:  # noqa: F811
    """The Atelier de Villeurbanne, registered through the API, and ``dgml agent`` enrolled
    for it: one simulated FDM machine (a job takes 2 s) that takes every offer it can make."""
    lab = register_lab(live_server, operator, "Atelier de Villeurbanne", VILLEURBANNE)
    folder = tmp_path / "lab"
    folder.mkdir()
    config = folder / "agent.toml"
    config.write_text(
        AGENT_CONFIG.format(server=live_server, state_dir=folder / "state", slicer=prusa_slicer)
    )
    log = folder / "agent.log"
    proc = start_process(
        ["agent", "--config", str(config), "--enrol", lab.enrolment_token, "--grace", "2"], log
    )
    try:
        wait_until(
            lambda: (folder / "state" / "status.json").exists() or proc.poll() is not None,
            f"the agent to enrol ({log})",
        )
        assert proc.poll() is None, log.read_text()
        yield lab
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()
