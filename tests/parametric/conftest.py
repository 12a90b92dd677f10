"""Sample scripts, small limits, and the layer sets the attack tests run against."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from registry.parametric import landlock
from registry.parametric.sandbox import Layers, Limits, namespace_command

SCRIPTS = Path(__file__).parent / "scripts"
# Small caps keep the attacks fast; CadQuery builds get the default memory (its ~1.2 GB).
FAST = Limits(seconds=20, memory_bytes=1024**3, processes=16, output_bytes=8 * 1024**2)
CAD = Limits(seconds=60, processes=32)

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


def build_children() -> list[int]:
    """Processes still running the sandboxed child (its forks keep the command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"registry.parametric.child" in command:
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
