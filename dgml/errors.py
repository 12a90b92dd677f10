"""Errors that services raise and every interface reports the same way.

The HTTP layer turns a :class:`DgmlError` into ``{"error": code, "detail": message}`` with its
status code; the command line turns it into one line and a non-zero exit code. Services never
raise HTTP exceptions themselves.
"""

from __future__ import annotations

from typing import Any


class DgmlError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        body.update(self.data)
        return body


class Unauthorized(DgmlError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DgmlError):
    status_code = 403
    code = "forbidden"


class NotFound(DgmlError):
    status_code = 404
    code = "not_found"


class Conflict(DgmlError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(DgmlError):
    status_code = 413
    code = "payload_too_large"


class Invalid(DgmlError):
    """Input that is well-formed HTTP but breaks a rule; ``field`` names what is wrong."""

    status_code = 422
    code = "invalid"

    def __init__(self, detail: str, *, field: str | None = None, **data: Any) -> None:
        if field is not None:
            data["field"] = field
        super().__init__(detail, **data)
