"""Structured logs: one JSON object per line, each carrying the id of the request it belongs to.

A line holds ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` when
the line was written while a request was being served, any ``extra={...}`` fields of the call,
and ``exception`` with the traceback when there was one. Uvicorn's access lines get
``client``, ``method``, ``path``, ``http_version`` and ``status`` as fields of their own, so a
log pipeline can filter on them without parsing the message.

``DGML_LOG_FORMAT=text`` gives the same lines for people (``time level logger [id] message``).

The request id is taken from the client's ``X-Request-Id`` header when it is a sane token (so an
id minted by a proxy in front follows the request through), else made here; it is answered in
the response's ``X-Request-Id`` header and kept in a context variable for the request's task, so
every line written while serving it, in the event loop or in the thread pool, carries it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import traceback
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["json", "text"]
HEADER = "X-Request-Id"
_HEADER_KEY = HEADER.lower().encode()
# Letters, digits and a few separators, as request ids minted by proxies and tracers look;
# anything else (spaces, quotes, control characters, very long values) is replaced.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")

request_id: ContextVar[str | None] = ContextVar("dgml_request_id", default=None)

# Attributes every LogRecord has: whatever else a record carries came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}
# Uvicorn repeats each message with terminal colours; a log pipeline has no use for it.
_DROPPED = frozenset({"color_message", "rid"})
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The client's id when it is a sane token, else a new one."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    return request_id.get()


class RequestIdMiddleware:
    """Gives each HTTP request an id: kept for its log lines, answered in ``X-Request-Id``.

    The context variable is set and not reset: each request runs in a task of its own, whose
    context dies with it, and the app's last-resort error handler (which runs after this
    middleware has seen the exception) still logs with the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for key, value in scope.get("headers", ()):
            if key == _HEADER_KEY:
                sent = value.decode("latin-1")
                break
        rid = accept_request_id(sent)
        request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_KEY]
                headers.append((_HEADER_KEY, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Uvicorn's access records carry (client, method, path, http version, status) as args."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple):
        return {}
    if len(args) != len(_ACCESS_FIELDS):
        return {}
    return dict(zip(_ACCESS_FIELDS, args, strict=True))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        entry.update(_access_fields(record))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The same information for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id.get()
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


def logging_config(log_format: LogFormat = "json", level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: every line to stderr in the chosen format.

    Uvicorn takes it as its ``log_config`` and applies it in each of its worker processes;
    its own loggers hand their records to the root handler, so access lines look like the rest.
    RQ's worker logger gets the handler too (RQ adds a coloured one of its own otherwise).
    """
    formatter = "dgml.logs.JsonFormatter" if log_format == "json" else "dgml.logs.TextFormatter"
    plain = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "dgml.logs.RequestIdFilter"}},
        "formatters": {"dgml": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "dgml",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": dict(plain),
            "uvicorn.error": dict(plain),
            "uvicorn.access": dict(plain),
            "rq.worker": dict(plain),
            "alembic": {**plain, "level": "WARNING"},
            # A line per HTTP request the hub's own clients make (the demo's, the agents') is
            # noise next to the server's request log; their failures still show.
            "httpx": {**plain, "level": "WARNING"},
            "httpcore": {**plain, "level": "WARNING"},
        },
    }


def configure_logging(log_format: LogFormat = "json", level: str = "INFO") -> None:
    """Send this process's log lines to stderr in the chosen format (replaces earlier setup)."""
    logging.config.dictConfig(logging_config(log_format, level))
