"""A build process forked by the zygote (``zygote.py``): a spare first, then one build.

B is forked from the zygote ahead of any request, as PID 2 of a PID and network namespace of
its own (PID 1 is ``INIT``). While it is a spare it:

- closes every descriptor but stdin (/dev/null), stdout and stderr (the zygote's log), its job
  pipe and its end-of-build pipe, resets the zygote's signal handling and starts a session;
- replaces the environment with the zygote's (the parent's scrubbed one: PATH, LANG, thread
  counts), forgets ``tempfile``'s cached directory and reseeds numpy's global generator
  (``random`` reseeds itself after a fork: no two builds share a random sequence);
- once the zygote is warm, rehearses a tiny build (``warmup.rehearse``), so that the pages a
  build writes are copied from the zygote now rather than on the build's path;
- blocks on its job pipe, knowing nothing of any build (the zygote clears its bookkeeping of
  other builds in B before this runs).

With its build (the sandbox dir, nothing else) it logs to the build's log, moves into the
working dir (HOME and TMPDIR), and ``child.run_job`` does exactly what it does in a cold
build: the limits, the drop to the sandbox user, Landlock and the audit hook, then the script
and the export. Last, when B has no child process (not even a zombie), it writes its exit
status to the end-of-build pipe: the zygote may then report the end without waiting for B's
exit (``Zygote.finished``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from registry.parametric import child, warmup

_PR_SET_NAME = 15
SPARE_NAME, BUILD_NAME = b"dgml-spare", b"dgml-build"
# PID 1 of a build's namespace: reaps what is re-parented to it until the zygote kills it.
INIT = """
import os, signal
def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
signal.signal(signal.SIGCHLD, reap)
while True:
    signal.pause()
"""


def run(job_r: int, done_w: int, env: dict[str, str], warmed: bool) -> None:
    """B's life, from spare to the end of its build; never returns."""
    libc = ctypes.CDLL(None, use_errno=True)
    code = child.EXIT_CRASHED
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in (0, 1, 2, job_r, done_w):
                with contextlib.suppress(OSError):
                    os.close(int(name))
        os.setsid()
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(SPARE_NAME), 0, 0, 0)
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        if warmed:  # before the warm-up, a rehearsal would only delay the build
            warmup.rehearse()
        chunks = []
        while chunk := os.read(job_r, 65536):
            chunks.append(chunk)
        os.close(job_r)
        if not chunks:  # the zygote stopped, or let this spare go
            os._exit(0)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(BUILD_NAME), 0, 0, 0)
        sandbox = Path(json.loads(b"".join(chunks))["sandbox"])
        log = os.open(sandbox / "build.log", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        workdir = sandbox / "work"
        os.chdir(workdir)
        os.environ.update(HOME=str(workdir), TMPDIR=str(workdir))
        code = child.run_job(sandbox)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no child, not even a zombie: see ``Zygote.finished``
            with contextlib.suppress(OSError):  # the script may have closed it
                os.write(done_w, b"%d" % code)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
