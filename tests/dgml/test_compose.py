"""compose.yaml follows the Compose specification (its JSON schema, or ``docker compose config``
where Docker has the compose plugin), describes the stack the hub needs, and every ``dgml``
command that it or the Dockerfile runs exists."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
HUB_SERVICES = ("migrate", "api", "worker-validate", "worker-build", "worker-route")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def compose_schema() -> dict[str, Any]:
    """The Compose specification's schema, as the check-jsonschema package ships it."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_follows_the_compose_specification(compose):
    assert schema_errors(compose) == []


def test_the_schema_check_catches_mistakes(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["comand"] = broken["services"]["api"].pop("command")
    broken["services"]["redis"]["healthcheck"]["test"] = {"ping": True}
    errors = schema_errors(broken)
    assert any(e.startswith("services/api") and "comand" in e for e in errors), errors
    assert any(e.startswith("services/redis/healthcheck/test") for e in errors), errors


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=60
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_works(), reason="docker compose is not installed here")
def test_docker_compose_accepts_the_file():
    env = {**os.environ, "POSTGRES_PASSWORD": "checked-only"}
    result = subprocess.run(
        ["docker", "compose", "--file", str(COMPOSE), "--profile", "agent", "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_has_what_the_hub_needs(compose):
    services = compose["services"]
    expected = {"postgres", "redis", *HUB_SERVICES, "scheduler", "reconciler", "agent"}
    assert expected <= set(services)
    redis_command = " ".join(services["redis"]["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in redis_command
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "--workers" in services["api"]["command"]
    for name in HUB_SERVICES:
        environment = services[name]["environment"]
        assert environment["DGML_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["DGML_REDIS_URL"].startswith("redis://")
        assert "blobs:/var/lib/dgml/blobs" in services[name]["volumes"]
    for name in set(HUB_SERVICES) - {"migrate"}:
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "postgres:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis:/data" in services["redis"]["volumes"]
    assert {"postgres", "redis", "blobs"} <= set(compose["volumes"])


def test_the_agent_holds_no_hub_credentials(compose):
    agent = compose["services"]["agent"]
    assert not {"DGML_DATABASE_URL", "DGML_REDIS_URL"} & set(agent.get("environment", {}))
    assert "volumes" not in agent or "blobs:/var/lib/dgml/blobs" not in agent["volumes"]


def _argv(value: str | list[str]) -> list[str]:
    return list(value) if isinstance(value, list) else shlex.split(value)


def _dgml_calls(argv: list[str]) -> list[list[str]]:
    """The dgml invocations in a command line: the simple commands whose program is dgml."""
    calls, current = [], []
    for token in [*argv, ";"]:
        if token in SHELL_OPERATORS:
            if current and Path(current[0]).name == "dgml":
                calls.append(current[1:])
            current = []
        elif not re.match(r"^\d?>", token):  # a redirection
            current.append(token)
    return calls


def compose_commands(compose: dict[str, Any]) -> list[list[str]]:
    calls = []
    for service in compose["services"].values():
        for key in ("entrypoint", "command"):
            if key in service:
                calls += _dgml_calls(_argv(service[key]))
        test = service.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
            rest = test[1:]
            calls += _dgml_calls(shlex.split(rest[0]) if test[0] == "CMD-SHELL" else rest)
    return calls


def dockerfile_commands(text: str) -> list[list[str]]:
    calls = []
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() not in ("RUN", "CMD", "ENTRYPOINT"):
            continue
        rest = rest.strip()
        calls += _dgml_calls(json.loads(rest) if rest.startswith("[") else shlex.split(rest))
    return calls


def test_every_dgml_command_named_exists(compose):
    calls = compose_commands(compose) + dockerfile_commands(DOCKERFILE.read_text())
    assert {"migrate", "serve", "worker", "agent"} <= {c[0] for c in calls if c}
    for call in {tuple(c) for c in calls}:
        result = subprocess.run(
            [sys.executable, "-m", "dgml", *call, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"dgml {' '.join(call)}: {result.stderr or result.stdout}"


def test_the_dockerfile_builds_non_root_images_with_the_slicer_for_agents():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    by_name = {s.split()[2]: s for s in stages if len(s.split()) > 2 and s.split()[1] == "AS"}
    assert {"build", "runtime", "agent", "hub"} <= set(by_name)
    assert "pip install ." in by_name["build"]
    assert "prusa-slicer" in by_name["agent"]
    for final in ("agent", "hub"):
        assert re.search(r"^USER dgml$", by_name[final], re.MULTILINE)
    assert stages[-1].startswith("runtime AS hub")  # the default target is the hub


def test_the_sample_agent_config_is_one_the_agent_accepts(compose, tmp_path):
    from workers.config import load_config

    agent = compose["services"]["agent"]
    (mounted,) = [c for c in agent["configs"] if c["source"] == "fablab"]
    path = tmp_path / Path(mounted["target"]).name
    path.write_text(compose["configs"]["fablab"]["content"])
    config = load_config(path)
    server = agent["command"][agent["command"].index("--server") + 1]
    assert config.agent.server == server
    assert [m.driver for m in config.machines] == ["simulator"]
