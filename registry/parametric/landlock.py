"""Landlock: the kernel confines the build's files to a few trees (Linux 5.13 and later).

A Landlock ruleset names every kind of file access it handles; whatever a rule does not allow
beneath some directory is refused by the kernel, for C++ code (OpenCascade reading a STEP file)
as much as for Python. The sandbox handles every access right the running kernel knows and
grants:

- read (files and directory listings, no execution) beneath the Python installation, the
  virtual environment, the project's ``registry`` package, ``/usr``, ``/lib*``, the fontconfig
  files and the loader cache;
- read and write beneath the working dir only (no device nodes, sockets, pipes or symlinks,
  and no links or renames from elsewhere: ``REFER`` is handled and never granted);
- ``/dev/null``, ``/dev/zero`` and ``/dev/urandom``.

From ABI 4 TCP bind and connect are handled with no rule, so refused; from ABI 6 signals and
abstract UNIX sockets are scoped to the sandbox. ``execve`` is never granted anywhere, so no
program can be started. Python 3.11 has no binding, so the three system calls go through
ctypes, which the child does before its audit hook forbids ctypes.
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
REFER = 1 << 13
TRUNCATE = 1 << 14
IOCTL_DEV = 1 << 15
_ABI1_ALL = (1 << 13) - 1
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

READ = READ_FILE | READ_DIR
WRITE = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | TRUNCATE
DEVICE = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """The Landlock ABI the kernel offers, 0 where it has none (or it is switched off)."""
    try:
        version = _libc().syscall(
            _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
        )
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def handled_fs(abi: int) -> int:
    rights = _ABI1_ALL
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def no_new_privs() -> None:
    """From now on ``execve`` grants nothing: no setuid or file capabilities."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


class Ruleset:
    """Rules gathered before the drop of privileges (paths must still be reachable), enforced
    on this process and every process it starts by ``enforce``."""

    def __init__(self, abi: int) -> None:
        self.abi = abi
        self._libc = _libc()
        self._handled = handled_fs(abi)
        attr = _RulesetAttr(
            self._handled,
            NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0,
        )
        fd = self._libc.syscall(
            _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0
        )
        if fd < 0:
            raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
        self.fd = int(fd)

    def allow(self, path: str | Path, access: int) -> bool:
        """Allow ``access`` beneath ``path``; False when the path does not exist."""
        try:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not stat.S_ISDIR(os.fstat(target).st_mode):
                access &= _FILE_ONLY
            rule = _PathBeneathAttr(access & self._handled, target)
            done = self._libc.syscall(
                _SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0
            )
            if done < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
        finally:
            os.close(target)
        return True

    def enforce(self) -> None:
        """Confine this process for good (``no_new_privs`` first, as Landlock requires)."""
        no_new_privs()
        if self._libc.syscall(_SYS_RESTRICT_SELF, self.fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        os.close(self.fd)
