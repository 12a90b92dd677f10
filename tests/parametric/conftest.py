"""Sample scripts, small limits, and the layer sets the attack tests run against."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from registry.parametric import landlock
from registry.parametric.build import build_design
from registry.parametric.sandbox import Layers, Limits, namespace_command

SCRIPTS = Path(__file__).parent / "scripts"
# Small caps keep the attacks fast; CadQuery builds get the default memory (its ~1.2 GB).
FAST = Limits(seconds=20, memory_bytes=1024**3, processes=16, output_bytes=8 * 1024**2)
CAD = Limits(seconds=60, processes=32)
# A warm build carries the zygote's ~1.1 GB of CadQuery and OCP: its caps must hold them.
WARM_MEMORY = 2 * 1024**3

KERNEL_LAYERS_HERE = os.geteuid() == 0 and bool(namespace_command()) and landlock.abi_version() > 0
needs_kernel_layers = pytest.mark.skipif(
    not KERNEL_LAYERS_HERE, reason="needs root, unshare and Landlock"
)

ALL = Layers()
# The kernel's layers on their own: namespaces, the unprivileged user, Landlock, limits.
KERNEL_ONLY = Layers(audit_hook=False)
# The audit hook on its own, as root: what a machine without the kernel layers gets.
HOOK_ONLY = Layers(namespaces=False, drop_privileges=False, landlock=False)

LAYER_SETS = [
    pytest.param(ALL, id="all-layers"),
    pytest.param(KERNEL_ONLY, id="kernel-only", marks=needs_kernel_layers),
    pytest.param(HOOK_ONLY, id="hook-only"),
]


def script(name: str) -> str:
    return (SCRIPTS / f"{name}.py").read_text()


@pytest.fixture(params=["cold", "warm"])
def mode(request) -> str:
    """Each sandbox test runs in a fresh child and in the pre-warmed zygote."""
    return request.param


def limits_for(limits: Limits, mode: str) -> Limits:
    if mode == "warm":
        return replace(limits, memory_bytes=max(limits.memory_bytes, WARM_MEMORY))
    return limits


def build_in(mode: str, source: str, values: dict, out_dir: Path, limits: Limits, **options):
    """``build_design`` in ``mode`` (the caps raised to hold the zygote when warm), checking
    that the build really ran there."""
    result = build_design(
        source, None, values, out_dir, limits_for(limits, mode), mode=mode, **options
    )
    assert result.mode == mode, f"the build ran {result.mode}, not {mode}"
    return result


PF_EXITING = 0x4
SIGKILL_BIT = 1 << 8


def dying(entry: Path) -> bool:
    """Whether the process can never run its own code again: a zombie, exiting, or killed."""
    state, *fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    if state in ("Z", "X") or int(fields[5]) & PF_EXITING:
        return True
    status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines())
    return any(int(status[key], 16) & SIGKILL_BIT for key in ("SigPnd", "ShdPnd"))


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parents[int(entry.name)] = int(stat[1])
    return parents


def _descends_from_us(pid: int, parents: dict[int, int]) -> bool:
    me = os.getpid()
    seen = set()
    while pid > 1 and pid not in seen:
        if pid == me:
            return True
        seen.add(pid)
        pid = parents.get(pid, 0)
    return False


def build_children() -> list[int]:
    """Processes still running a build: the cold child (its forks keep the command line) or a
    process forked by the zygote for a build (named ``dgml-build``; spares are not builds).
    A process that is dying does not count: the warm sandbox reports the end of a build that
    has no other process as soon as it has killed it, without waiting for its exit to unmap
    CadQuery's libraries (the zygote reaps it a few milliseconds later). Only this test
    process's descendants count, so that builds of another run on the machine do not."""
    found = []
    parents = _parents()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _descends_from_us(int(entry.name), parents):
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            name = (entry / "comm").read_bytes().strip()
            if dying(entry):
                continue
        except (OSError, IndexError, ValueError):
            continue
        if b"registry.parametric.child" in command or name == b"dgml-build":
            found.append(int(entry.name))
    return found


@pytest.fixture
def out_dir(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def data_dir():
    """A world-readable data dir with a secret in it, outside any test's private tmp dir (the
    sandbox user could not even reach pytest's 0700 tmp dirs, which would prove nothing)."""
    import shutil
    import tempfile
    import uuid

    path = Path(tempfile.mkdtemp(prefix="dgml-data-"))
    path.chmod(0o755)
    secret = f"SECRET-{uuid.uuid4().hex}"
    (path / "secret.txt").write_text(secret + "\n")
    (path / "secret.txt").chmod(0o644)
    step = Path(__file__).parent.parent / "data" / "box_sides.STEP"
    shutil.copyfile(step, path / "part.step")
    (path / "part.step").chmod(0o644)
    yield path, secret
    shutil.rmtree(path, ignore_errors=True)


def still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still exist and are not dying."""
    running = []
    for pid in pids:
        try:
            if not dying(Path(f"/proc/{pid}")):
                running.append(pid)
        except (OSError, IndexError, ValueError):
            continue
    return running
