"""Error responses in the shape Blnk v0.15 sends them.

Blnk picks an error code from an explicit code, else from substrings of the
error message, and derives the HTTP status from the code. This module keeps
that catalogue, so every endpoint of the embedded ledger reports failures the
same way.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ApiError",
    "LedgerFailure",
    "classify_message",
    "error_body",
    "status_for_code",
]

_STATUS_BY_CODE = {
    "GEN_MALFORMED_REQUEST": 400,
    "GEN_VALIDATION_ERROR": 400,
    "GEN_MISSING_PARAMETER": 400,
    "GEN_BAD_REQUEST": 400,
    "GEN_NOT_FOUND": 404,
    "GEN_CONFLICT": 409,
    "GEN_RESOURCE_LOCKED": 423,
    "GEN_PAYLOAD_TOO_LARGE": 413,
    "GEN_RATE_LIMITED": 429,
    "GEN_INTERNAL": 500,
    "AUTH_MISSING_API_KEY": 401,
    "AUTH_INVALID_API_KEY": 401,
    "TXN_NOT_FOUND": 404,
    "TXN_INSUFFICIENT_FUNDS": 400,
    "TXN_INVALID_AMOUNT": 400,
    "TXN_PRECISION_NOT_INTEGER": 400,
    "TXN_INVALID_DISTRIBUTION": 400,
    "TXN_DUPLICATE_REFERENCE": 409,
    "TXN_NOT_INFLIGHT": 400,
    "TXN_ALREADY_COMMITTED": 409,
    "TXN_ALREADY_VOIDED": 409,
    "TXN_COMMIT_AMOUNT_EXCEEDED": 400,
    "TXN_INVALID_STATUS_ACTION": 400,
    "TXN_BULK_EMPTY": 400,
    "TXN_BULK_LIMIT_EXCEEDED": 400,
    "TXN_VALIDATION_ERROR": 400,
    "BAL_NOT_FOUND": 404,
    "BAL_HISTORY_NOT_FOUND": 404,
    "BAL_INVALID_TIMESTAMP": 400,
    "BAL_VALIDATION_ERROR": 400,
    "LGR_NOT_FOUND": 404,
    "LGR_DUPLICATE": 409,
    "QUEUE_BACKPRESSURE": 503,
}

# Blnk's message patterns (api/errors.go), in Blnk's order: every substring of
# an entry must occur in the message for its code to apply.
_MESSAGE_PATTERNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("transaction", "not found"), "TXN_NOT_FOUND"),
    (("not in inflight status",), "TXN_NOT_INFLIGHT"),
    (("Transaction already committed",), "TXN_ALREADY_COMMITTED"),
    (("has already been voided",), "TXN_ALREADY_VOIDED"),
    (("has already been refunded",), "GEN_CONFLICT"),
    (("has already been used",), "TXN_DUPLICATE_REFERENCE"),
    (("cannot commit more than",), "TXN_COMMIT_AMOUNT_EXCEEDED"),
    (("insufficient funds",), "TXN_INSUFFICIENT_FUNDS"),
    (("transaction amount must be positive",), "TXN_INVALID_AMOUNT"),
    (("transaction validation failed",), "TXN_VALIDATION_ERROR"),
    (("reference is required",), "TXN_VALIDATION_ERROR"),
    (("no balance data found for time",), "BAL_HISTORY_NOT_FOUND"),
    (("invalid timestamp format",), "BAL_INVALID_TIMESTAMP"),
    (("balance validation failed",), "BAL_VALIDATION_ERROR"),
    (("failed to acquire lock",), "GEN_RESOURCE_LOCKED"),
    (("not found",), "GEN_NOT_FOUND"),
)


def status_for_code(code: str) -> int:
    """Return the HTTP status Blnk sends for an error code; unknown codes are 500."""
    return _STATUS_BY_CODE.get(code, 500)


def classify_message(message: str) -> str | None:
    """Return the code Blnk derives from an error message, or ``None``."""
    for substrings, code in _MESSAGE_PATTERNS:
        if all(part in message for part in substrings):
            return code
    return None


class ApiError(Exception):
    """An error response whose code is already decided.

    Raising it from a request handler rolls back everything the request wrote.

    Attributes:
        code: the ``error_detail.code`` value.
        message: the human-readable message.
        details: optional ``error_detail.details`` value.
        legacy_key: the key that carries the flat message, ``error`` or
            ``errors`` depending on the endpoint.
        legacy_value: what the legacy key carries when it is not the message.
        extra: additional top-level keys, such as a bulk ``batch_id``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        details: Any = None,
        *,
        legacy_key: str = "error",
        legacy_value: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.legacy_key = legacy_key
        self.legacy_value = legacy_value
        self.extra = extra or {}

    @property
    def status(self) -> int:
        """The HTTP status that goes with the code."""
        return status_for_code(self.code)


class LedgerFailure(Exception):
    """A failure inside ledger processing, classified later like Blnk does.

    Most failures carry only a message, and the endpoint that reports them
    picks the code from it. A failure that Blnk raises with a typed error
    carries that code instead, and may respond with a shorter message than
    the full text that a bulk error repeats.
    """

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        api_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.api_message = api_message

    def to_api_error(
        self,
        *,
        default: str | None = None,
        upgrades: dict[str, str] | None = None,
    ) -> ApiError:
        """Convert to an error response the way Blnk's ``respondError`` does.

        Args:
            default: the code to use when neither the failure nor its message
                names one; without it the response is a masked 500.
            upgrades: codes the endpoint replaces by more specific ones, such
                as ``GEN_NOT_FOUND`` by ``TXN_NOT_FOUND``.

        Returns:
            The error response to send.
        """
        code = self.code or classify_message(self.message) or default
        if code is None:
            return ApiError("GEN_INTERNAL", "internal server error")
        code = (upgrades or {}).get(code, code)
        return ApiError(code, self.api_message or self.message)


def error_body(error: ApiError) -> bytes:
    """Encode an error response as Blnk's JSON body."""
    detail: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        detail["details"] = error.details
    legacy = error.message if error.legacy_value is None else error.legacy_value
    body: dict[str, Any] = {error.legacy_key: legacy, **error.extra}
    body["error_detail"] = detail
    return json.dumps(body).encode()
