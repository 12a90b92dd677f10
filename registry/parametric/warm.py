"""The warm sandbox, the parent's side: a pre-warmed zygote per process, started lazily.

A cold build spends ~2 s importing CadQuery before its script runs. ``Sandbox(mode="warm")``
(the default of ``build_design``) hands the build to a zygote (``zygote.py``) that imported
everything once and forks a process per build, which then puts up the same per-build layers as
the cold child. Decisions:

- **Lazily, once per process.** The first warm build of a process starts the zygote (its
  imports cost what one cold build does); later builds reuse it. One zygote per namespace
  setting (``Layers.namespaces``), so a test of the audit hook alone gets a zygote without
  namespaces. A child made by ``os.fork`` forgets its parent's zygotes and starts its own.
- **When it cannot start** (no fork-safe state, a build's namespaces cannot be made, the
  imports fail), the build runs cold; a new attempt is made only after ``RETRY_AFTER``
  seconds. When it dies before it took a build, that build also runs cold; when it dies during
  a build, the build fails; the next build starts a new zygote either way.
- **Memory.** A forked build carries the zygote's address space (~1.1 GB of CadQuery and OCP,
  as a cold CadQuery build does after its imports), and RLIMIT_AS counts it. A build whose
  memory cap leaves less than ``MEMORY_HEADROOM`` above that runs cold, where a script that
  never names CadQuery does not carry it.
- **The wall clock stays here.** The parent waits ``Limits.seconds`` for the build's end, then
  asks the zygote to kill it; when the zygote does not confirm within ``KILL_GRACE`` seconds,
  the whole zygote is killed (its PID namespace takes every build with it) and the next build
  starts another.
- **No leaks.** The zygote ends when its socket closes: at exit (``atexit``), when this process
  dies, or on ``stop``. In the PID namespace, "ended" from the zygote means that no process of
  the build is left, so the sandbox dir is read only once nothing can write to it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from registry.parametric.sandbox import CHILD_ENV, Limits, Outcome, namespace_command

START_TIMEOUT = 180.0
KILL_GRACE = 5.0
RETRY_AFTER = 60.0
MEMORY_HEADROOM = 256 * 1024**2


class ZygoteError(Exception):
    """The zygote could not start, or stopped answering."""


class Zygote:
    """One zygote process and the socket to it; ``run`` may be called from several threads."""

    def __init__(self, namespaces: bool) -> None:
        self.prefix = namespace_command() if namespaces else ()
        self.namespaces = bool(self.prefix)
        self.owner = os.getpid()
        self.vm_bytes = 0
        self._alive = False
        self.process: subprocess.Popen | None = None
        self.home = Path(tempfile.mkdtemp(prefix="dgml-zygote-"))
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.SimpleQueue] = {}
        self._send_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._alive and self.process is not None and self.process.poll() is None

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop(kill=True)
            raise

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self._sock = ours
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "TMPDIR": str(self.home),
            **CHILD_ENV,
        }
        mode = "ns" if self.namespaces else "plain"
        command = [sys.executable, "-I", "-m", "registry.parametric.zygote"]
        command += [str(theirs.fileno()), mode, str(self.owner)]
        with open(self.home / "zygote.log", "wb") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *command],
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        ours.settimeout(START_TIMEOUT)
        try:
            first = ours.makefile("rb").readline()
            message = json.loads(first) if first else {}
        except (OSError, ValueError):
            message = {}
        if not message.get("ready"):
            why = message.get("error") or self._log_tail() or "no answer"
            raise ZygoteError(f"the build zygote did not start: {why}")
        ours.settimeout(None)
        self.vm_bytes = int(message.get("vm_bytes", 0))
        self._alive = True
        threading.Thread(target=self._read, name="dgml-zygote-reader", daemon=True).start()

    def _log_tail(self) -> str:
        try:
            lines = (self.home / "zygote.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _read(self) -> None:
        """Hand each message to the build waiting for it; at end of file, wake them all."""
        try:
            for line in self._sock.makefile("rb"):
                message = json.loads(line)
                if "id" not in message and "vm_bytes" in message:
                    self.vm_bytes = int(message["vm_bytes"])
                inbox = self._waiting.get(message.get("id"))
                if inbox is not None:
                    inbox.put(message)
        except (OSError, ValueError):
            pass
        finally:
            self._alive = False
            for inbox in list(self._waiting.values()):
                inbox.put(None)

    def _send(self, message: dict) -> bool:
        try:
            with self._send_lock:
                self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            return False
        return True

    def run(self, root: Path, seconds: float) -> tuple[dict | None, bool, bool]:
        """Build the sandbox at ``root``: ``(end, started, timed_out)``; ``end`` is the
        zygote's last word (status and signal), None when it died or was killed."""
        ident = next(self._ids)
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting[ident] = inbox
        started = timed_out = False
        end = None
        try:
            if not self.alive or not self._send(
                {"op": "build", "id": ident, "sandbox": str(root), "seconds": seconds}
            ):
                return None, False, False
            deadline = time.monotonic() + seconds
            while True:
                try:
                    message = inbox.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    timed_out = True
                    break
                if message is None or not message.get("started"):
                    end = message
                    break
                started = True
            if end is None and (timed_out or started):
                end = self._kill(ident, inbox)
        except BaseException:
            # interrupted (a job timeout, Ctrl-C): the build must not outlive the wait
            self._kill(ident, inbox)
            raise
        finally:
            self._waiting.pop(ident, None)
        return end, started, timed_out

    def _kill(self, ident: int, inbox: queue.SimpleQueue) -> dict | None:
        """Ask for the build's end; stop the whole zygote when it does not come."""
        if self.alive and self._send({"op": "kill", "id": ident}):
            deadline = time.monotonic() + KILL_GRACE
            while (left := deadline - time.monotonic()) > 0:
                try:
                    message = inbox.get(timeout=left)
                except queue.Empty:
                    break
                if message is None:
                    break
                if not message.get("started"):
                    return message
        self.stop(kill=True)
        return None

    def stop(self, kill: bool = False, wait: bool = True) -> None:
        """Close the socket (the zygote then kills its builds and exits) and wait for it; kill
        it when it does not end, or at once with ``kill``. Without ``wait`` (this process is
        exiting) the zygote is left to end on its own."""
        self._alive = False
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self.process is not None and os.getpid() == self.owner and (wait or kill):
            if kill:
                self._kill_group()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


_zygotes: dict[bool, Zygote] = {}
_failed: dict[bool, float] = {}
_lock = threading.Lock()


def get(namespaces: bool) -> Zygote | None:
    """This process's zygote for the namespace setting, started if need be; None when it
    cannot be had (then builds run cold)."""
    key = namespaces and bool(namespace_command())
    with _lock:
        zygote = _zygotes.get(key)
        if zygote is not None and zygote.alive:
            return zygote
        if zygote is not None:
            zygote.stop(kill=True)
            del _zygotes[key]
        if time.monotonic() - _failed.get(key, -RETRY_AFTER) < RETRY_AFTER:
            return None
        zygote = Zygote(key)
        try:
            zygote.start()
        except (ZygoteError, OSError):
            _failed[key] = time.monotonic()
            return None
        _zygotes[key] = zygote
        return zygote


def run(root: Path, limits: Limits, namespaces: bool) -> Outcome | None:
    """Run the build whose sandbox dir is ``root`` (``job.json`` written, ``build.log``
    created) in the zygote: its outcome, or None when it must run cold."""
    started_at = time.monotonic()
    for _ in range(2):  # a zygote that went away before it took the build: start another
        zygote = get(namespaces)
        if zygote is None or limits.memory_bytes < zygote.vm_bytes + MEMORY_HEADROOM:
            return None
        end, started, timed_out = zygote.run(root, limits.seconds)
        if end is not None or started or timed_out:
            break
    else:
        return None
    status, killed_by = (end or {}).get("status"), (end or {}).get("signal")
    if end is None:
        killed_by = signal.SIGKILL
    elif status is not None and status > 128:  # P1 reports the build's signal as 128 + n
        status, killed_by = None, status - 128
    layers = ["network namespace", "pid namespace"] if zygote.namespaces else []
    return Outcome(status, killed_by, timed_out, "", layers, time.monotonic() - started_at, "warm")


def stop_all(wait: bool = True) -> None:
    """Stop this process's zygotes (at exit without waiting: closing the socket is enough for
    them to kill their builds and end)."""
    with _lock:
        for zygote in _zygotes.values():
            zygote.stop(wait=wait)
        _zygotes.clear()


def _forget_after_fork() -> None:
    """In a forked child: the zygotes are the parent's (their reader threads did not come
    along); keep our hands off them."""
    global _lock
    _lock = threading.Lock()
    for zygote in _zygotes.values():
        zygote._alive = False
        if zygote._sock is not None:
            with contextlib.suppress(OSError):
                os.close(zygote._sock.detach())
    _zygotes.clear()


atexit.register(stop_all, wait=False)
os.register_at_fork(after_in_child=_forget_after_fork)
