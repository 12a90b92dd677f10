"""File paths inside a design, and their media types.

A path names a file relative to the design's root, with forward slashes. Anything that could
escape that root or mean different things on different systems is refused.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

from dgml.errors import Invalid

MAX_PATH_LENGTH = 512
_DRIVE_RE = re.compile(r"^[A-Za-z]:")

MEDIA_TYPES = {
    ".stl": "model/stl",
    ".3mf": "model/3mf",
    ".obj": "model/obj",
    ".ply": "application/x-ply",
    ".step": "model/step",
    ".stp": "model/step",
    ".dxf": "image/vnd.dxf",
    ".svg": "image/svg+xml",
    ".py": "text/x-python",
    ".md": "text/markdown",
    ".toml": "application/toml",
    ".gcode": "text/x.gcode",
    ".scad": "application/x-openscad",
}


def check_path(raw: str, *, field: str = "files") -> str:
    """Return ``raw`` as a clean relative path, or raise a 422 saying what is wrong with it."""
    if not isinstance(raw, str) or raw == "":
        raise Invalid("a file needs a name (the upload's filename is its path)", field=field)
    if "\x00" in raw:
        raise Invalid("file path contains a NUL byte", field=field, path=raw.replace("\x00", "\\0"))
    if any(unicodedata.category(ch) == "Cc" for ch in raw):
        raise Invalid("file path contains a control character", field=field, path=raw)
    if "\\" in raw:
        raise Invalid("file path contains a backslash; use forward slashes", field=field, path=raw)
    if raw.startswith("/") or _DRIVE_RE.match(raw):
        raise Invalid("file path must be relative to the design", field=field, path=raw)
    if len(raw.encode()) > MAX_PATH_LENGTH:
        raise Invalid(f"file path is longer than {MAX_PATH_LENGTH} bytes", field=field, path=raw)
    parts = raw.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise Invalid("file path has an empty, '.' or '..' segment", field=field, path=raw)
        if part != part.strip():
            raise Invalid(
                "file path segment starts or ends with white space", field=field, path=raw
            )
    return unicodedata.normalize("NFC", raw)


def media_type_for(path: str) -> str:
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") else ""
    if ext in MEDIA_TYPES:
        return MEDIA_TYPES[ext]
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or "application/octet-stream"
