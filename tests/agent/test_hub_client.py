"""The agent's HTTP client and token file, against small real servers: the token goes to the
hub's origin only, failures that may pass are tried again with backoff, others are not, leases
are read on the hub's clock; the token file is private and written whole."""

from __future__ import annotations

import email.utils
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dgml.errors import Conflict, Invalid, NotFound
from tests.conftest import free_port
from workers.enrolment import (
    Credentials,
    NotEnrolled,
    credentials_path,
    load_credentials,
    save_credentials,
)
from workers.hub import HubClient, HubUnavailable, Retry, clip

QUICK = Retry(attempts=4, base_s=0.01, cap_s=0.05)


@dataclass
class Scripted:
    """A server that answers from a script (status, body, headers) and records requests."""

    base: str = ""
    script: list[tuple[int, dict, dict]] = field(default_factory=list)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    date: str | None = None  # the Date header the server sends (its clock)

    def answer(self) -> tuple[int, dict, dict]:
        return self.script.pop(0) if self.script else (200, {"jobs": []}, {})


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    yield from _serve()


@pytest.fixture
def elsewhere() -> Iterator[Scripted]:
    yield from _serve()


def _serve() -> Iterator[Scripted]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            state.seen.append((self.command, self.path, self.headers.get("authorization")))
            status, body, headers = state.answer()
            data = json.dumps(body).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _any

        def date_time_string(self, timestamp: float | None = None) -> str:
            return state.date or super().date_time_string(timestamp)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_the_token_goes_to_the_hub_and_nowhere_else(scripted, elsewhere):
    with HubClient(scripted.base, "dgml_agent_secret", retry=QUICK) as hub:
        hub.jobs()
        hub.http.get(elsewhere.base + "/file")  # even a request made by hand
        assert [auth for _, _, auth in scripted.seen] == ["Bearer dgml_agent_secret"]
        assert [auth for _, _, auth in elsewhere.seen] == [None]
        with pytest.raises(Invalid, match="not on the hub"):
            hub.resolve(elsewhere.base + "/api/v1/designs/a/b/versions/1/files/x.stl")


@pytest.mark.parametrize(
    "url",
    [
        "//evil.example/x.stl",
        "https://127.0.0.1/x.stl",  # another scheme and port: another origin
        "file:///etc/passwd",
        "",
    ],
)
def test_file_urls_off_the_hub_are_refused(url):
    with HubClient("http://127.0.0.1:8765", "t") as hub, pytest.raises(Invalid):
        hub.resolve(url)


def test_file_urls_are_resolved_against_the_hub():
    with HubClient("https://hub.example.org/dgml/", "t") as hub:
        assert hub.resolve("/api/v1/x.stl") == "https://hub.example.org/dgml/api/v1/x.stl"
        assert hub.resolve("https://HUB.example.org:443/y") == "https://HUB.example.org:443/y"


def test_5xx_and_429_are_tried_again_other_errors_are_not(scripted):
    scripted.script = [
        (500, {"error": "internal", "detail": "boom"}, {}),
        (429, {"error": "slow_down", "detail": "later"}, {"Retry-After": "0"}),
        (503, {"error": "unavailable", "detail": "later"}, {}),
        (200, {"jobs": []}, {}),
    ]
    with HubClient(scripted.base, "t", retry=QUICK) as hub:
        assert hub.jobs() == []
        assert len(scripted.seen) == 4

        scripted.script = [(409, {"error": "conflict", "detail": "lease lost", "state": "x"}, {})]
        with pytest.raises(Conflict, match="lease lost") as caught:
            hub.heartbeat(1)
        assert caught.value.data["state"] == "x"
        scripted.script = [(404, {"error": "not_found", "detail": "no job 7"}, {})]
        with pytest.raises(NotFound, match="no job 7"):
            hub.job(7)
        assert len(scripted.seen) == 6  # one request each

        scripted.script = [(500, {"error": "internal", "detail": "boom"}, {})] * 4
        with pytest.raises(HubUnavailable, match="answered 500"):
            hub.claim(0)
        assert len(scripted.seen) == 10


def test_enrolment_is_not_repeated_once_it_may_have_reached_the_hub(scripted):
    scripted.script = [(500, {"error": "internal", "detail": "boom"}, {})]
    with HubClient(scripted.base, retry=QUICK) as hub, pytest.raises(HubUnavailable):
        hub.enroll("dgml_enrol_x")
    assert len(scripted.seen) == 1


def test_no_hub_at_all_is_unavailable_after_the_tries():
    with HubClient(f"http://127.0.0.1:{free_port()}", "t", retry=QUICK) as hub:
        with pytest.raises(HubUnavailable, match="cannot reach the hub"):
            hub.jobs()
        assert not hub.reachable and "cannot reach" in (hub.last_error or "")


def test_leases_are_read_on_the_hubs_clock(scripted):
    hub_now = datetime.now(UTC) + timedelta(hours=1)  # the hub's clock is an hour ahead
    expires = (hub_now + timedelta(seconds=60)).isoformat()
    scripted.date = email.utils.format_datetime(hub_now, usegmt=True)
    scripted.script = [(200, {"id": 1, "state": "in_progress", "lease_expires_at": expires}, {})]
    with HubClient(scripted.base, "t", retry=QUICK) as hub:
        lease = hub.heartbeat(1)
        assert 58.0 <= hub.lease_left(lease["lease_expires_at"]) <= 61.5


def test_text_sent_to_the_hub_is_clipped_and_cleaned():
    assert clip("bad\x00byte\x1b[31m", 100) == "bad byte [31m"
    assert clip("x" * 600, 500) == "x" * 497 + "..."


def test_the_token_file_is_private_and_written_whole(tmp_path, caplog):
    state = tmp_path / "state"
    given = Credentials("http://127.0.0.1:8765", "lab-a", "dgml_agent_x", "2026-01-01T00:00:00")
    path = save_credentials(state, given)
    assert path == credentials_path(state)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["agent.json"]  # no temporary left
    assert load_credentials(state) == given

    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_credentials(state) == given
    assert path.stat().st_mode & 0o777 == 0o600
    assert "readable by others" in caplog.text

    path.write_text("{not json")
    with pytest.raises(NotEnrolled, match="enrol this agent again"):
        load_credentials(state)
    path.unlink()
    assert load_credentials(state) is None
