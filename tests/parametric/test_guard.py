"""The audit hook's rules, called directly (not installed in the test process)."""

from __future__ import annotations

import os

import pytest

from registry.parametric.guard import make_hook

WORK = "/tmp/sandbox-x/work"
READ = ("/opt/python", "/usr")


@pytest.fixture
def hook_and_refusals():
    refusals: list[str] = []
    return make_hook(WORK, READ, ("/dev/null",), refusals), refusals


@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("open", ("out/part.stl", "wb", os.O_WRONLY | os.O_CREAT)),
        ("open", (f"{WORK}/notes.txt", "r", os.O_RDONLY)),
        ("open", ("/usr/share/fonts/a.ttf", "rb", os.O_RDONLY)),
        ("open", ("/opt/python/lib/json/__init__.py", "r", os.O_RDONLY)),
        ("open", (b"out/x", "w", os.O_WRONLY)),
        ("open", (3, "rb", os.O_RDONLY)),
        ("open", ("/dev/null", "w", os.O_WRONLY)),
        ("os.mkdir", ("out", 0o777, -1)),
        ("os.listdir", ("/usr/lib",)),
        ("os.rename", ("a.tmp", "a", -1, -1)),
        ("compile", (b"", "<string>")),
        ("import", ("json", None, [], [], [])),
    ],
)
def test_allowed(hook_and_refusals, event, args):
    hook, refusals = hook_and_refusals
    hook(event, args)
    assert refusals == []


@pytest.mark.parametrize(
    ("event", "args", "words"),
    [
        ("open", ("/etc/passwd", "r", os.O_RDONLY), "for reading outside"),
        ("open", ("../../../etc/passwd", "r", os.O_RDONLY), "for reading outside"),
        ("open", (f"{WORK}/../job.json", "r", os.O_RDONLY), "for reading outside"),
        ("open", ("/usr/../etc/shadow", "rb", os.O_RDONLY), "for reading outside"),
        ("open", ("/proc/self/root/etc/passwd", "r", os.O_RDONLY), "for reading outside"),
        ("open", ("/tmp/escape", "w", os.O_WRONLY | os.O_CREAT), "for writing outside"),
        ("open", ("/usr/lib/x.so", "r+", os.O_RDWR), "for writing outside"),
        ("open", ("/opt/python/lib/evil.py", None, os.O_APPEND), "for writing outside"),
        ("open", ("passwd", None, os.O_RDONLY), "relative path"),
        ("open", (object(), "r", 0), "not given as text"),
        ("os.remove", ("/tmp/other", -1), "for writing outside"),
        ("os.remove", ("x", 5), "directory descriptor"),
        ("os.listdir", ("/tmp",), "for reading outside"),
        ("os.symlink", ("/etc/passwd", "link", -1), "os.symlink"),
        ("os.link", ("/etc/passwd", "link", -1, -1, True), "os.link"),
        ("os.system", (b"touch /tmp/x",), "os.system"),
        ("os.fork", (), "os.fork"),
        ("os.exec", ("/bin/sh", ["sh"], None), "os.exec"),
        ("os.posix_spawn", ("/bin/sh", ["sh"], {}), "os.posix_spawn"),
        ("subprocess.Popen", ("/bin/sh", ["sh"], None, None), "subprocess.Popen"),
        ("socket.__new__", (None, 2, 1, 0), "socket.__new__"),
        ("socket.connect", (None, ("127.0.0.1", 80)), "socket.connect"),
        ("ctypes.dlopen", ("libc.so.6",), "ctypes.dlopen"),
        ("gc.get_objects", (None,), "gc.get_objects"),
        ("sqlite3.connect", ("/data/dgml.sqlite3",), "sqlite3.connect"),
        ("import", ("subprocess", None, [], [], []), "import of subprocess"),
        ("import", ("urllib.request", None, [], [], []), "import of urllib.request"),
    ],
)
def test_refused_and_recorded(hook_and_refusals, event, args, words):
    hook, refusals = hook_and_refusals
    with pytest.raises(PermissionError, match="the build sandbox refuses"):
        hook(event, args)
    assert len(refusals) == 1 and words in refusals[0]


def test_a_byte_code_cache_write_is_refused_quietly(hook_and_refusals):
    hook, refusals = hook_and_refusals
    with pytest.raises(PermissionError):
        hook("open", ("/opt/python/lib/__pycache__/m.cpython-311.pyc.123", "wb", os.O_WRONLY))
    assert refusals == []


def test_the_hook_does_not_use_functions_the_script_could_replace(monkeypatch, hook_and_refusals):
    hook, _ = hook_and_refusals
    import builtins
    import posixpath

    monkeypatch.setattr(posixpath, "realpath", lambda path, **kw: f"{WORK}/fine")
    monkeypatch.setattr(posixpath, "normpath", lambda path: f"{WORK}/fine")
    monkeypatch.setattr(builtins, "len", lambda obj: 0)
    with pytest.raises(PermissionError):
        hook("open", ("/etc/passwd", "r", os.O_RDONLY))
    with pytest.raises(PermissionError):
        hook("os.remove", ("/tmp/x", 3))


def test_replacing_code_and_importing_by_a_str_subclass_are_refused(hook_and_refusals):
    hook, refusals = hook_and_refusals

    class Sneaky(str):
        pass

    with pytest.raises(PermissionError):
        hook("object.__setattr__", (make_hook, "__code__", None))
    with pytest.raises(PermissionError):
        hook("import", (Sneaky("subprocess"), None, [], [], []))
    with pytest.raises(PermissionError):
        hook("open", (Sneaky("out/x"), "w", os.O_WRONLY))
    hook("object.__setattr__", (type, "__doc__", "x"))
    assert len(refusals) == 3
