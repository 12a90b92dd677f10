"""A small typed HTTP client for the hub's API, for the command line and scripts.

Decisions:

- Every answer that is not a success becomes a :class:`~dgml.errors.DgmlError` subclass of the
  same status (401 ``Unauthorized``, 404 ``NotFound``, 422 ``Invalid`` ...) carrying the hub's
  own ``detail``, so the command line reports it in one line with the usual exit code. A hub
  that cannot be reached (connection refused, a name that does not resolve) is
  :class:`HubUnreachable`: "cannot reach the hub at URL: ...".
- The token travels only in the ``Authorization`` header to the configured hub; redirects are
  not followed (they could carry it elsewhere) and no message ever includes it.
- Downloads stream to a temporary file next to their target while a sha256 runs over the bytes;
  only a file whose hash is the one the version names is renamed into place, and a hub that
  sends more bytes than the version says is cut off.
- Uploads are a multipart body produced part by part from the files on disk, with its length
  known in advance, so nothing is held in memory and a progress bar can follow the bytes.
- A new verb adds a method here that names its route and returns the decoded JSON: the routes
  of the hub are spelled in this module only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from dgml import errors
from dgml.errors import DgmlError

API = "/api/v1"
CHUNK = 256 * 1024
Advance = Callable[[int], None]


class HubUnreachable(DgmlError):
    """No answer at all: the hub is down, its name does not resolve, or it is too slow."""

    status_code = 503
    code = "unreachable"


class HubFailure(DgmlError):
    """The hub answered with a server error or with something that is not its API."""

    status_code = 502
    code = "hub_failure"


_BY_STATUS: dict[int, type[DgmlError]] = {
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.Invalid,
}


def segment(text: str) -> str:
    """One path segment of a URL, with everything that is not plain escaped."""
    return quote(text, safe="")


def _error_for(response: httpx.Response, server: str) -> DgmlError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        return HubFailure(
            f"the hub at {server} answered {response.status_code} "
            f"{response.reason_phrase or ''}".rstrip()
            + ("" if response.status_code >= 500 else " (is this a dgml hub?)")
        )
    detail = str(body["detail"])
    if response.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
        # The framework's own answer: no such route, so not the API this client speaks.
        return HubFailure(
            f"the server at {server} has no {response.request.url.path}: check the address "
            "(is it a dgml hub, and up to date?)"
        )
    extra = {k: v for k, v in body.items() if k not in ("error", "detail")}
    if response.status_code >= 500:
        return HubFailure(f"the hub at {server} failed: {detail}", **extra)
    hint = f" (log in with: dgml login --server {server})" if response.status_code == 401 else ""
    cls = _BY_STATUS.get(response.status_code, DgmlError)
    error = cls(detail + hint)
    error.data.update(extra)
    error.hub_detail = detail  # the hub's own words, without the hint
    return error


class Hub:
    """The API of one hub, reached as ``server`` with an optional token."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.server = server
        self.has_token = bool(token)
        headers = {"user-agent": "dgml-cli", "accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=server + API,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transport(self) -> Iterator[None]:
        """Turn transport failures into one clear error naming the hub."""
        try:
            yield
        except httpx.TimeoutException:
            raise HubUnreachable(
                f"the hub at {self.server} did not answer in time: try again later"
            ) from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise HubUnreachable(f"cannot reach the hub at {self.server}: {exc}") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise HubUnreachable(
                f"lost the connection to the hub at {self.server}: {reason}"
            ) from None

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        if 300 <= response.status_code < 400:
            raise HubFailure(
                f"the hub at {self.server} redirects to {response.headers.get('location')}: "
                "use that address with --server"
            )
        raise _error_for(response, self.server)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the decoded JSON of a successful answer, or the error it stands for."""
        with self._transport():
            response = self._check(self._http.request(method, path, **kwargs))
        try:
            return response.json()
        except ValueError:
            raise HubFailure(
                f"the server at {self.server} did not answer as a dgml hub (no JSON at {path})"
            ) from None

    # --- accounts ---------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self.call("GET", "/user")

    def revoke_token(self) -> dict[str, Any]:
        """Revoke the token this client sends: the hub stops taking it at once."""
        return self.call("DELETE", "/user/tokens/current")

    # --- designs ----------------------------------------------------------------------------

    def search(self, **filters: str | int | None) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v not in (None, "")}
        return self.call("GET", "/designs", params=params)

    def design(self, owner: str, name: str) -> dict[str, Any]:
        return self.call("GET", f"/designs/{segment(owner)}/{segment(name)}")

    def version(self, owner: str, name: str, ref: str | int) -> dict[str, Any]:
        return self.call("GET", f"{_design(owner, name)}/versions/{segment(str(ref))}")

    def versions(
        self, owner: str, name: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
        return self.call("GET", f"{_design(owner, name)}/versions", params=params)

    def fork(
        self, owner: str, name: str, ref: str | int, *, as_name: str | None, license: str | None
    ) -> dict[str, Any]:
        body = {k: v for k, v in (("name", as_name), ("license", license)) if v}
        path = f"{_design(owner, name)}/versions/{segment(str(ref))}/fork"
        return self.call("POST", path, json=body or None)

    def diff(self, owner: str, name: str, a: str | int, b: str | int) -> dict[str, Any]:
        path = f"{_design(owner, name)}/versions/{segment(str(a))}/diff/{segment(str(b))}"
        return self.call("GET", path, timeout=600.0)

    def propose(
        self, owner: str, name: str, source: dict[str, Any], title: str, message: str
    ) -> dict[str, Any]:
        body = {"from": source, "title": title, "message": message}
        return self.call("POST", f"{_design(owner, name)}/change-requests", json=body)

    # --- orders -----------------------------------------------------------------------------

    def place_order(
        self, body: dict[str, Any], key: str, *, attempts: int = 3, pause_s: float = 0.5
    ) -> dict[str, Any]:
        """Post an order under the idempotency ``key``. A request whose answer was lost (no
        answer, a dropped connection, a server error) is sent again with the same key, up to
        ``attempts`` times: the hub answers the order the first one made, never a second."""
        attempt = 1
        while True:
            try:
                return self.call("POST", "/orders", json=body, headers={"idempotency-key": key})
            except (HubUnreachable, HubFailure):
                if attempt >= attempts:
                    raise
            time.sleep(pause_s * 2 ** (attempt - 1))
            attempt += 1

    def orders(
        self, *, state: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        params = {"state": state, "cursor": cursor, "limit": limit}
        return self.call(
            "GET", "/orders", params={k: v for k, v in params.items() if v not in (None, "")}
        )

    def order(self, order_id: int) -> dict[str, Any]:
        return self.call("GET", f"/orders/{int(order_id)}")

    def cancel_order(self, order_id: int) -> dict[str, Any]:
        return self.call("POST", f"/orders/{int(order_id)}/cancel")

    # --- files ------------------------------------------------------------------------------

    def download(
        self,
        owner: str,
        name: str,
        number: int,
        entry: dict[str, Any],
        target: Path,
        advance: Advance = lambda _n: None,
    ) -> None:
        """Stream one file of a version to ``target``, verified against its sha256."""
        path = f"{_design(owner, name)}/versions/{number}/files/{quote(entry['path'], safe='/')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _temporary_beside(target)
        try:
            with os.fdopen(handle, "wb") as file, self._transport():
                digest = hashlib.sha256()
                with self._http.stream("GET", path, headers={"accept": "*/*"}) as response:
                    self._check(response)
                    received = 0
                    for chunk in response.iter_bytes(CHUNK):
                        received += len(chunk)
                        if received > entry["size"]:
                            raise HubFailure(
                                f"the hub sent more than the {entry['size']} bytes of "
                                f"{entry['path']}: the download was stopped"
                            )
                        digest.update(chunk)
                        file.write(chunk)
                        advance(len(chunk))
            if digest.hexdigest() != entry["sha256"]:
                raise HubFailure(
                    f"{entry['path']} arrived damaged: its sha256 is {digest.hexdigest()[:12]}..., "
                    f"the version names {entry['sha256'][:12]}... (nothing was kept)"
                )
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def push(
        self,
        owner: str,
        name: str,
        files: Sequence[tuple[str, Path]],
        fields: dict[str, str],
        advance: Advance = lambda _n: None,
    ) -> dict[str, Any]:
        """Push a new version: ``files`` are (path in the design, file on disk)."""
        body = MultipartBody(files, fields)
        headers = {"content-type": body.content_type, "content-length": str(body.length)}
        try:
            return self.call(
                "POST",
                f"{_design(owner, name)}/versions",
                content=body.stream(advance),
                headers=headers,
                timeout=httpx.Timeout(600.0, connect=15.0),
            )
        except HubUnreachable as exc:
            if "lost the connection" in exc.detail:
                exc.detail += (
                    " (the hub may have refused the upload part way; is it larger than its "
                    "upload limit?)"
                )
            raise


def _design(owner: str, name: str) -> str:
    return f"/designs/{segment(owner)}/{segment(name)}"


def _temporary_beside(target: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=".dgml-download-", dir=target.parent)


def _form_name(path: str) -> str:
    """A path as a multipart filename: quotes and control characters as %XX, which the hub
    decodes (and then refuses control characters with a clear message)."""
    return "".join(f"%{ord(ch):02X}" if ch == '"' or ord(ch) < 0x20 else ch for ch in path)


class MultipartBody:
    """A multipart/form-data body made of text fields and files read from disk as it is sent."""

    def __init__(self, files: Sequence[tuple[str, Path]], fields: dict[str, str]) -> None:
        self.boundary = f"dgml-{uuid.uuid4().hex}"
        self.files = list(files)
        self.fields = fields
        self.sizes = [source.stat().st_size for _, source in self.files]

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _field_head(self, name: str) -> bytes:
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        ).encode()

    def _file_head(self, path: str) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{_form_name(path)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    @property
    def length(self) -> int:
        total = sum(len(self._field_head(k)) + len(v.encode()) + 2 for k, v in self.fields.items())
        total += sum(
            len(self._file_head(path)) + size + 2
            for (path, _), size in zip(self.files, self.sizes, strict=True)
        )
        return total + len(f"--{self.boundary}--\r\n")

    def stream(self, advance: Advance) -> Iterator[bytes]:
        for name, value in self.fields.items():
            yield self._field_head(name) + value.encode() + b"\r\n"
        for (path, source), size in zip(self.files, self.sizes, strict=True):
            yield self._file_head(path)
            sent = 0
            with source.open("rb") as file:
                while sent < size and (chunk := file.read(min(CHUNK, size - sent))):
                    sent += len(chunk)
                    advance(len(chunk))
                    yield chunk
            if sent != size:
                raise DgmlError(f"{source} changed while it was being sent: push again")
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()
