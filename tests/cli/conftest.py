"""Fixtures for the maker's command line: the CLI run in this process against ``live_server``,
with its own config dir, and designs published on the hub through the API."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from dgml.cli import main
from tests.conftest import Account, mesh

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
