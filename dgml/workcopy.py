"""A working copy: the files of one design version on disk, and ``dgml.toml`` saying which.

Decisions:

- ``dgml.toml`` at the root records where the files came from (hub, owner, name, version) and
  the sha256 of every file of that version. Status is found by hashing what is on disk and
  comparing: no copy of the old bytes is kept, so the hub is asked for them when a diff needs
  them.
- The root is found by walking up from the current folder to the first ``dgml.toml``, as git
  finds ``.git``; a folder below that holds a ``dgml.toml`` of its own is another working copy
  and is left out of this one.
- Not part of a design: ``dgml.toml`` itself, version-control and cache folders (``.git/``,
  ``__pycache__/`` ...), compiled Python, editor and desktop leftovers, temporary files of
  dgml's own transfers, symbolic links (a design is regular files), and whatever the
  design's ``.dgmlignore`` lists (one pattern a line; a trailing ``/`` means a folder).
- Paths that come from a hub are checked before anything is written: relative, forward
  slashes, no ``..``, no control characters, so a hostile hub cannot write outside the folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dgml.errors import DgmlError

META = "dgml.toml"
IGNORE_FILE = ".dgmlignore"
IGNORED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
IGNORED_NAMES = {META, ".DS_Store", "Thumbs.db", "desktop.ini"}
IGNORED_PATTERNS = ("*.pyc", "*.pyo", "*~", ".*.swp", "._*", ".dgml-*")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class NotAWorkingCopy(DgmlError):
    """The command needs a working copy and there is none here."""


@dataclass(frozen=True)
class Origin:
    server: str
    owner: str
    name: str
    version: int

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Status:
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.changed or self.added or self.removed)

    @property
    def count(self) -> int:
        return len(self.changed) + len(self.added) + len(self.removed)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1024 * 1024):
                digest.update(chunk)
    except OSError as exc:
        raise DgmlError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def safe_path(raw: object) -> str:
    """``raw`` if it is a plain relative path inside a design, otherwise an error."""
    if not isinstance(raw, str) or not raw:
        raise DgmlError(f"the hub named a file without a usable path: {raw!r}")
    bad = (
        raw.startswith("/")
        or "\\" in raw
        or re.match(r"^[A-Za-z]:", raw)
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw)
        or any(part in ("", ".", "..") for part in raw.split("/"))
    )
    if bad:
        raise DgmlError(f"refusing a file path that could leave the working copy: {raw!r}")
    return raw


def compare(base: dict[str, str], current: dict[str, str]) -> Status:
    """What changed from ``base`` to ``current`` (both ``{path: sha256}``)."""
    return Status(
        changed=sorted(p for p in base.keys() & current.keys() if base[p] != current[p]),
        added=sorted(current.keys() - base.keys()),
        removed=sorted(base.keys() - current.keys()),
    )


@dataclass
class WorkingCopy:
    root: Path
    origin: Origin
    files: dict[str, str]

    @property
    def meta_path(self) -> Path:
        return self.root / META

    def _ignore_patterns(self) -> list[str]:
        try:
            text = (self.root / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        lines = (line.strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]

    def _ignored(self, relative: str, is_dir: bool, patterns: list[str]) -> bool:
        name = PurePosixPath(relative).name
        if is_dir and name in IGNORED_DIRS:
            return True
        if not is_dir and (
            name in IGNORED_NAMES or any(fnmatch.fnmatch(name, p) for p in IGNORED_PATTERNS)
        ):
            return True
        for pattern in patterns:
            folder_only = pattern.endswith("/")
            pattern = pattern.rstrip("/").lstrip("/")
            if folder_only and not is_dir:
                continue
            target = relative if "/" in pattern else name
            if fnmatch.fnmatch(target, pattern):
                return True
        return False

    def scan(self) -> dict[str, Path]:
        """The design's files on disk: ``{path: file}``, paths relative with forward slashes."""
        patterns = self._ignore_patterns()
        found: dict[str, Path] = {}
        for folder, dirs, names in os.walk(self.root):
            here = Path(folder)
            prefix = here.relative_to(self.root).as_posix()
            prefix = "" if prefix == "." else prefix + "/"
            kept = []
            for d in sorted(dirs):
                sub = here / d
                if sub.is_symlink() or self._ignored(prefix + d, True, patterns):
                    continue
                if (sub / META).is_file():  # a working copy of its own
                    continue
                kept.append(d)
            dirs[:] = kept
            for n in sorted(names):
                path = here / n
                if path.is_symlink() or not path.is_file():
                    continue
                if not self._ignored(prefix + n, False, patterns):
                    found[prefix + n] = path
        return found

    def hashes(self) -> dict[str, str]:
        return {path: sha256_file(file) for path, file in self.scan().items()}

    def status(self, base: dict[str, str] | None = None) -> Status:
        return compare(self.files if base is None else base, self.hashes())

    def save(self) -> None:
        write_meta(self.root, self.origin, self.files)


def write_meta(root: Path, origin: Origin, files: dict[str, str]) -> None:
    """Write ``dgml.toml`` whole, by renaming a finished temporary file over the old one."""
    lines = [
        "# dgml working copy: where these files came from. dgml keeps this file up to date.",
        "",
        "[origin]",
        f"server = {json.dumps(origin.server)}",
        f"owner = {json.dumps(origin.owner)}",
        f"name = {json.dumps(origin.name)}",
        f"version = {origin.version}",
        "",
        "[files]",
        *(f"{json.dumps(path)} = {json.dumps(sha)}" for path, sha in sorted(files.items())),
        "",
    ]
    handle, temporary = tempfile.mkstemp(prefix=".dgml-meta-", dir=root)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write("\n".join(lines))
        os.replace(temporary, root / META)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unreadable(path: Path, why: str) -> DgmlError:
    return DgmlError(
        f"{path} is not readable ({why}): restore it, or fetch the design again into a new "
        "folder and copy your changes over"
    )


def load(root: Path) -> WorkingCopy:
    """The working copy whose ``dgml.toml`` is in ``root``, checked field by field."""
    path = root / META
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _unreadable(path, "it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise _unreadable(path, str(exc)) from None
    except OSError as exc:
        raise DgmlError(f"cannot read {path}: {exc.strerror}") from None
    origin = data.get("origin")
    files = data.get("files")
    if not isinstance(origin, dict) or not isinstance(files, dict):
        raise _unreadable(path, "it needs an [origin] and a [files] table")
    for key in ("server", "owner", "name"):
        if not isinstance(origin.get(key), str) or not origin[key]:
            raise _unreadable(path, f"origin.{key} must be a text")
    version = origin.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _unreadable(path, "origin.version must be a version number")
    for name, sha in files.items():
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise _unreadable(path, f"the hash of {name!r} is not a sha256")
    return WorkingCopy(
        root=root,
        origin=Origin(origin["server"], origin["owner"], origin["name"], version),
        files=dict(files),
    )


def find_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / META).is_file():
            return folder
    return None


def find(start: Path | None = None) -> WorkingCopy:
    """The working copy that holds ``start`` (the current folder by default)."""
    here = (start or Path.cwd()).resolve()
    root = find_root(here)
    if root is None:
        raise NotAWorkingCopy(
            f"not in a dgml working copy (no {META} in {here} or any folder above it): "
            "run dgml fetch OWNER/NAME first"
        )
    return load(root)


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def walk_up_empty(folder: Path, root: Path) -> Iterator[Path]:
    """Folders from ``folder`` up to (not including) ``root`` that are empty, deepest first."""
    while folder != root and root in folder.parents and is_empty_folder(folder):
        yield folder
        folder = folder.parent
