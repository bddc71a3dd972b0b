"""Decide the outcome of a billable request from what the SDK returned or raised.

A plain response is billed at once from the JSON the SDK decoded. A stream or
a raw response is handed to the code that meters it and settles later. A call
that raised is billed when the provider responded, reported when its
response was lost, and cancelled otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

from . import _raw_response as raw
from ._attempts import Attempts, lost_response
from ._extract import NOT_BILLED, header_request_id, name_response, outcome_from_body
from ._metered_call import MeteredCall, RawCapture
from ._metered_stream import attach_stream
from ._recorder import CallOutcome
from ._stream_usage import outcome_from_bytes
from ._usage import UnmeteredCall

__all__ = ["outcome_now", "outcome_of_failure"]

logger = logging.getLogger(__name__)


def outcome_now(
    metered: MeteredCall, result: Any, capture: RawCapture
) -> CallOutcome | None:
    """Return the outcome of a call whose usage is known now, else ``None``."""
    from openai._legacy_response import LegacyAPIResponse
    from openai._response import BaseAPIResponse
    from openai._streaming import AsyncStream, Stream

    try:
        if isinstance(result, (Stream, AsyncStream)):
            return (
                None
                if attach_stream(metered, result)
                else _unobservable(metered, result)
            )
        if isinstance(result, (LegacyAPIResponse, BaseAPIResponse)):
            return raw.track_raw_response(metered, result)
        document = capture.data if capture.is_set else result
        return outcome_from_body(
            document, metered.call, request_id=_request_id(capture, result)
        )
    except Exception as exc:
        logger.exception("failed to read the usage of a call to %s", metered.call.path)
        return _unreadable(metered, exc, _request_id(capture, result))


def outcome_of_failure(
    metered: MeteredCall, capture: RawCapture, attempts: Attempts, error: BaseException
) -> CallOutcome | None:
    """Return the outcome of a call that raised, if the provider may bill it.

    The SDK raises after a successful response when it cannot turn the body
    into what the caller asked for: ``parse()`` helpers raise
    ``LengthFinishReasonError``, ``ContentFilterFinishReasonError`` or a
    pydantic ``ValidationError``, and strict response validation raises
    ``APIResponseValidationError``. The provider bills such a call, so its
    body decides the outcome. When the last attempt was sent but its
    response was lost, the call is reported as ``response_lost``.

    Returns:
        The outcome, or ``None`` when the response was an HTTP error or the
        request was never sent, so the call is cancelled.
    """
    from openai import APIResponseValidationError

    lost = attempts.last_lost()
    if lost is not None and not capture.is_set:
        return lost_response(metered.call, lost, is_retried=False)
    try:
        if capture.is_set:
            return outcome_from_body(
                capture.data, metered.call, request_id=_request_id(capture, None)
            )
        if isinstance(error, APIResponseValidationError):
            # The body is not JSON, so the SDK did not decode it.
            response = error.response
            return outcome_from_bytes(
                response.content,
                metered.call,
                request_id=header_request_id(response),
                is_event_stream=False,
                expects_usage=False,
            )
    except Exception as exc:
        logger.exception("failed to read the usage of a call to %s", metered.call.path)
        return _unreadable(metered, exc, _request_id(capture, None))
    return None


def _unreadable(
    metered: MeteredCall, error: Exception, request_id: str | None
) -> UnmeteredCall:
    # Only the error's type is named, because its message may quote the body.
    name = name_response(None, request_id)
    return UnmeteredCall(
        call=metered.call,
        reason="missing_usage",
        message=(
            f"blnk_meter failed to read the usage of the {name} from "
            f"{metered.call.path} ({type(error).__name__}). {NOT_BILLED}"
        ),
        response_id=request_id,
        error=error,
    )


def _unobservable(metered: MeteredCall, stream: Any) -> UnmeteredCall:
    request_id = header_request_id(getattr(stream, "response", None))
    name = name_response(None, request_id)
    return UnmeteredCall(
        call=metered.call,
        reason="stream_without_usage",
        message=(
            f"the {type(stream).__name__} of the {name} from {metered.call.path} "
            f"does not iterate through the metering iterator, so its usage "
            f"cannot be observed. {NOT_BILLED}"
        ),
        response_id=request_id,
    )


def _request_id(capture: RawCapture, result: Any) -> str | None:
    request_id = header_request_id(capture)
    if request_id is None:
        request_id = getattr(result, "_request_id", None)
    return request_id if isinstance(request_id, str) and request_id else None
