"""Running a build in the sandboxed child: the parent's side.

A CadQuery script is untrusted code: it never runs in the calling process (the API, a
worker, the command line). ``Sandbox`` makes a private directory, starts
``python -I -m registry.parametric.child`` in it and waits with a wall clock. The layers, from
the outside in (``child.py`` sets up the inner ones and says why each sits where it does):

1. Limits: the child caps its own memory (RLIMIT_AS), CPU, file size (RLIMIT_FSIZE, which also
   bounds the log), open files, processes (RLIMIT_NPROC) and core dumps before the script
   runs; here, the wall clock kills the whole process group (``start_new_session``) when
   ``Limits.seconds`` run out.
2. Namespaces: as root (or where unprivileged user namespaces are allowed) the child starts
   under ``unshare --net --pid --fork --kill-child``: a network namespace with nothing in it
   but a loopback that is down (no connection anywhere, not even to 127.0.0.1), and a PID
   namespace whose first process only waits, so every process the script might start dies
   with it. The ``unshare`` program rather than ``unshare(2)`` from ``preexec_fn``: forking
   a threaded server process and running Python before ``exec`` can deadlock.
3. Privileges: when root, the child drops to the sandbox user (65534) after its imports; the
   parent gives the working dir to that user and keeps the rest of the sandbox dir root's.
4. Landlock and 5. the audit hook: in the child.
6. Environment: only PATH, LANG, HOME and TMPDIR (the working dir) and the thread-count
   variables; ``-I`` makes Python ignore PYTHON* variables, the user's site directory and the
   current directory; stdin is /dev/null; the working dir is new and empty but for the script.
   Nothing names the data dir or the database: the child is never told where they are, and
   Landlock (or the hook) refuses reads outside the allowed directories anyway.

Where a layer is missing (no ``unshare``, no Landlock, not root), the others still stand and
``BuildResult.sandbox`` lists the layers that were in force.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

# Threads numerical libraries would start only eat into the memory and process caps (and the
# warm zygote must never have a second thread when it forks).
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}
SANDBOX_UID = 65534
Mode = Literal["warm", "cold"]


@dataclass(frozen=True)
class Limits:
    """Caps on one build. ``cpu_seconds`` defaults to ``seconds``; ``output_bytes`` is the
    largest file the build may write (each of its outputs, and its log)."""

    seconds: float = 120.0
    memory_bytes: int = 2 * 1024**3
    cpu_seconds: float | None = None
    output_bytes: int = 256 * 1024**2
    open_files: int = 256
    processes: int = 64
    log_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Layers:
    """Which layers to put up; all by default. Switching one off is for tests that prove the
    others hold on their own, never for serving builds."""

    namespaces: bool = True
    drop_privileges: bool = True
    landlock: bool = True
    audit_hook: bool = True
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_UID


@dataclass(frozen=True)
class Outcome:
    """How the child ended: its exit status or the signal that killed it, whether the wall
    clock ran out, the log, and the layers the parent put up."""

    status: int | None
    signal: int | None
    timed_out: bool
    log: str
    layers: list[str]
    seconds: float
    mode: Mode = "cold"


@functools.cache
def namespace_command() -> tuple[str, ...]:
    """The ``unshare`` prefix that works here, or () when namespaces cannot be had."""
    program = shutil.which("unshare") or next(
        (p for p in ("/usr/bin/unshare", "/bin/unshare") if os.path.exists(p)), None
    )
    if program is None:
        return ()
    command = (program, "--net", "--pid", "--fork", "--kill-child")
    if os.geteuid() != 0:
        command = (program, "--user", *command[1:])
    try:
        probe = subprocess.run(
            [*command, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return command if probe.returncode == 0 else ()


def _read_log(path: Path, cap: int) -> str:
    """The log, its head and tail when it is longer than ``cap`` bytes."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= cap:
            data = file.read()
        else:
            head = file.read(cap // 2)
            file.seek(size - cap // 2)
            data = head + f"\n... {size - cap} bytes left out ...\n".encode() + file.read()
    return data.decode("utf-8", "replace")


class Sandbox:
    """A private directory for one build: ``root`` (0711, root's), ``root/work`` (the child's
    cwd, given to the sandbox user), ``root/job.json`` and ``root/build.log`` (0600).

    ``mode="warm"`` hands the build to this process's pre-warmed zygote (``warm.py``) and
    falls back to a cold child when the zygote cannot take it; ``mode="cold"`` always starts
    a fresh child. The layers are the same either way."""

    def __init__(
        self, limits: Limits = Limits(), layers: Layers = Layers(), mode: Mode = "warm"
    ) -> None:
        if mode not in ("warm", "cold"):
            raise ValueError(f"mode must be 'warm' or 'cold', not {mode!r}")
        self.limits, self.layers, self.mode = limits, layers, mode
        self.root = Path(tempfile.mkdtemp(prefix="dgml-build-"))
        self.workdir = self.root / "work"
        self.workdir.mkdir(mode=0o700)
        os.chmod(self.root, 0o711)
        self.drops = layers.drop_privileges and os.geteuid() == 0
        if self.drops:
            os.chown(self.workdir, layers.uid, layers.gid)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def put_script(self, filename: str, source: str) -> None:
        """A copy of the script in the working dir, so tracebacks can quote its lines."""
        path = self.workdir / filename
        path.write_text(source)
        os.chmod(path, 0o644)

    def _job(self, job: dict) -> None:
        limits = asdict(self.limits)
        if limits["cpu_seconds"] is None:
            limits["cpu_seconds"] = self.limits.seconds
        job = {**job, "limits": limits, "layers": asdict(self.layers)}
        fd = os.open(self.root / "job.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(job, file)

    def run(self, job: dict) -> Outcome:
        """Run the build of ``job`` (source, filename, values, process) until it ends or the
        wall clock runs out: in the zygote when warm and it can, else in a fresh child."""
        self._job(job)
        log_path = self.root / "build.log"
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        outcome = None
        if self.mode == "warm":
            from registry.parametric import warm

            outcome = warm.run(self.root, self.limits, self.layers.namespaces)
        if outcome is None:
            outcome = self._run_cold()
        return replace(outcome, log=_read_log(log_path, self.limits.log_bytes))

    def _run_cold(self) -> Outcome:
        prefix = namespace_command() if self.layers.namespaces else ()
        layers = ["network namespace", "pid namespace"] if prefix else []
        command = [*prefix, sys.executable, "-I", "-m", "registry.parametric.child", str(self.root)]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
            **CHILD_ENV,
        }
        started = time.monotonic()
        timed_out = False
        with open(os.open(self.root / "build.log", os.O_WRONLY | os.O_APPEND), "wb") as log:
            child = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
            try:
                child.wait(timeout=self.limits.seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # the whole group: the namespace's first process takes the rest with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        status, killed_by = child.returncode, None
        if status < 0:
            status, killed_by = None, -status
        elif prefix and status > 128:
            # the namespace's first process reports a signal as 128 + n
            status, killed_by = None, status - 128
        return Outcome(status, killed_by, timed_out, "", layers, time.monotonic() - started)

    def copy_output(self, name: str, target: Path, max_bytes: int) -> tuple[str, int] | None:
        """Copy a regular file the child left at ``name`` (relative to the working dir) to
        ``target``: its sha256 and size, or None. Never through a symlink, never a hard link
        to a file elsewhere, never more than ``max_bytes``."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        opened: list[int] = []
        try:
            directory = os.open(self.workdir, flags | os.O_DIRECTORY)
            opened.append(directory)
            *folders, last = name.split("/")
            for folder in folders:
                directory = os.open(folder, flags | os.O_DIRECTORY, dir_fd=directory)
                opened.append(directory)
            fd = os.open(last, flags | os.O_NONBLOCK, dir_fd=directory)
        except OSError:
            return None
        finally:
            for descriptor in opened:
                os.close(descriptor)
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > max_bytes:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as copy:
                while size <= max_bytes and (chunk := source.read(1024 * 1024)):
                    digest.update(chunk)
                    copy.write(chunk)
                    size += len(chunk)
        if size > max_bytes:
            target.unlink(missing_ok=True)
            return None
        return digest.hexdigest(), size

    def read_result(self, max_bytes: int = 1024 * 1024) -> dict | None:
        """The child's ``result.json`` as data, or None."""
        target = self.root / "result.json"
        if self.copy_output("result.json", target, max_bytes) is None:
            return None
        try:
            data = json.loads(target.read_bytes())
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
