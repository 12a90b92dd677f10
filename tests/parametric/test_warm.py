"""The warm sandbox's own promises: one zygote, reused; each build starts clean; a zygote that
dies or hangs is replaced; builds run cold when it cannot be had; nothing outlives its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from registry.parametric import warm
from registry.parametric.build import build_design
from registry.parametric.sandbox import Layers

from .conftest import (
    CAD,
    FAST,
    WARM_MEMORY,
    build_children,
    build_in,
    needs_kernel_layers,
    script,
    still_running,
)

pytestmark = needs_kernel_layers
WARM = replace(FAST, memory_bytes=WARM_MEMORY)
# Root, no Landlock and no hook: the script may look at its own /proc entries.
LOOKING = Layers(drop_privileges=False, landlock=False, audit_hook=False)


def zygote_processes(owner: int | None = None) -> list[int]:
    """Every process of a zygote (``unshare`` and the zygote), of ``owner``'s if given."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"registry.parametric.zygote" in command and (
            owner is None or str(owner).encode() in command
        ):
            found.append(int(entry.name))
    return found


def zygote_pid() -> int:
    """The zygote of this process (the Python process, not ``unshare``)."""
    unshare = warm._zygotes[True].process.pid
    children = Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split()
    return int(children[0])


def inspect(out_dir: Path, mode: str = "warm") -> dict:
    result = build_in(mode, script("inspect_process"), {}, out_dir, FAST, layers=LOOKING)
    assert "INSPECT " in result.log, result.error
    return json.loads(result.log.split("INSPECT ", 1)[1].splitlines()[0])


def wait_until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_warm_build_starts_clean_in_namespaces_of_its_own(tmp_path):
    first, second = inspect(tmp_path / "a"), inspect(tmp_path / "b")
    for seen in (first, second):
        # stdin, stdout, stderr, the listing's own and the pipe that tells the zygote the end
        assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) <= 5
        assert (seen["threads"], seen["tasks"]) == (1, 1)
        assert seen["name"] == "dgml-build" and seen["pid"] == 2
        assert seen["cadquery"]  # imported once, by the zygote
        assert seen["home"] == seen["cwd"]
    assert first["net"] != second["net"] and first["pid_ns"] != second["pid_ns"]
    assert first["net"] != os.readlink("/proc/self/ns/net")
    cold = inspect(tmp_path / "c", mode="cold")
    assert not cold["cadquery"] and cold["fds"][:3] == [0, 1, 2]


def test_one_zygote_serves_every_build_and_has_no_thread(tmp_path):
    first = build_in("warm", script("box"), {}, tmp_path / "a", CAD)
    zygote = zygote_pid()
    second = build_in("warm", script("box"), {"width": 30}, tmp_path / "b", CAD)
    assert first.ok and second.ok, (first.error, second.error)
    assert zygote_pid() == zygote
    assert len(os.listdir(f"/proc/{zygote}/task")) == 1
    assert (tmp_path / "b" / "box.stl").stat().st_size > 84


def test_builds_at_the_same_time_each_get_their_own_process(tmp_path):
    results = {}

    def run(width: float) -> None:
        results[width] = build_design(
            script("box"), None, {"width": width}, tmp_path / str(width), CAD, mode="warm"
        )

    threads = [threading.Thread(target=run, args=(w,)) for w in (20.0, 25.0, 30.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for width, result in results.items():
        assert result.ok and result.mode == "warm", result.error
        assert result.parameters["width"] == width
    assert len({r.parts[0].files[0].sha256 for r in results.values()}) == 3
    assert build_children() == []


def test_a_zygote_that_died_is_replaced_and_leaves_nothing(tmp_path):
    build_in("warm", script("box"), {}, tmp_path / "a", CAD)
    old = warm._zygotes[True].process
    os.killpg(old.pid, signal.SIGKILL)
    old.wait(10)
    result = build_in("warm", script("box"), {}, tmp_path / "b", CAD)
    assert result.ok, result.error
    assert warm._zygotes[True].process.pid != old.pid
    assert old.pid not in zygote_processes()


def test_a_zygote_that_stops_answering_is_killed_and_the_build_timed_out(tmp_path):
    build_in("warm", script("box"), {}, tmp_path / "a", CAD)
    unshare = warm._zygotes[True].process
    os.kill(zygote_pid(), signal.SIGSTOP)
    started = time.monotonic()
    result = build_in("warm", script("loop"), {}, tmp_path / "b", replace(WARM, seconds=1))
    assert not result.ok and result.limit == "time"
    assert time.monotonic() - started < warm.KILL_GRACE + 10
    assert unshare.poll() is not None  # killed, with every process in its namespace
    assert build_children() == []
    assert build_in("warm", script("box"), {}, tmp_path / "c", CAD).ok


def test_without_a_zygote_builds_run_cold(tmp_path, monkeypatch):
    starts = []

    def cannot_start(self):
        starts.append(self)
        raise warm.ZygoteError("no zygote here")

    monkeypatch.setattr(warm, "_zygotes", {})
    monkeypatch.setattr(warm, "_failed", {})
    monkeypatch.setattr(warm.Zygote, "start", cannot_start)
    for name in ("a", "b"):
        result = build_design(script("box"), None, {}, tmp_path / name, CAD, mode="warm")
        assert result.ok and result.mode == "cold", result.error
    assert len(starts) == 1  # no second try before RETRY_AFTER


def test_a_memory_cap_too_small_for_the_zygote_runs_cold(tmp_path):
    result = build_design(script("box"), None, {}, tmp_path, replace(CAD, memory_bytes=2**30))
    assert result.mode == "cold" and result.ok, result.error


OWNER = """
import sys
from pathlib import Path
from registry.parametric.build import build_design
from registry.parametric.sandbox import Limits
source = "import time\\ntime.sleep(600)\\n"
build_design(source, None, {}, Path(sys.argv[1]), Limits(seconds=300), mode="warm")
"""


def test_the_zygote_and_its_builds_end_with_their_owner(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: build_children() != [], 120)
        builds = build_children()
        zygote = zygote_processes(owner.pid)
        assert zygote != []
    finally:
        owner.kill()
        owner.wait()
    # Orphans would leave this process's tree: follow the very processes seen before.
    assert wait_until(lambda: still_running(zygote + builds) == [])
