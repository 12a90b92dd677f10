"""Each attack a script might try is stopped, reported, and leaves the machine as it was.

Every attack runs against all layers, against the kernel's layers alone (no audit hook) and
against the audit hook alone, so each set is known to hold on its own; and each runs in a fresh
child (cold) and in a process forked by the pre-warmed zygote (warm).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from registry.parametric.sandbox import Layers

from .conftest import (
    ALL,
    CAD,
    FAST,
    HOOK_ONLY,
    KERNEL_ONLY,
    LAYER_SETS,
    build_children,
    build_in,
    limits_for,
    needs_kernel_layers,
    script,
)

# Native code (OpenCascade) is below the audit hook: only the kernel's layers hold it.
WITH_KERNEL_LAYERS = [
    pytest.param(ALL, id="all-layers", marks=needs_kernel_layers),
    pytest.param(KERNEL_ONLY, id="kernel-only", marks=needs_kernel_layers),
]


def files_in(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def assert_nothing_leaked(result, out_dir: Path, secret: str) -> None:
    assert not result.ok
    assert secret not in result.log
    assert secret not in (result.error or "")
    assert secret not in json.dumps(result.model_dump())
    for file in files_in(out_dir):
        assert secret.encode() not in file.read_bytes()


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_an_endless_loop_is_stopped_by_the_time_cap(mode, layers, out_dir):
    result = build_in(mode, script("loop"), {}, out_dir, replace(FAST, seconds=1.5), layers=layers)
    assert not result.ok and result.limit == "time"
    assert "time cap of 1.5 s" in result.error
    assert result.seconds < 10
    assert build_children() == []


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_asking_for_20_gb_hits_the_memory_cap(mode, layers, out_dir):
    result = build_in(mode, script("memory"), {}, out_dir, FAST, layers=layers)
    assert not result.ok and result.limit == "memory"
    cap = limits_for(FAST, mode).memory_bytes // 2**20
    assert "MemoryError" in result.error and f"memory cap of {cap} MiB" in result.error


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_a_fork_bomb_is_refused_or_capped_and_leaves_nothing(mode, layers, out_dir):
    result = build_in(mode, script("forkbomb"), {}, out_dir, FAST, layers=layers)
    assert not result.ok
    if layers.audit_hook:
        assert "refuses os.fork" in result.error
    else:
        assert result.limit == "processes"
    assert result.seconds < 15
    assert build_children() == []


@needs_kernel_layers
def test_a_process_that_leaves_the_session_dies_with_the_build(mode, out_dir):
    result = build_in(mode, script("escape_session"), {}, out_dir, FAST, layers=KERNEL_ONLY)
    assert not result.ok and "left a process behind" in result.error
    assert build_children() == []


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_reading_etc_passwd_never_reaches_the_result(mode, layers, out_dir):
    passwd_line = Path("/etc/passwd").read_text().splitlines()[0]
    result = build_in(mode, script("read_to_file"), {}, out_dir, FAST, layers=layers)
    assert_nothing_leaked(result, out_dir, passwd_line)
    assert "PermissionError" in result.error
    if layers.audit_hook:
        assert "refuses open('/etc/passwd') for reading" in result.error


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_a_file_in_the_data_dir_cannot_be_read(mode, layers, out_dir, data_dir):
    path, secret = data_dir
    values = {"path": str(path / "secret.txt")}
    result = build_in(mode, script("read_to_file"), values, out_dir, FAST, layers=layers)
    assert_nothing_leaked(result, out_dir, secret)
    assert "PermissionError" in result.error


def test_a_read_file_cannot_become_a_text_part(mode, out_dir, data_dir):
    path, secret = data_dir
    values = {"path": str(path / "secret.txt")}
    result = build_in(mode, script("read_to_text"), values, out_dir, CAD)
    assert_nothing_leaked(result, out_dir, secret)
    assert result.parts == [] and files_in(out_dir) == []


@pytest.mark.parametrize("layers", WITH_KERNEL_LAYERS)
def test_opencascade_cannot_read_the_data_dir(mode, layers, out_dir, data_dir):
    path, _ = data_dir
    values = {"path": str(path / "part.step")}
    result = build_in(mode, script("import_step"), values, out_dir, CAD, layers=layers)
    assert not result.ok and "STEP File could not be loaded" in result.error
    assert files_in(out_dir) == []


def test_without_landlock_opencascade_reads_what_the_hook_cannot_see(mode, out_dir, data_dir):
    """The known gap of the hook-only fallback: native code is below Python's audit hooks."""
    path, _ = data_dir
    values = {"path": str(path / "part.step")}
    result = build_in(mode, script("import_step"), values, out_dir, CAD, layers=HOOK_ONLY)
    assert result.ok, result.error


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_writing_outside_the_working_dir_fails(mode, layers, out_dir):
    target = Path(f"/tmp/escape-{uuid.uuid4().hex}")
    values = {"target": str(target)}
    try:
        result = build_in(mode, script("write_outside"), values, out_dir, FAST, layers=layers)
        assert not result.ok and "PermissionError" in result.error
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.parametrize("layers", WITH_KERNEL_LAYERS)
def test_opencascade_cannot_write_outside_the_working_dir(mode, layers, out_dir):
    target = Path(f"/tmp/escape-{uuid.uuid4().hex}.stl")
    try:
        result = build_in(
            mode, script("write_outside_cad"), {"target": str(target)}, out_dir, CAD, layers=layers
        )
        assert not target.exists()
        assert result.ok  # the export said nothing; the file simply is not there
    finally:
        target.unlink(missing_ok=True)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_a_socket_to_127_0_0_1_connects_to_nothing(mode, layers, out_dir, listener):
    values = {"port": listener.getsockname()[1]}
    result = build_in(mode, script("socket_connect"), values, out_dir, FAST, layers=layers)
    assert not result.ok
    if layers.audit_hook:
        assert "refuses socket" in result.error
    assert_no_connection(listener)


@needs_kernel_layers
def test_the_network_namespace_alone_keeps_the_script_off_the_network(mode, out_dir, listener):
    layers = Layers(audit_hook=False, landlock=False)
    values = {"port": listener.getsockname()[1]}
    result = build_in(mode, script("socket_connect"), values, out_dir, FAST, layers=layers)
    assert not result.ok and "Network is unreachable" in result.error
    assert_no_connection(listener)


@pytest.mark.parametrize("layers", LAYER_SETS)
@pytest.mark.parametrize("attack", ["os_system", "subprocess_run"])
def test_no_program_can_be_started(mode, layers, attack, out_dir):
    marker = Path(f"/tmp/marker-{uuid.uuid4().hex}")
    try:
        result = build_in(
            mode, script(attack), {"marker": str(marker)}, out_dir, FAST, layers=layers
        )
        assert not result.ok
        assert not marker.exists()
        if layers.audit_hook:
            assert "the build sandbox refuses" in result.error
    finally:
        marker.unlink(missing_ok=True)


def test_a_huge_file_hits_the_output_cap(mode, out_dir):
    result = build_in(mode, script("output_flood"), {}, out_dir, FAST)
    assert not result.ok and result.limit == "output"
    assert "output cap of 8 MiB per file" in result.error


def test_a_refusal_fails_the_build_even_when_the_script_catches_it(mode, out_dir):
    source = (
        "try:\n    open('/etc/hostname').read()\nexcept OSError:\n    pass\n"
        "import cadquery as cq\nresult = cq.Workplane().box(1, 1, 1)\n"
    )
    result = build_in(mode, source, {}, out_dir, CAD)
    assert not result.ok
    assert result.error == (
        "the build sandbox refused open('/etc/hostname') for reading outside the allowed "
        "directories"
    )


@needs_kernel_layers
def test_the_script_runs_unprivileged_in_a_scrubbed_empty_directory(mode, out_dir):
    result = build_in(mode, script("whoami"), {}, out_dir, FAST)
    seen = json.loads(result.log.split("WHOAMI ", 1)[1].splitlines()[0])
    assert (seen["uid"], seen["gid"], seen["groups"]) == (65534, 65534, [])
    assert seen["pid"] != os.getpid() and seen["pid"] <= 3  # a PID namespace of its own
    assert set(seen["env"]) <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "MALLOC_ARENA_MAX",
    }
    assert seen["env"]["HOME"] == seen["cwd"]
    assert seen["files"] == ["design.py"]
    assert not Path(seen["cwd"]).exists()  # the sandbox dir is gone after the build
    assert result.sandbox[:2] == ["network namespace", "pid namespace"]
    assert "user 65534" in result.sandbox and "audit hook" in result.sandbox
    assert any(layer.startswith("landlock ABI") for layer in result.sandbox)


@pytest.mark.parametrize(
    "layers", [pytest.param(ALL, id="all-layers"), pytest.param(HOOK_ONLY, id="hook-only")]
)
def test_the_hook_cannot_be_switched_off_from_inside(mode, layers, out_dir):
    passwd_line = Path("/etc/passwd").read_text().splitlines()[0]
    result = build_in(mode, script("tamper_hook"), {}, out_dir, FAST, layers=layers)
    assert_nothing_leaked(result, out_dir, passwd_line)
    assert "found the hook" not in result.log
    assert "refuses replacing a function's __code__" in result.log
    assert "refuses open('/etc/passwd') for reading" in result.error


@pytest.mark.slow
@needs_kernel_layers
def test_the_build_ends_on_its_own_when_the_parent_is_gone():
    """A parent that dies never kills its child; the namespace's first process keeps a
    deadline of its own (the wall clock plus 5 s) and takes every process with it."""
    import subprocess
    import sys
    import time

    from registry.parametric.sandbox import Limits, Sandbox, namespace_command

    source = "import time\n\ntime.sleep(600)\n"
    with Sandbox(Limits(seconds=1)) as box:
        box.put_script("design.py", source)
        box._job({"source": source, "filename": "design.py", "values": {}, "process": None})
        command = [sys.executable, "-I", "-m", "registry.parametric.child", str(box.root)]
        orphan = subprocess.Popen(
            [*namespace_command(), *command],
            cwd=box.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(1)
        assert build_children() != []  # nobody is watching the clock but PID 1
        orphan.wait(timeout=20)
        assert build_children() == []
