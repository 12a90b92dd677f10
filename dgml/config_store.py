"""The maker's stored logins: one token per hub, in the user's config dir.

Decisions:

- One file, ``logins.toml`` in platformdirs' user config dir (``DGML_CONFIG_DIR`` names another
  folder, for scripts and tests). It holds a token per hub address and which hub is the default
  (the last one logged in to), so ``--server`` picks a login and plain commands use the default.
- The file is written whole to a temporary file made with mode 0600 in the same folder, flushed,
  and renamed over the old one: a crash leaves the old file or the new one, never half of either,
  and the token is never readable by others, not even for a moment.
- A file that cannot be read is an error naming it, not a silent fresh start: logging in again
  would otherwise drop the other hubs' tokens without a word.
- TOML is written by hand (the values are plain strings); a JSON string literal is a valid TOML
  basic string, which takes care of quoting.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dgml.errors import DgmlError, Invalid

CONFIG_DIR_ENV = "DGML_CONFIG_DIR"
FILE_NAME = "logins.toml"


@dataclass(frozen=True)
class Login:
    server: str
    user: str
    token: str


def config_dir() -> Path:
    """Where the login file lives: ``DGML_CONFIG_DIR``, else the platform's user config dir."""
    given = os.environ.get(CONFIG_DIR_ENV)
    if given:
        return Path(given)
    from platformdirs import user_config_path

    return user_config_path("dgml", appauthor=False)


def normalise_server(raw: str) -> str:
    """A hub address as ``scheme://host[:port][/prefix]``: https when no scheme is given, no
    trailing slash, and no ``/api/v1`` (the client adds it), so one hub has one spelling."""
    text = raw.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"not a hub address: {raw!r} (give http://HOST:PORT or https://HOST)")
    if parts.query or parts.fragment:
        raise Invalid(f"a hub address has no query or fragment: {raw!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise Invalid(f"not a hub address: {raw!r} (the port is not a number)") from None
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return f"{parts.scheme}://{parts.netloc.lower()}{path}"


class LoginStore:
    """The login file: read on demand, written atomically with mode 0600."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME

    def _read(self) -> tuple[str | None, dict[str, Login]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, {}
        except OSError as exc:
            raise DgmlError(f"cannot read the login file {self.path}: {exc.strerror}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
            default = data.get("default")
            logins = {
                server: Login(server, str(entry["user"]), str(entry["token"]))
                for server, entry in data.get("logins", {}).items()
            }
            if default is not None and not isinstance(default, str):
                raise TypeError("default is not a string")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError):
            raise DgmlError(
                f"the login file {self.path} is not readable: fix it, or remove it and run "
                "dgml login again"
            ) from None
        return default, logins

    def default_server(self) -> str | None:
        return self._read()[0]

    def get(self, server: str) -> Login | None:
        return self._read()[1].get(server)

    def all(self) -> dict[str, Login]:
        return self._read()[1]

    def save(self, login: Login) -> None:
        """Store ``login`` and make its hub the default."""
        _, logins = self._read()
        logins[login.server] = login
        self._write(login.server, logins)

    def remove(self, server: str) -> bool:
        """Forget the login for ``server``; False when there was none."""
        default, logins = self._read()
        if logins.pop(server, None) is None:
            return False
        if default == server:
            default = next(iter(logins), None)
        self._write(default, logins)
        return True

    def _write(self, default: str | None, logins: dict[str, Login]) -> None:
        lines = ["# dgml logins: a token per hub. Keep this file private.", ""]
        if default is not None:
            lines += [f"default = {json.dumps(default)}", ""]
        for server, login in sorted(logins.items()):
            lines += [
                f"[logins.{json.dumps(server)}]",
                f"user = {json.dumps(login.user)}",
                f"token = {json.dumps(login.token)}",
                "",
            ]
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp makes the file readable and writable by its owner only (0600).
        handle, temporary = tempfile.mkstemp(prefix=".logins-", dir=self.directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write("\n".join(lines))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
