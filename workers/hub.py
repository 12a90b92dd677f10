"""The hub's agent API as the job agent calls it (the token itself: :mod:`workers.enrolment`).

Decisions:

- The agent token is a ``Bearer`` header added by :class:`HubAuth` to requests for the hub's own
  origin (scheme, host and port of the server URL) and to no others; redirects are not
  followed. File URLs in offers are resolved against the hub (:meth:`HubClient.resolve`) and a
  URL on another origin is refused, so neither the token nor a download ever leaves the hub.
- No answer, a 5xx or a 429 is tried again with exponential backoff and full jitter (a random
  wait between 0 and ``base * 2**attempt``, capped), honouring ``Retry-After``; when the tries
  run out it is :class:`HubUnavailable`, which the loop treats as "later". Every other answer
  that is not a success becomes the :mod:`dgml.errors` class of its status with the hub's own
  words: a 409 is for the caller to interpret (lease lost, offer taken), a 401 means the
  token is no longer good.
- Calls that are not safe to repeat (enrolment uses its token once) are retried only when the
  request surely never reached the hub.
- Leases are measured on the hub's clock: each answer's ``Date`` header keeps an estimate of
  the offset between the clocks, so a lab whose clock is off still heartbeats in time.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from dgml import errors
from dgml.errors import DgmlError

log = logging.getLogger(__name__)

API = "/api/v1"
AGENT = API + "/agent"
TOKEN_FILE = "agent.json"
_BY_STATUS: dict[int, type[DgmlError]] = {
    400: errors.DgmlError,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.Invalid,
}


class HubUnavailable(DgmlError):
    """No usable answer from the hub (no connection, a 5xx, a 429) after the retries."""

    status_code = 503
    code = "hub_unavailable"


# --- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a call is tried again."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: anywhere between 0 and the exponential bound, so that many agents
        coming back after an outage do not all knock at the same instant."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0**attempt))


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(cap, seconds))


# --- origins and auth ------------------------------------------------------------------------


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parsed = httpx.URL(str(url))
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return parsed.scheme, (parsed.host or "").lower(), port


class HubAuth(httpx.Auth):
    """The agent token, on requests to the hub's own origin only."""

    def __init__(self, token: str, hub_origin: tuple[str, str, int]) -> None:
        self._header = f"Bearer {token}"
        self._origin = hub_origin

    def auth_flow(self, request: httpx.Request):
        if origin(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        else:
            request.headers.pop("Authorization", None)
        yield request


def _error_for(response: httpx.Response, server: str) -> DgmlError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        return DgmlError(
            f"the server at {server} answered {response.status_code} to "
            f"{response.request.url.path} without a dgml error (is it a dgml hub?)"
        )
    extra = {k: v for k, v in body.items() if k not in ("error", "detail", "field")}
    detail = str(body["detail"])
    cls = _BY_STATUS.get(response.status_code, DgmlError)
    if cls is errors.Invalid:
        return errors.Invalid(detail, field=body.get("field"), **extra)
    return cls(detail, **extra)


# --- the client ------------------------------------------------------------------------------


class HubClient:
    """The agent API of one hub, with the fablab's agent token (none to enrol)."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        interrupt: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.origin = origin(self.server)
        self.retry = retry or Retry()
        self.interrupt = interrupt or threading.Event()
        self.rng = rng or random.Random()
        self.timeout = timeout
        self.http = httpx.Client(
            base_url=self.server,
            auth=HubAuth(token, self.origin) if token else None,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"user-agent": "dgml-agent", "accept": "application/json"},
        )
        self.last_contact: float | None = None  # time.time() of the last answer below 500
        self.last_error: str | None = None
        self._clock_offset = 0.0  # hub clock minus ours, in seconds

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def reachable(self) -> bool:
        return self.last_contact is not None and self.last_error is None

    # --- URLs and clocks ----------------------------------------------------------------------

    def resolve(self, url: str) -> str:
        """An absolute URL on the hub for a file URL of an offer; another origin is refused."""
        text = str(url).strip()
        parts = urlsplit(text)
        if not parts.scheme and not parts.netloc:
            if not text:
                raise errors.Invalid("a file URL is empty", field="url")
            return self.server + "/" + text.lstrip("/")
        absolute = text if parts.scheme else f"{self.origin[0]}:{text}"
        if parts.scheme not in ("", "http", "https") or origin(absolute) != self.origin:
            raise errors.Invalid(
                f"the file URL {text[:200]} is not on the hub {self.server}; refusing to fetch it",
                field="url",
            )
        return absolute

    def hub_now(self) -> float:
        """The hub's time (epoch seconds) as best known."""
        return time.time() + self._clock_offset

    def lease_left(self, lease_expires_at: str | datetime) -> float:
        """Seconds until a lease runs out, on the hub's clock."""
        when = (
            lease_expires_at
            if isinstance(lease_expires_at, datetime)
            else datetime.fromisoformat(str(lease_expires_at))
        )
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp() - self.hub_now()

    def _note_answer(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                # The header has whole seconds: the hub's time is, on average, half a second on.
                hub = email.utils.parsedate_to_datetime(date).timestamp() + 0.5
                self._clock_offset = hub - time.time()
        if response.status_code < 500:
            self.last_contact = time.time()
            self.last_error = None

    # --- plumbing -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        safe: bool = True,
        attempts: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call with retries; the successful response, or the error its answer stands for."""
        tries = max(1, attempts if attempts is not None else self.retry.attempts)
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        for attempt in range(tries):
            hint: float | None = None
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                problem = f"cannot reach the hub at {self.server}: {exc or type(exc).__name__}"
            except httpx.TransportError as exc:
                problem = f"no answer from the hub at {self.server}: {exc or type(exc).__name__}"
                if not safe:
                    self.last_error = problem
                    raise HubUnavailable(problem) from None
            else:
                self._note_answer(response)
                if response.status_code < 500 and response.status_code != 429:
                    return self._check(response)
                problem = f"the hub at {self.server} answered {response.status_code} to {path}"
                hint = _retry_after(response, self.retry.cap_s)
                if not safe and response.status_code != 503:
                    self.last_error = problem
                    raise HubUnavailable(problem)
            self.last_error = problem
            if attempt + 1 >= tries:
                raise HubUnavailable(problem)
            delay = hint if hint is not None else self.retry.delay(attempt, self.rng)
            log.info("%s; trying again in %.1f s", problem, delay)
            if self.interrupt.wait(delay):
                raise HubUnavailable(problem + " (stopping)")
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        if 300 <= response.status_code < 400:
            raise DgmlError(
                f"the hub at {self.server} redirects to {response.headers.get('location')}: "
                "use that address as the server"
            )
        raise _error_for(response, self.server)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON of a successful call (None for 204)."""
        response = self.request(method, path, **kwargs)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise DgmlError(
                f"the server at {self.server} did not answer as a dgml hub (no JSON at {path})"
            ) from None

    def _list(self, body: Any, key: str, path: str) -> list[dict[str, Any]]:
        """``body[key]``, a list of objects, or an error saying the answer was not the API's."""
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise DgmlError(f"the hub at {self.server} answered {path} without a list of {key}")
        return items

    # --- the agent API --------------------------------------------------------------------

    def healthy(self, timeout: float = 5.0) -> bool:
        """Whether the hub answers at all (one try, no token needed)."""
        try:
            self.request("GET", "/healthz", attempts=1, timeout=timeout)
        except DgmlError as exc:
            self.last_error = exc.detail
            return False
        return True

    def enroll(self, enrolment_token: str) -> dict[str, Any]:
        """Exchange the one-time enrolment token for ``{agent_token, fablab_id}``."""
        return self.call(
            "POST", f"{AGENT}/enroll", json={"enrolment_token": enrolment_token}, safe=False
        )

    def claim(self, wait: float = 0.0, *, attempts: int | None = None) -> list[dict[str, Any]]:
        """The fablab's open offers; waits up to ``wait`` seconds for one (the hub caps it)."""
        body = self.call(
            "POST",
            f"{AGENT}/claim",
            params={"wait": wait},
            timeout=self.timeout + max(0.0, wait),
            attempts=attempts,
        )
        return [] if body is None else self._list(body, "offers", "/claim")

    def accept(self, offer_id: int, key: str) -> dict[str, Any]:
        return self.call(
            "POST", f"{AGENT}/offers/{int(offer_id)}/accept", headers={"Idempotency-Key": key}
        )

    def decline(self, offer_id: int, reason: str) -> dict[str, Any]:
        return self.call(
            "POST", f"{AGENT}/offers/{int(offer_id)}/decline", json={"reason": clip(reason, 500)}
        )

    def jobs(self, *, attempts: int | None = None) -> list[dict[str, Any]]:
        return self._list(self.call("GET", f"{AGENT}/jobs", attempts=attempts), "jobs", "/jobs")

    def job(self, job_id: int, *, attempts: int | None = None) -> dict[str, Any]:
        return self.call("GET", f"{AGENT}/jobs/{int(job_id)}", attempts=attempts)

    def heartbeat(self, job_id: int, *, attempts: int | None = None) -> dict[str, Any]:
        return self.call("POST", f"{AGENT}/jobs/{int(job_id)}/heartbeat", attempts=attempts)

    def progress(
        self, job_id: int, percent: float, message: str, *, attempts: int | None = None
    ) -> dict[str, Any]:
        body = {"percent": min(100.0, max(0.0, float(percent))), "message": clip(message, 500)}
        return self.call(
            "POST", f"{AGENT}/jobs/{int(job_id)}/progress", json=body, attempts=attempts
        )

    def complete(
        self, job_id: int, result: dict[str, Any], *, attempts: int | None = None
    ) -> dict[str, Any]:
        return self.call(
            "POST",
            f"{AGENT}/jobs/{int(job_id)}/complete",
            json={"result": result},
            attempts=attempts,
        )

    def fail(self, job_id: int, reason: str, *, attempts: int | None = None) -> dict[str, Any]:
        return self.call(
            "POST",
            f"{AGENT}/jobs/{int(job_id)}/fail",
            json={"reason": clip(reason, 1000) or "failed at the lab"},
            attempts=attempts,
        )


def clip(text: str, limit: int) -> str:
    """Text the hub takes: control characters become spaces, at most ``limit`` characters."""
    cleaned = "".join(
        " " if (ord(ch) < 32 and ch not in "\n\t") or ord(ch) == 127 else ch for ch in str(text)
    )
    cleaned = cleaned.strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3].rstrip() + "..."
