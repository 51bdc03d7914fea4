"""One error envelope for every function, and the exceptions that map onto it.

A handler raises an ``ApiError`` subclass; ``common.http`` turns it into
``{"error": CODE, "message": TEXT, "request_id": ID}`` (plus ``"details"`` for validation)
with the right status and headers. Messages are fixed, client-safe sentences: exception
text, SQL and credentials never reach a client. Any other exception becomes a generic 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class ApiError(Exception):
    """An error with a status, a stable code and a message that is safe to show."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The server could not answer this request."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = dict(details) if details is not None else None
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error": self.code,
            "message": self.message,
            "request_id": request_id,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(ApiError):
    status = 400
    code = "invalid_request"
    default_message = "The request is malformed."


class UnsupportedGrantType(BadRequest):
    code = "unsupported_grant_type"
    default_message = "Only the password grant is supported."


class CsrfFailed(BadRequest):
    code = "csrf_failed"
    default_message = "The form has expired or did not come from this site; reload and retry."


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    default_message = "A valid bearer token is required."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="salesmart"'})


class InvalidToken(Unauthorized):
    code = "invalid_token"
    default_message = "The bearer token is invalid or has expired."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.headers["WWW-Authenticate"] = 'Bearer realm="salesmart", error="invalid_token"'


class LoginRefused(ApiError):
    """A refused login (401, 429). ``account`` is the username when it names an account, for
    the server's log line only: answers never say whether it does, and a name that matches
    no account (perhaps a password typed into the wrong field) is never logged."""

    account: str | None = None


class InvalidCredentials(LoginRefused, Unauthorized):
    # RFC 6749 5.2's code for wrong resource-owner credentials (it answers 400; the contract
    # asks for 401).
    code = "invalid_grant"
    default_message = "Wrong username or password."


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    default_message = "This account may not use this function."

    def __init__(self, message: str | None = None) -> None:
        # RFC 6750 3.1: the token is valid, its role not enough.
        super().__init__(
            message,
            headers={"WWW-Authenticate": 'Bearer realm="salesmart", error="insufficient_scope"'},
        )


class NotFound(ApiError):
    status = 404
    code = "not_found"
    default_message = "No such resource."


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"
    default_message = "This method is not allowed here."

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(headers={"Allow": ", ".join(allowed)})


class ValidationFailed(ApiError):
    status = 422
    code = "validation_error"
    default_message = "Some parameters are invalid; see details."

    def __init__(self, details: Mapping[str, list[str]]) -> None:
        super().__init__(details=details)


class TooManyAttempts(LoginRefused):
    status = 429
    code = "too_many_attempts"
    default_message = "Too many failed logins for this username; retry later."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(headers={"Retry-After": str(max(1, retry_after_seconds))})
        self.retry_after_seconds = max(1, retry_after_seconds)


class WarehouseUnavailable(ApiError):
    """The warehouse (PostgreSQL or BigQuery) cannot be reached or did not answer in time."""

    status = 503
    code = "warehouse_unavailable"
    default_message = "The data warehouse is unavailable; retry shortly."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    default_message = "The request body is too large."


class UriTooLong(ApiError):
    status = 414
    code = "uri_too_long"
    default_message = "The request line is too long."


class HeadersTooLarge(ApiError):
    status = 431
    code = "headers_too_large"
    default_message = "The request headers are too many or too large."


class PreconditionFailed(ApiError):
    status = 412
    code = "precondition_failed"
    default_message = "If-Match names no current version of this answer."


class ExpectationFailed(ApiError):
    status = 417
    code = "expectation_failed"
    default_message = "Only the expectation 100-continue is supported."


class TransferCodingNotImplemented(ApiError):
    status = 501
    code = "unsupported_transfer_coding"
    default_message = "This transfer coding is not supported; send chunked or a Content-Length."


class ContentEncodingUnsupported(ApiError):
    status = 415
    code = "unsupported_content_encoding"
    default_message = "Send the form without a Content-Encoding (it is not decompressed)."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Accept-Encoding": "identity"})  # RFC 9110 15.5.16


class InternalError(ApiError):
    """Anything unexpected: the client learns only the request id."""
