"""A cap on request bodies that are not uploads.

FastAPI reads a JSON body whole before it validates anything, so a route's own limits (a job
result of at most 16 KiB, say) only apply once the bytes are in memory. This middleware refuses
a body over ``max_bytes`` before that: at once when Content-Length says so, else as soon as the
streamed bytes pass the cap. Multipart uploads (pushes) have their own streaming cap and are
left alone.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _answer(max_bytes: int) -> tuple[Message, Message]:
    body = json.dumps(
        {
            "error": "payload_too_large",
            "detail": f"the request body exceeds {max_bytes} bytes",
            "limit": max_bytes,
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._capped(scope):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        # Such bodies are read whole by the app anyway: read them here, up to the cap, and
        # hand the app the same bytes.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], None, receive), send)

    def _capped(self, scope: Scope) -> bool:
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return False
        content_type = (_header(scope, b"content-type") or "").lower()
        return not content_type.startswith("multipart/form-data")

    async def _refuse(self, send: Send) -> None:
        start, body = _answer(self.max_bytes)
        await send(start)
        await send(body)


def _replay(messages: list[Message], last: Message | None, receive: Receive) -> Receive:
    """A receive that gives ``messages``, then ``last`` if any, then the client's own."""
    queue = [*messages, *([last] if last is not None else [])]

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
