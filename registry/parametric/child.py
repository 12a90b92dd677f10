"""The sandboxed build: ``python -I -m registry.parametric.child SANDBOX_DIR``.

Started by ``registry.parametric.sandbox`` in a fresh session, with a scrubbed environment,
stdin on /dev/null, stdout and stderr on a log file, and the working dir ``SANDBOX_DIR/work``
as its cwd; ``SANDBOX_DIR/job.json`` says what to build. Everything below runs before the
script, in this order, so the script meets every layer at once:

1. When the process is PID 1 of a new PID namespace (the parent started it with
   ``unshare --net --pid --fork``), it forks: the child builds, PID 1 only waits and passes
   the child's status on. When PID 1 exits the kernel kills whatever is left in the namespace,
   so no process the script starts outlives the build, and the script cannot see or signal a
   process outside. PID 1 keeps a deadline of its own too, should the parent die. (A PID 1
   ignores signals it has no handler for, SIGXCPU included: another reason the build is not
   PID 1 itself.)
2. Imports: CadQuery, OCP and numpy (when the script names them), the standard modules a
   script commonly uses and, for laser parts, the DXF writer; a tiny STL and STEP export warms
   up lazy imports. After the drop of privileges the interpreter's own files may be unreadable
   (here the interpreter lives under /root), so what is not imported now cannot be later.
3. Resource limits: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE (largest file, the log
   included), RLIMIT_NOFILE, RLIMIT_NPROC (processes of the sandbox user), RLIMIT_CORE = 0.
4. When root: every supplementary group dropped and uid/gid set to the sandbox user (65534,
   nobody/nogroup), which clears every capability; the parent gave it the working dir.
5. Landlock (``landlock.py``), when the kernel has it.
6. The audit hook (``guard.py``).

The script then runs with ``show_object``, ``debug``, ``describe_parameter`` and (CQGI-style)
``cq`` in its namespace; its parts are exported (``export.py``) and ``work/result.json`` is
written. Exit status: 0 built, 1 the script or the export failed, 3 out of memory.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_MEMORY, EXIT_CRASHED = 0, 1, 3, 70
RESULT_FILE = "result.json"
CAD_MODULES = frozenset({"cadquery", "cq", "OCP", "numpy", "np"})
COMMON_MODULES = (
    *("math", "cmath", "random", "itertools", "functools", "operator", "collections"),
    *("collections.abc", "dataclasses", "enum", "typing", "json", "re", "string", "textwrap"),
    *("fractions", "decimal", "statistics", "copy", "datetime", "time", "numbers", "heapq"),
    *("bisect", "array", "struct", "warnings", "contextlib", "types", "abc", "hashlib"),
    *("base64", "zlib", "csv", "pprint", "traceback", "linecache", "tokenize", "io"),
    "encodings.idna",
)
SYSTEM_READ_ROOTS = ("/usr", "/lib", "/lib64", "/lib32", "/etc/fonts", "/etc/ld.so.cache")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")


def uses_cad(tree: ast.Module) -> bool:
    """Whether the script names CadQuery, OCP or numpy (by import or by CQGI's ``cq``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in CAD_MODULES:
            return True
        if isinstance(node, ast.Import) and any(
            a.name.partition(".")[0] in CAD_MODULES for a in node.names
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").partition(".")[0] in CAD_MODULES
        ):
            return True
    return False


_PRELOADED: set[tuple[bool, bool]] = set()


def preload(cad: bool, laser: bool) -> None:
    """Import what a script may use and warm up the exporters; once per process (a process
    forked by the zygote finds everything done)."""
    if any((c or not cad) and (w or not (cad and laser)) for c, w in _PRELOADED):
        return
    for name in COMMON_MODULES:
        importlib.import_module(name)
    if cad:
        import cadquery as cq
        import numpy  # noqa: F401
        from OCP.IFSelect import IFSelect_ReturnStatus  # noqa: F401

        os.makedirs("warm-up", exist_ok=True)
        box = cq.Workplane().box(1, 1, 1).val()
        box.exportStl("warm-up/box.stl", 0.1, 0.1, ascii=False, relative=False, parallel=False)
        box.exportStep("warm-up/box.step")
        if laser:
            import numpy as np

            from registry.geometry.dxf import profile_to_dxf
            from registry.geometry.readers import read_model

            read_model(Path("warm-up/box.stl").read_bytes(), "box.stl")
            profile_to_dxf([np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])])
        for leftover in os.listdir("warm-up"):
            os.remove(f"warm-up/{leftover}")
        os.rmdir("warm-up")
    _PRELOADED.add((cad, laser))


def set_limits(limits: dict) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + limits["cpu_seconds"]) + 1
    for which, value in (
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits["output_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_NPROC, limits["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        hard = value + 2 if which == resource.RLIMIT_CPU else value
        resource.setrlimit(which, (value, hard))


def read_roots() -> tuple[str, ...]:
    """What the build may read: the Python installation, the environment, the registry's
    code, the system's libraries and fonts. Never /etc, /home, /root, /tmp or a data dir."""
    import site

    import registry

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    roots.add(str(Path(registry.__file__).resolve().parent))
    return tuple(sorted(roots)) + SYSTEM_READ_ROOTS


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise RuntimeError("could not drop privileges")


def confine(job: dict, workdir: str) -> list[str]:
    """Layers 3 to 5; the names of those in force. Landlock and ``no_new_privs`` bind only the
    thread that asks for them, so there must be no other thread yet (a parallel OpenCascade
    operation before this point would have started a pool)."""
    from registry.parametric import landlock

    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(f"{threads} threads before the sandbox is up: refusing to build")
    layers, active = job["layers"], ["resource limits"]
    ruleset = None
    if layers["landlock"] and (abi := landlock.abi_version()) > 0:
        ruleset = landlock.Ruleset(abi)
        for root in read_roots():
            ruleset.allow(root, landlock.READ)
        for device in DEVICES:
            ruleset.allow(device, landlock.DEVICE)
        ruleset.allow(workdir, landlock.WRITE)
    set_limits(job["limits"])
    if layers["drop_privileges"] and os.geteuid() == 0:
        drop_privileges(layers["uid"], layers["gid"])
        landlock.no_new_privs()
        active.append(f"user {layers['uid']}")
    if ruleset is not None:
        ruleset.enforce()
        active.append(f"landlock ABI {ruleset.abi}")
    return active


def _where(exc: BaseException, filename: str) -> str:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return f"{filename}, line {line}: " if line else ""


def run_script(code, filename: str, cad: bool) -> tuple[list, str | None, BaseException | None]:
    """Run the script: ``(shown, error, exception)`` with ``shown`` as (name, object) pairs."""
    shown: list = []

    def show_object(shape, name=None, options=None, **kwargs):
        shown.append((name, shape))

    def ignored(*args, **kwargs):
        return None

    namespace = {
        "__name__": "__cqgi__",
        "__builtins__": builtins,
        "show_object": show_object,
        "debug": ignored,
        "describe_parameter": ignored,
    }
    if cad:
        import cadquery

        namespace.update(cq=cadquery, cadquery=cadquery)
    try:
        exec(code, namespace)
    except SystemExit as exc:
        return shown, f"{filename} called exit({exc.code!r})", None
    except BaseException as exc:
        traceback.print_exc()
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return shown, f"{_where(exc, filename)}{what}", exc
    if not shown and namespace.get("result") is not None:
        shown.append((None, namespace["result"]))
    if not shown:
        return shown, "the script showed nothing: call show_object(shape) or set `result`", None
    return shown, None, None


def _limit_of(exc: BaseException | None, refusals: list[str]) -> str | None:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: RLIMIT_FSIZE
        return "output"
    if isinstance(exc, BlockingIOError) and exc.errno == 11 and not refusals:  # fork: EAGAIN
        return "processes"
    return None


def build(job: dict, workdir: str) -> dict:
    from registry.parametric import export, guard
    from registry.parametric.params import parse_script, substitute

    filename = job["filename"]
    tree = parse_script(job["source"], filename)
    cad = uses_cad(tree)
    laser = job["process"] == "laser"
    preload(cad, laser)
    code = compile(substitute(tree, job["values"]), filename, "exec")
    refusals: list[str] = []
    # made while every path can still be resolved, installed after the kernel layers
    hook = guard.make_hook(workdir, read_roots() + DEVICES, ("/dev/null",), refusals)
    active = confine(job, workdir)
    if job["layers"]["audit_hook"]:
        guard.arm(hook)
        active.append("audit hook")
    del hook  # the interpreter's reference is then the only one: its closure stays out of reach
    me = os.getpid()
    shown, error, exc = run_script(code, filename, cad)
    if os.getpid() != me:  # a copy made by os.fork in the script: it has no say
        os._exit(EXIT_OK)
    result = {"ok": False, "parts": [], "error": error, "limit": _limit_of(exc, refusals)}
    result.update(layers=active, notes=[], refusals=refusals[:20])
    if error is None:
        try:
            export.write_parts(shown, laser, result["parts"], result["notes"])
        except export.ExportError as failed:
            result["error"] = str(failed)
        except Exception as failed:
            traceback.print_exc()
            result["error"] = f"exporting the parts failed: {type(failed).__name__}: {failed}"
            result["limit"] = _limit_of(failed, refusals)
    if refusals and result["error"] is None:
        result["error"] = f"the build sandbox refused {refusals[0]}"
    result["ok"] = result["error"] is None
    return result


def run_job(sandbox: Path) -> int:
    started = time.monotonic()
    job = json.loads((sandbox / "job.json").read_text())
    workdir = os.getcwd()
    try:
        result = build(job, workdir)
    except MemoryError:
        result = {"ok": False, "error": "the build ran out of memory", "limit": "memory"}
    result["child_seconds"] = round(time.monotonic() - started, 3)
    # written aside and renamed, so a result.json the script left (read-only) cannot stay
    with open(f"{RESULT_FILE}.{os.getpid()}", "w") as file:
        json.dump(result, file)
    os.replace(f"{RESULT_FILE}.{os.getpid()}", RESULT_FILE)
    sys.stdout.flush()
    sys.stderr.flush()
    if result.get("limit") == "memory":
        return EXIT_MEMORY
    return EXIT_OK if result["ok"] else EXIT_FAILED


def _pid_one(sandbox: Path) -> int:
    """As PID 1 of the namespace: build in a child, pass its status on (signals as 128+n).

    PID 1 also keeps its own deadline, a little after the parent's wall clock: should the
    parent die, the build (and with PID 1, the namespace) still ends.
    """
    seconds = json.loads((sandbox / "job.json").read_text())["limits"]["seconds"]
    child = os.fork()
    if child == 0:
        code = EXIT_CRASHED
        try:
            code = run_job(sandbox)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return wait_as_pid_one(child, seconds + 5)


def wait_as_pid_one(child: int, seconds: float | None = None) -> int:
    """Reap every process until ``child`` ends; its status (a signal as 128+n). With
    ``seconds``, ``child`` is killed when they run out. Used by the first process of a build's
    PID namespace, cold or warm (where the zygote keeps the deadline instead)."""

    def out_of_time(signum, frame):
        os.kill(child, signal.SIGKILL)

    if seconds is not None:
        signal.signal(signal.SIGALRM, out_of_time)
        signal.alarm(int(seconds))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return EXIT_CRASHED
        if pid == child:
            break
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m registry.parametric.child SANDBOX_DIR", file=sys.stderr)
        return 2
    sandbox = Path(argv[0])
    if os.getpid() == 1:
        return _pid_one(sandbox)
    code = run_job(sandbox)
    sys.stdout.flush()
    sys.stderr.flush()
    # skips tearing down CadQuery's modules (half a second); the result is written already
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
