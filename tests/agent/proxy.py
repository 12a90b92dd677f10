"""A small HTTP proxy in front of the live hub: it forwards every request, counts them by path,
and answers 500 (as a failing hub would) while told to."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date"}


@dataclass
class Proxy:
    base: str
    upstream: str
    requests: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    failing_until: float = 0.0

    def fail_for(self, seconds: float) -> None:
        """Answer 500 to everything for this long, from now."""
        self.failing_until = time.monotonic() + seconds

    @property
    def failing(self) -> bool:
        return time.monotonic() < self.failing_until

    def gets(self, path_end: str) -> int:
        """GETs forwarded for paths ending so (file downloads)."""
        return sum(
            n
            for (method, path), n in self.requests.items()
            if method == "GET" and path.endswith(path_end)
        )


def start_proxy(upstream: str) -> Iterator[Proxy]:
    state = Proxy(base="", upstream=upstream)
    client = httpx.Client(base_url=upstream, timeout=120)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            if state.failing:
                state.refused[(self.command, path)] += 1
                self._answer(
                    500, b'{"error":"internal","detail":"the hub is having a bad time"}', {}
                )
                return
            state.requests[(self.command, path)] += 1
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                response = client.request(self.command, self.path, content=body, headers=headers)
            except httpx.HTTPError:
                self._answer(502, b'{"error":"bad_gateway","detail":"upstream failed"}', {})
                return
            kept = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            self._answer(response.status_code, response.content, kept)

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "content-type" not in {k.lower() for k in headers}:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _forward

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        client.close()
        thread.join(10)
