"""The warm sandbox's zygote: ``python -I -m registry.parametric.zygote FD ns|plain OWNER``.

A long-lived process that has imported CadQuery, OCP, numpy, the common standard modules and
the sandbox's own modules once (what a cold CadQuery build imports) and forks one process per
build; once it has been idle for ``WARM_UP_AFTER`` seconds it also imports the DXF writer and
builds and exports a warm-up part (``warmup.py``), so that later builds find that done too.

``warm.py`` (the parent's side) starts it under ``unshare --net --pid --fork --kill-child``
(``ns``): it is the first process of a PID namespace with no network, so when it ends the
kernel kills every process it started. It talks to the parent over the socket ``FD`` in JSON
lines:

- parent to zygote: ``{"op": "build", "id", "sandbox", "seconds"}``, ``{"op": "kill", "id"}``;
  end of file means stop: every build is killed and the zygote exits;
- zygote to parent: ``{"ready": true, "vm_bytes", ...}`` once (``{"vm_bytes"}`` again after
  the warm-up), ``{"id", "started": true}`` when a build was handed over, ``{"id", "status",
  "signal"}`` once no process of it can run any more, ``{"error"}`` before giving up.

Decisions:

- **Never a thread.** Forking a threaded process can deadlock the copy, and Landlock and
  ``no_new_privs`` bind only the thread that asks. The parent sets the thread counts of
  OpenMP/OpenBLAS/MKL to 1 before anything is imported, exports run with ``parallel=False``,
  the warm-up's booleans too (a parallel one starts OpenCascade's pool), and the zygote checks
  ``threading.active_count()`` and ``/proc/self/task`` before every fork: with a second thread
  it refuses to fork and exits (the parent then builds cold). B checks again before the
  sandbox goes up (``child.confine``).
- **Namespaces per build, as cold.** For each build the zygote ``unshare``\\s a new PID and
  network namespace for its children, starts a tiny init as PID 1 there (``posix_spawn``: no
  copy of the zygote's page tables) and forks the build process B (PID 2), then ``setns``\\es
  back into its own. Builds cannot see each other or the zygote, nor reach each other over a
  network. When B ends, the zygote kills the init; when the init is reaped, the kernel has
  killed and reaped everything else in that namespace, and then the end is reported. When B
  has written its result and neither B nor the init has a child, B and the init are all there
  is: both are killed and the end reported at once (``finished``), not after B's exit.
- **A spare.** A fork of the zygote costs ~10 ms (CadQuery maps ~550 libraries, VTK's among
  them: ~3100 mappings to copy), as does the end of a process forked from it. One B is forked
  ahead, blocked on a pipe into which a request writes its sandbox dir: no fork on the build's
  path. The next is forked when no build runs (or a request waits), not to take a build's CPU.
- **What B starts from**: see ``spare.py`` (it forgets the zygote, then, with its build, puts
  up every layer as a cold build does, in ``child.run_job``). ``gc.freeze()`` keeps the
  collector off (and from copying) the zygote's objects in B.
- **Deadlines.** The parent's wall clock is the one that counts (it asks for a kill); the
  zygote also kills a build ``GRACE`` seconds after its ``seconds``, should the parent be stuck.
- Without namespaces (``plain``: no ``unshare``, or a test of the audit hook alone) there is no
  init: the zygote is a child subreaper and kills B's process group when B ends, as cold does.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# every module a build needs is loaded here once, not in each build
from registry.parametric import child, export, guard, landlock, params, spare, warmup  # noqa: F401

CLONE_NEWNET, CLONE_NEWPID = 0x40000000, 0x20000000
_PR_SET_CHILD_SUBREAPER = 36
GRACE = 5.0
# Seconds without a build before the zygote warms up (a process that builds once and exits,
# as ``dgml build`` does, never waits for it).
WARM_UP_AFTER = 0.5


@dataclass
class _Build:
    """A B: its init (ns mode), its job pipe as a spare; running: id, deadline, how it ended."""

    pid: int
    init: int | None
    job: int | None
    done: int | None = None
    init_host: int | None = None
    ident: int | None = None
    deadline: float = 0.0
    end: tuple[int | None, int | None] | None = None
    reported: bool = False


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def thread_count() -> int:
    return max(threading.active_count(), len(os.listdir("/proc/self/task")))


def vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _host_pid(pid: int) -> int | None:
    """``pid`` (of this PID namespace) as /proc, which is the host's, numbers it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("Pid:"):
                return int(line.split()[1])
    finally:
        os.close(fd)
    return None


def _has_children(host_pid: int) -> bool:
    """Whether the process has a child, even a zombie (True when that cannot be told)."""
    try:
        return bool(Path(f"/proc/{host_pid}/task/{host_pid}/children").read_text().split())
    except OSError:
        return True


def _kill(pid: int | None, group: bool = False) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, signal.SIGKILL)


class Zygote:
    def __init__(self, channel: int, namespaces: bool) -> None:
        self.channel, self.namespaces = channel, namespaces
        os.set_inheritable(channel, False)
        self.env = {k: v for k, v in os.environ.items() if k not in ("HOME", "TMPDIR")}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.own = {
            kind: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for kind, name in ((CLONE_NEWPID, "pid"), (CLONE_NEWNET, "net"))
        }
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.spare: _Build | None = None
        self.queue: deque[dict] = deque()
        self.running: list[_Build] = []
        self.inbox = b""
        self.warmed = False

    # --- talking to the parent -----------------------------------------------------------

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self.channel, data) :]

    def receive(self) -> bool:
        """Read what the parent sent; False at end of file."""
        data = os.read(self.channel, 65536)
        if not data:
            return False
        self.inbox += data
        while b"\n" in self.inbox:
            line, self.inbox = self.inbox.split(b"\n", 1)
            request = json.loads(line)
            if request.get("op") == "build":
                self.queue.append(request)
            elif request.get("op") == "kill":
                self.kill(int(request["id"]))
        return True

    def kill(self, ident: int) -> None:
        for request in [r for r in self.queue if r["id"] == ident]:
            self.queue.remove(request)
            self.send({"id": ident, "status": None, "signal": signal.SIGKILL})
        for build in self.running:
            if build.ident == ident:
                self._stop(build)

    def _stop(self, build: _Build) -> None:
        _kill(build.init)  # the namespace goes with it
        _kill(build.pid, group=not self.namespaces)
        _kill(build.pid)

    # --- spares --------------------------------------------------------------------------

    def make_spare(self) -> None:
        threads = thread_count()
        if threads != 1:
            raise RuntimeError(f"the zygote has {threads} threads: forking it is unsafe")
        job_r, job_w = os.pipe2(os.O_CLOEXEC)
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        init = None
        sys.stdout.flush()
        sys.stderr.flush()
        self.libc.fflush(None)
        if self.namespaces:
            _check(self.libc.unshare(CLONE_NEWPID | CLONE_NEWNET), "unshare")
        try:
            if self.namespaces:
                init = os.posix_spawn(
                    sys.executable, [sys.executable, "-I", "-S", "-c", spare.INIT], {}, setsid=True
                )
            pid = os.fork()
            if pid == 0:  # B: the zygote's bookkeeping (other builds) is not for it
                self.running, self.queue, self.spare, self.inbox = [], deque(), None, b""
                spare.run(job_r, done_w, self.env, self.warmed)
        finally:
            if self.namespaces:
                for kind, fd in self.own.items():
                    _check(self.libc.setns(fd, kind), "setns")
        os.close(job_r)
        os.close(done_w)
        host = _host_pid(init) if init is not None else None
        self.spare = _Build(pid, init, job_w, done_r, host)

    def hand_over(self) -> None:
        while self.queue and self.spare is not None:
            request, build = self.queue.popleft(), self.spare
            self.spare = None
            try:
                os.write(build.job, json.dumps({"sandbox": request["sandbox"]}).encode())
            except OSError:  # the spare died: the request waits for the next one
                self.queue.appendleft(request)
                self._stop(build)
                os.close(build.done)
            else:
                build.ident = int(request["id"])
                build.deadline = time.monotonic() + float(request["seconds"]) + GRACE
                self.running.append(build)
                self.send({"id": build.ident, "started": True})
            finally:
                os.close(build.job)
                build.job = None
            if self.queue:
                self.make_spare()

    # --- processes that end --------------------------------------------------------------

    def finished(self, build: _Build) -> None:
        """B has written its result and says it has no child. When the init has none either,
        B and the init are the build's only processes: both are killed and the end reported
        now, rather than after B's exit has unmapped CadQuery's ~3100 mappings (~10 ms). The
        script can write to this pipe too: it can only end its own build early by it."""
        data = os.read(build.done, 16)
        os.close(build.done)
        build.done = None
        if not data.isdigit() or not self.namespaces or build.init_host is None:
            return
        if _has_children(build.init_host):
            return
        _kill(build.pid)
        _kill(build.init)
        build.reported = True
        self.send({"id": build.ident, "status": int(data), "signal": None})

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid in (self.spare.pid, self.spare.init):
                # a spare that died is no use: its other half goes too
                _kill(self.spare.init if pid == self.spare.pid else self.spare.pid)
                os.close(self.spare.job)
                os.close(self.spare.done)
                self.spare = None
            for build in self.running:
                if pid == build.pid:
                    if os.WIFSIGNALED(status):
                        build.end = (None, os.WTERMSIG(status))
                    else:
                        build.end = (os.waitstatus_to_exitcode(status), None)
                    _kill(build.init)
                    if not self.namespaces:
                        _kill(build.pid, group=True)  # what it left in its process group
                    build.pid = None
                elif pid == build.init:
                    build.init = None
                    _kill(build.pid)
            for build in [b for b in self.running if b.pid is None and b.init is None]:
                self.running.remove(build)
                if build.done is not None:
                    os.close(build.done)
                if not build.reported:
                    status, killed_by = build.end or (None, signal.SIGKILL)
                    self.send({"id": build.ident, "status": status, "signal": killed_by})

    def overdue(self) -> float | None:
        """Kill builds past the zygote's own deadline; seconds until the next one."""
        now = time.monotonic()
        for build in self.running:
            if build.deadline <= now:
                self._stop(build)
        later = [b.deadline - now for b in self.running if b.deadline > now]
        return min(later, default=None)

    def serve(self) -> None:
        if not self.namespaces:
            self.libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.make_spare()
        self.send({"ready": True, "pid": os.getpid(), "vm_bytes": vm_bytes(), "threads": 1})
        idle_since = time.monotonic()
        while True:
            timeout = self.overdue()
            if self.running or self.queue:
                idle_since = time.monotonic()
            elif not self.warmed:
                idle = time.monotonic() - idle_since
                if idle >= WARM_UP_AFTER:
                    self.warm_up()
                    continue
                timeout = min(timeout or WARM_UP_AFTER, WARM_UP_AFTER - idle)
            done = {b.done: b for b in self.running if b.done is not None}
            readable, _, _ = select.select([self.channel, self.wake_r, *done], [], [], timeout)
            for fd in set(readable) & set(done):
                self.finished(done[fd])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 4096):
                        pass
                self.reap()
            if self.channel in readable and not self.receive():
                return
            if self.spare is None and (self.queue or not self.running):
                self.make_spare()
            self.hand_over()

    def warm_up(self) -> None:
        """The warm-up, once idle (done even when it failed: it only saves time); then the
        spare is replaced by one forked from the warmer image."""
        child.preload(cad=True, laser=True)
        warmup.warm_up()
        gc.freeze()
        self.warmed = True
        self.send({"vm_bytes": vm_bytes()})  # what a build now starts with
        if self.spare is not None:
            _kill(self.spare.init)
            _kill(self.spare.pid)
            os.close(self.spare.job)
            os.close(self.spare.done)
            self.spare = None
        self.make_spare()

    def stop(self) -> None:
        """Kill every build and the spare, and reap them (in ``ns`` mode, the end of the
        zygote's own namespace would take them anyway)."""
        builds = [*self.running, *([self.spare] if self.spare else [])]
        known = {pid for b in builds for pid in (b.pid, b.init) if pid is not None}
        for build in builds:
            self._stop(build)
        deadline = time.monotonic() + 10
        while known and time.monotonic() < deadline:
            try:
                known.discard(os.waitpid(-1, 0)[0])
            except ChildProcessError:
                break


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("ns", "plain"):
        print("usage: python -m registry.parametric.zygote FD ns|plain OWNER", file=sys.stderr)
        return 2
    os.dup2(2, 1)  # stray output of native code goes to the zygote's log, never the socket
    zygote = Zygote(int(argv[0]), argv[1] == "ns")
    try:
        child.preload(cad=True, laser=False)  # as a cold CadQuery build; laser: at warm-up
        child.read_roots()
        gc.freeze()
        zygote.serve()
    except BaseException as exc:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            zygote.send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        zygote.stop()
    return 0


if __name__ == "__main__":
    # skips tearing down CadQuery's modules; the builds are gone already
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
