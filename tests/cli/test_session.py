"""A maker's session from start to end, and the executable as a shell runs it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import API, LYON, REPO, publish_folder

DGML = shutil.which("dgml", path=str(Path(sys.executable).parent)) or "dgml"


def run_dgml(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DGML, *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::getpass.GetPassWarning")
def test_a_makers_session(dgml, live_server, alice, bob, workdir, hub_worker, lab_agent):
    """login, search, fetch, change a file, push, fork, change a parameter, propose, build and
    validate offline, then order the part near Lyon and follow it until a fablab's agent has
    made it."""
    publish_folder(live_server, alice, REPO / "designs" / "wall-bracket")
    publish_folder(live_server, bob, REPO / "designs" / "cable-clip")

    login = dgml("login", "--server", live_server, input=bob.token + "\n")
    assert login.code == 0, login.stderr

    found = dgml("search", "bracket", "--process", "fdm", "--json")
    assert found.code == 0, found.stderr
    [row] = found.json()
    assert row["design"] == "alice/wall-bracket"
    assert row["license"] == "CERN-OHL-P-2.0"
    assert row["latest_version"] == 1

    # His own design: fetch, change a file, push.
    assert dgml("fetch", "bob/cable-clip").code == 0
    clip = workdir / "cable-clip"
    readme = clip / "README.md"
    readme.write_text(readme.read_text() + "\nPrinted fine in PETG at 0.2 mm layers.\n")
    status = dgml("status", "--json", cwd=clip).json()
    assert status["changed"] == ["README.md"]
    pushed = dgml("push", "-m", "Note on printing", "--wait", "0", "--json", cwd=clip)
    assert pushed.code == 0, pushed.stderr
    assert pushed.json()["version"] == 2

    # Someone else's design: fork it, change a parameter, push to the fork, propose it back.
    forked = dgml("fork", "alice/wall-bracket")
    assert forked.code == 0, forked.stderr
    bracket = workdir / "wall-bracket"
    manifest = json.loads((bracket / "manifest.json").read_text())
    width = next(p for p in manifest["parameters"] if p["name"] == "width")
    width["default"] = 25.0
    (bracket / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    assert dgml("status", "--json", cwd=bracket).json()["changed"] == ["manifest.json"]
    wider = dgml("push", "-m", "Wider by default", "--wait", "0", cwd=bracket)
    assert wider.code == 0, wider.stderr
    assert "Pushed bob/wall-bracket version 2" in wider.stdout
    parameters = httpx.get(
        f"{live_server}{API}/designs/bob/wall-bracket/versions/2/parameters"
    ).json()
    assert next(p for p in parameters["parameters"] if p["name"] == "width")["default"] == 25.0

    proposed = dgml("propose", "-m", "A wider bracket\n\n25 mm holds heavier shelves.", cwd=bracket)
    assert proposed.code == 0, proposed.stderr
    assert "to alice/wall-bracket as change request #" in proposed.stdout
    [request] = httpx.get(f"{live_server}{API}/designs/alice/wall-bracket/change-requests").json()[
        "items"
    ]
    assert request["from"] == {"owner": "bob", "name": "wall-bracket", "version": 2}
    assert request["title"] == "A wider bracket"

    # Offline: no hub is needed to build the parts and check them.
    offline = {"DGML_SERVER": "http://127.0.0.1:9"}
    built = dgml("build", ".", "-o", str(workdir / "parts"), cwd=bracket, env=offline)
    assert built.code == 0, built.stderr
    checked = dgml("validate", str(workdir / "parts" / "bracket.stl"), "--json", env=offline)
    assert checked.code == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["verdict"] in ("pass", "warn")
    assert sorted(report["metrics"]["size_mm"]) == pytest.approx([25.0, 50.0, 50.0], abs=0.01)
    # The build output sits outside the working copy; the copy is still clean.
    assert dgml("status", "--json", cwd=bracket).json()["clean"] is True
    log = dgml("log", "--json", cwd=bracket).json()
    assert [(v["number"], v["kind"]) for v in log] == [(2, "push"), (1, "fork")]

    # Have two made near Lyon, 30 mm wide: the hub builds them, checks the part and offers it
    # to the nearest fablab, whose agent slices and makes them.
    near = f"{LYON[0]},{LYON[1]}"
    ordering = ("order", "bob/wall-bracket@2", "--process", "fdm", "--material", "PETG")
    placed = dgml(*ordering, "--qty", "2", "--near", near, "--param", "width=30", "--wait", "300")
    assert placed.code == 0, placed.stderr + hub_worker.read_text()
    assert "Order 1: bob/wall-bracket@2 with width=30, 2 x fdm in petg" in placed.stdout
    assert f"at Atelier de Villeurbanne ({lab_agent.id}), 4.1 km away" in placed.stdout
    assert "km avoided against making it at the central factory" in placed.stdout
    watched = dgml("order-status", "1", "--watch", "--timeout", "300")
    assert watched.code == 0, watched.stderr + hub_worker.read_text()
    assert f"Atelier de Villeurbanne ({lab_agent.id}) completed line 1" in watched.stdout
    assert watched.stdout.rstrip().endswith("Order 1 is completed.")
    [mine] = dgml("orders", "--json").json()
    assert (mine["id"], mine["state"], mine["design"]) == (1, "completed", "bob/wall-bracket")
    assert dgml("order-status", "1", "--json").json()["params"] == {"width": 30}


@pytest.mark.slow
def test_push_waits_for_the_geometry_verdict(live_server, alice, cube_design, run_jobs, tmp_path):
    env = {"DGML_CONFIG_DIR": str(tmp_path / "config"), "DGML_SERVER": live_server}
    env["DGML_TOKEN"] = alice.token
    assert run_dgml("fetch", "alice/cube", cwd=tmp_path, env=env).returncode == 0
    copy = tmp_path / "cube"
    (copy / "cube.stl").write_bytes((REPO / "tests" / "data" / "round.stl").read_bytes())
    process = subprocess.Popen(
        [DGML, "push", "-m", "round", "--wait", "120", "--json"],
        cwd=copy,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while process.poll() is None:
            run_jobs()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.5)
    finally:
        if process.poll() is None:
            process.kill()
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["verdict"] == "pass"
    assert tomllib.loads((copy / "dgml.toml").read_text())["origin"]["version"] == 2


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    env = {"DGML_CONFIG_DIR": str(tmp_path / "config")}
    plain = run_dgml("status", cwd=tmp_path, env=env)
    assert plain.returncode == 1
    assert plain.stderr.count("\n") == 1
    assert "Traceback" not in plain.stderr
    debug = run_dgml("--debug", "status", cwd=tmp_path, env=env)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    usage = run_dgml("fetch", cwd=tmp_path, env=env)
    assert usage.returncode == 2
    down = run_dgml("search", "--server", "http://127.0.0.1:9", cwd=tmp_path, env=env)
    assert down.returncode == 1
    assert "cannot reach the hub at http://127.0.0.1:9" in down.stderr
    assert "Traceback" not in down.stderr


def test_shell_completion_is_available(tmp_path):
    script = run_dgml("--show-completion", "bash", cwd=tmp_path, env={})
    assert script.returncode == 0, script.stderr
    assert "complete" in script.stdout
    assert "_DGML_COMPLETE" in script.stdout

    def complete(words: str) -> set[str]:
        completions = subprocess.run(
            [DGML],
            env={
                **os.environ,
                "_DGML_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split()) - 1),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completions.returncode == 0, completions.stderr
        return set(completions.stdout.split())

    assert {"push", "pull"} <= complete("dgml pu")
    assert complete("dgml ord") == {"order", "orders", "order-status", "order-cancel"}
    assert {"--watch", "--timeout"} <= complete("dgml order-status 3 --")
