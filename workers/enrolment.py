"""The agent token: exchanged once for an enrolment token, kept in the state dir.

``<state_dir>/agent.json`` holds the server that issued the token, the fablab and the token.
It is written to a temporary file created with mode 0600 (never readable by others, not even
for an instant), synced, and renamed into place. A file found readable by others is made
private again, with a warning. The server is recorded so that the token is sent to the hub
that issued it and to no other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dgml.errors import DgmlError, Invalid, Unauthorized
from workers.hub import HubClient

log = logging.getLogger(__name__)

TOKEN_FILE = "agent.json"


class NotEnrolled(DgmlError):
    """This agent has no agent token for the hub (never enrolled, or its state dir was lost)."""

    status_code = 401
    code = "not_enrolled"


@dataclass(frozen=True)
class Credentials:
    """What enrolment gave this agent, and the hub that gave it."""

    server: str
    fablab_id: str
    agent_token: str
    enrolled_at: str


def credentials_path(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def save_credentials(state_dir: Path, credentials: Credentials) -> Path:
    """Write the token file atomically, readable by this user only."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = credentials_path(state_dir)
    temp = state_dir / f".{TOKEN_FILE}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(credentials), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return path


def load_credentials(state_dir: Path) -> Credentials | None:
    """The stored token, or None when there is none; an unreadable file is an error."""
    path = credentials_path(state_dir)
    try:
        mode = path.stat().st_mode & 0o777
        data = json.loads(path.read_text(encoding="utf-8"))
        credentials = Credentials(**{k: str(data[k]) for k in Credentials.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotEnrolled(
            f"{path} cannot be read ({exc.__class__.__name__}): enrol this agent again with "
            "--enrol TOKEN"
        ) from None
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); making it private", path, mode)
        path.chmod(0o600)
    return credentials


def enrol(server: str, enrolment_token: str, state_dir: Path, **client: Any) -> Credentials:
    """Exchange an enrolment token with the hub and keep the agent token in the state dir."""
    token = enrolment_token.strip()
    if not token:
        raise Invalid("the enrolment token is empty", field="enrol")
    with HubClient(server, **client) as hub:
        try:
            answer = hub.enroll(token)
        except Unauthorized as exc:
            raise NotEnrolled(
                f"the hub at {hub.server} refused the enrolment token: {exc.detail} "
                "(ask the fablab's operator for a new one)"
            ) from None
    credentials = Credentials(
        server=hub.server,
        fablab_id=str(answer["fablab_id"]),
        agent_token=str(answer["agent_token"]),
        enrolled_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    save_credentials(state_dir, credentials)
    return credentials


def not_enrolled_message(state_dir: Path, server: str) -> str:
    return (
        f"no agent token in {credentials_path(state_dir)}: enrol this agent with "
        f"`dgml agent --server {server} --enrol TOKEN` (the fablab's operator gets a token when "
        "registering the fablab, or a new one from POST /api/v1/fablabs/ID/enrolment-token)"
    )
