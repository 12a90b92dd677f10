"""The audit hook: the last layer, inside the interpreter that runs the script.

``arm`` installs a ``sys.addaudithook`` hook (PEP 578) once the child has imported what the
script may use, so CadQuery, OCP and numpy load unhindered. From then on the hook refuses, by
raising ``PermissionError``:

- sockets, ``subprocess``, ``os.system``, ``os.exec*``, ``os.spawn*``, ``os.posix_spawn``,
  ``os.fork``/``forkpty``, ``os.kill``/``killpg``, ``pty``, ``sqlite3.connect`` and network
  clients in the standard library;
- every ``ctypes`` event (loading a library, calling a function, reading memory), ``gc``
  introspection (the way to reach the hook's own state), new audit hooks, ``resource``
  changes, ``os.chdir``, ``os.chown``, symlinks and hard links;
- ``open`` for writing outside the working dir and for reading outside the allowed roots; the
  same for the file operations that name paths (listing, mkdir, remove, rename, chmod, utime,
  truncate); operations relative to a directory descriptor (``dir_fd``) and ``os.open`` of a
  relative path, whose real target the hook cannot see; paths passed as objects other than
  ``str``, ``bytes`` or a file descriptor;
- the first import of modules that exist to reach outside (ctypes, socket, subprocess,
  multiprocessing, ssl, sqlite3, ...). A module already loaded by CadQuery stays importable;
  what it does is still refused above.

Paths are judged lexically (``..`` folded, relative paths taken from the working dir, which
cannot change): the hook never calls code the script could replace. Every function it needs is
bound when it is made (its path folding is a private copy), replacing a function's code or
defaults is refused, and nothing but the interpreter holds the hook once it is installed, so
its closure cannot be reached (CPython runs audit hooks untraced, so no tracer can rewrite its
cells either); the list of refusals is the only state the script could find. Refused
byte-code cache writes (``__pycache__``) are not recorded: importing a module whose cache is
stale tries one, harmlessly.

The hook is a speed bump, not a wall: a script that corrupts memory gets past it. The kernel
layers (namespaces, the unprivileged user, Landlock, resource limits) are the walls; the hook
makes the common attacks fail early, by name, on systems that lack some of them.
"""

from __future__ import annotations

import os
import sys
from types import FunctionType

DENIED_MODULES = frozenset(
    {
        "ctypes",
        "_ctypes",
        "socket",
        "_socket",
        "ssl",
        "_ssl",
        "subprocess",
        "_posixsubprocess",
        "multiprocessing",
        "_multiprocessing",
        "pty",
        "sqlite3",
        "_sqlite3",
        "asyncio",
        "ftplib",
        "smtplib",
        "poplib",
        "imaplib",
        "telnetlib",
        "http",
        "urllib",
        "xmlrpc",
        "webbrowser",
        "socketserver",
        "resource",
    }
)
_REFUSED_PREFIXES = (
    "socket.",
    "subprocess.",
    "ctypes.",
    "pty.",
    "sqlite3.",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.system",
    "os.kill",
    "os.chdir",
    "os.chown",
    "os.chflags",
    "os.link",
    "os.symlink",
    "os.setxattr",
    "os.removexattr",
    "os.add_dll_directory",
    "os.startfile",
    "shutil.chown",
    "gc.get_",
    "resource.",
    "sys.addaudithook",
    "sys._current_frames",
    "signal.pthread_kill",
    "webbrowser.",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "_winapi.",
    "winreg.",
    "msvcrt.",
)
# Events naming paths: (event, indices of paths, whether they write, index of a dir_fd or -1).
_PATH_EVENTS = {
    "os.listdir": ((0,), False, -1),
    "os.scandir": ((0,), False, -1),
    "os.walk": ((0,), False, -1),
    "os.fwalk": ((0,), False, 4),
    "glob.glob": ((0,), False, -1),
    "glob.glob/2": ((0, 2), False, 3),
    "os.getxattr": ((0,), False, -1),
    "os.listxattr": ((0,), False, -1),
    "os.mkdir": ((0,), True, 2),
    "os.rmdir": ((0,), True, 1),
    "os.remove": ((0,), True, 1),
    "os.truncate": ((0,), True, -1),
    "os.utime": ((0,), True, 3),
    "os.chmod": ((0,), True, 2),
    "os.rename": ((0, 1), True, 2),
    "shutil.copyfile": ((1,), True, -1),
    "shutil.copytree": ((1,), True, -1),
    "shutil.move": ((0, 1), True, -1),
    "shutil.rmtree": ((0,), True, 1),
    "tempfile.mkstemp": ((0,), True, -1),
    "tempfile.mkdtemp": ((0,), True, -1),
}
_PASSED = frozenset({"compile", "exec", "marshal.loads", "sys._getframe", "builtins.id"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _normal(path: str, base: str) -> str:
    """``path`` made absolute from ``base`` with ``.``, ``..`` and repeated slashes folded."""
    if not path.startswith("/"):
        path = base + "/" + path
    parts: list[str] = []
    for piece in path.split("/"):
        if piece == "" or piece == ".":
            continue
        if piece == "..":
            if parts:
                parts.pop()
            continue
        parts.append(piece)
    return "/" + "/".join(parts)


def _prefixes(roots: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    every = set()
    for root in roots:
        every.add(_normal(root, "/"))
        every.add(_normal(os.path.realpath(root), "/"))
    every.discard("/")
    return tuple(sorted(r + "/" for r in every)), frozenset(every)


def make_hook(workdir: str, read_roots: tuple[str, ...], write_roots: tuple[str, ...], refusals):
    """The hook function (not installed); ``refusals`` is a list that collects what it
    refused, one line each."""
    base = _normal(os.path.realpath(workdir), "/")
    read_under, read_exact = _prefixes((*read_roots, *write_roots, workdir))
    write_under, write_exact = _prefixes((*write_roots, workdir))
    # a copy of ``_normal`` that only the hook holds: the module's function could be patched
    normal = FunctionType(_normal.__code__, {}, "normal")
    record = refusals.append
    text_types, int_type, bytes_type, kind_of, size_of = (str,), int, bytes, type, len
    denied_modules, refused, path_events, passed = (
        DENIED_MODULES,
        _REFUSED_PREFIXES,
        _PATH_EVENTS,
        _PASSED,
    )
    denied = PermissionError
    write_flags = _WRITE_FLAGS
    code_attributes = frozenset({"__code__", "__defaults__", "__kwdefaults__"})

    def refuse(what: str, quiet: bool = False):
        if not quiet:
            record(what)
        raise denied(f"the build sandbox refuses {what}")

    def allowed(path, write: bool, event: str):
        kind = kind_of(path)
        if kind is int_type:
            return
        if kind is bytes_type:
            path = path.decode("utf-8", "surrogateescape")
        elif kind not in text_types:
            refuse(f"{event} of a path that is not given as text")
        if "\0" in path:
            refuse(f"{event} of a path with a NUL byte")
        full = normal(path, base)
        if write:
            if full in write_exact or full.startswith(write_under):
                return
            refuse(
                f"{event}({path!r}) for writing outside the working dir",
                quiet="/__pycache__/" in full and ".pyc" in full,
            )
        if not (full in read_exact or full.startswith(read_under)):
            refuse(f"{event}({path!r}) for reading outside the allowed directories")

    def hook(event: str, args: tuple) -> None:
        if event in passed:
            return
        if event == "open":
            path, mode, flags = args
            if mode is None and kind_of(path) is not int_type:
                text = path.decode("latin-1") if kind_of(path) is bytes_type else path
                if kind_of(text) in text_types and not text.startswith("/"):
                    refuse(f"os.open({path!r}) of a relative path")
            writing = (flags & write_flags) != 0 or (
                kind_of(mode) in text_types
                and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
            )
            allowed(path, writing, "open")
            return
        if event == "import":
            name = args[0]
            if kind_of(name) not in text_types:
                refuse("import of a module named by something other than text")
            if name.partition(".")[0] in denied_modules:
                refuse(f"import of {name}")
            return
        if event == "object.__setattr__":
            if size_of(args) > 1 and args[1] in code_attributes:
                refuse(f"replacing a function's {args[1]}")
            return
        if event.startswith(refused):
            refuse(event)
        rule = path_events.get(event)
        if rule is not None:
            indices, write, dir_fd_at = rule
            # a dir_fd of None or -1 means "none given"
            if dir_fd_at >= 0 and size_of(args) > dir_fd_at and args[dir_fd_at] not in (None, -1):
                refuse(f"{event} relative to a directory descriptor")
            for index in indices:
                if size_of(args) > index and args[index] is not None:
                    allowed(args[index], write, event)

    return hook


def arm(hook) -> None:
    """Install ``hook`` for the rest of this process's life (it cannot be taken back)."""
    sys.addaudithook(hook)
