"""The designs of the demo: accounts, the designs/ library published through the API, a maker's
fork with a changed parameter, and the wait for the hub's builds and geometry reports.

Everything goes through the HTTP API, as the CLI would send it, except the accounts: the hub
operator makes those on the database (``dgml user create`` does the same). Publishing is safe to
repeat on a kept data dir: a design that is already there keeps its versions.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import write_session
from dgml.demo.hub import DemoError
from registry import accounts
from registry.models import User

API = "/api/v1"
PUBLISHER = "dgml"  # the project's own designs are published under this account
BUILD_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Account:
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Fork:
    """A maker's fork of a library design, pushed with one parameter's default changed."""

    origin: str  # the library design's name
    maker: str
    parameter: str
    value: float


def default_designs_dir() -> Path:
    """designs/ of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "designs"


def account(sessions: sessionmaker[Session], name: str, *, admin: bool = False) -> Account:
    """The account (made when missing) and a fresh token for it."""
    with write_session(sessions) as session:
        user = session.scalar(select(User).where(User.name_folded == name.casefold()))
        if user is None:
            user = accounts.create_user(session, name, is_admin=admin)
        token = accounts.issue_token(session, user, label="dgml demo")
        return Account(name, token)


def check(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON of a successful answer, else one line naming what failed and the hub's words."""
    if response.is_success:
        return response.json() if response.content else {}
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise DemoError(f"{what}: the hub answered {response.status_code}: {str(detail)[:300]}")


def library_folders(designs_dir: Path) -> list[Path]:
    if not designs_dir.is_dir():
        raise DemoError(f"no designs library at {designs_dir} (give it with --designs)")
    folders = sorted(p for p in designs_dir.iterdir() if (p / "manifest.json").is_file())
    if not folders:
        raise DemoError(f"{designs_dir} holds no design folder with a manifest.json")
    return folders


def _title(folder: Path) -> str:
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()[:120]
    return folder.name


def _files(folder: Path, replace: dict[str, bytes] | None = None) -> list[tuple[str, bytes]]:
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    files.update(replace or {})
    return sorted(files.items())


def push(
    http: httpx.Client, owner: Account, name: str, files: list[tuple[str, bytes]], message: str
) -> dict[str, Any]:
    """Push a version: every file, and the manifest as the form field the hub keeps."""
    manifest = dict(files).get("manifest.json", b"").decode("utf-8")
    form = {"message": message, **({"manifest": manifest} if manifest else {})}
    response = http.post(
        f"{API}/designs/{owner.name}/{name}/versions",
        files=[("files", (path, data)) for path, data in files],
        data=form,
        headers=owner.headers,
    )
    return check(response, f"pushing {owner.name}/{name}")


def publish(http: httpx.Client, owner: Account, folder: Path) -> int:
    """Create the design of a library folder and push its files; the newest version number."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    body = {"name": folder.name, "title": _title(folder), "license": manifest["license"]}
    body["description"] = str(manifest.get("function", ""))[:1000]
    created = http.post(f"{API}/designs", json=body, headers=owner.headers)
    if created.status_code != 409:
        check(created, f"creating {owner.name}/{folder.name}")
    versions = check(
        http.get(f"{API}/designs/{owner.name}/{folder.name}/versions"), f"listing {folder.name}"
    )
    if versions.get("items"):
        return max(int(v["number"]) for v in versions["items"])
    message = f"{folder.name} from the dgml designs library"
    return int(push(http, owner, folder.name, _files(folder), message)["number"])


def changed_default(folder: Path, parameter: str, value: float) -> dict[str, bytes]:
    """design.py and manifest.json of a library folder with one parameter's default changed."""
    script = (folder / "design.py").read_text(encoding="utf-8")
    pattern = re.compile(rf"^({re.escape(parameter)}\s*=\s*)[-0-9.]+", re.MULTILINE)
    script, count = pattern.subn(lambda m: f"{m.group(1)}{value!r}", script, count=1)
    if count != 1:
        raise DemoError(f"{folder.name}/design.py has no number parameter {parameter!r}")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for declared in manifest.get("parameters", []):
        if declared.get("name") == parameter:
            declared["default"] = value
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    return {"design.py": script.encode(), "manifest.json": text.encode()}


def fork_and_change(
    http: httpx.Client, maker: Account, fork: Fork, designs_dir: Path, version: int
) -> int:
    """Fork the library design into the maker's account and push the changed default; the
    fork's new version number."""
    origin = f"{API}/designs/{PUBLISHER}/{fork.origin}/versions/{version}/fork"
    answer = http.post(origin, json={}, headers=maker.headers)
    if answer.status_code != 409:  # already forked on a kept data dir
        check(answer, f"forking {PUBLISHER}/{fork.origin}")
    done = _changed_version(http, maker, fork)
    if done is not None:
        return done
    folder = designs_dir / fork.origin
    files = _files(folder, changed_default(folder, fork.parameter, fork.value))
    message = f"{fork.parameter} = {fork.value:g} by default"
    return int(push(http, maker, fork.origin, files, message)["number"])


def _changed_version(http: httpx.Client, maker: Account, fork: Fork) -> int | None:
    """The fork's newest version when it already has the changed default (a kept data dir)."""
    design = f"{API}/designs/{maker.name}/{fork.origin}/versions"
    listed = check(http.get(design), f"listing {maker.name}/{fork.origin}").get("items") or []
    if not listed:
        return None
    newest = max(int(v["number"]) for v in listed)
    version = check(http.get(f"{design}/{newest}"), f"reading {maker.name}/{fork.origin}")
    for declared in version.get("manifest", {}).get("parameters", []):
        if declared.get("name") == fork.parameter and declared.get("default") == fork.value:
            return newest
    return None


def request_build(
    http: httpx.Client, who: Account, design: str, version: int, params: dict[str, Any]
) -> str:
    """Ask for the build of these values (the defaults when empty); its URL."""
    url = f"{API}/designs/{design}/versions/{version}/builds"
    build = check(
        http.post(url, json={"params": params}, headers=who.headers), f"building {design}"
    )
    return f"{url}/{build['id']}"


def wait_builds(http: httpx.Client, urls: dict[str, str], timeout: float = BUILD_TIMEOUT_S) -> dict:
    """Wait until every build is built and checked; its verdict by label. A failed build is
    an error: the demo's designs are meant to build."""
    deadline = time.monotonic() + timeout
    verdicts: dict[str, str] = {}
    while len(verdicts) < len(urls):
        for label, url in urls.items():
            if label in verdicts:
                continue
            build = check(http.get(url), f"following the build of {label}")
            if build["state"] == "failed":
                raise DemoError(f"the build of {label} failed: {build.get('error')}")
            if build["state"] == "done" and build["verdict"] != "pending":
                verdicts[label] = build["verdict"]
        if len(verdicts) < len(urls):
            if time.monotonic() > deadline:
                waiting = sorted(set(urls) - set(verdicts))
                raise DemoError(f"builds not done within {timeout:.0f} s: {', '.join(waiting)}")
            time.sleep(0.2)
    return verdicts
