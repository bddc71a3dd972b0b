"""Read token usage from the events of a stream, parsed or as raw bytes.

Responses streams report usage only on their terminal event. Chat and
completion streams report it on one chunk, and only when the request sets
``stream_options.include_usage``. A stream that ends, fails or is
cut before that is reported with the reason, never billed as zero.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._extract import (
    NOT_BILLED,
    as_document,
    missing_usage,
    name_response,
    outcome_from_body,
)
from ._recorder import CallOutcome
from ._usage import ProviderCall, UnmeteredCall, UnmeteredReason

__all__ = [
    "RESPONSE_TERMINAL_EVENTS",
    "Interruption",
    "SseParser",
    "StreamUsage",
    "outcome_from_bytes",
]

logger = logging.getLogger(__name__)

RESPONSE_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)
"""Responses stream events that carry the final response and its usage."""


@dataclass(frozen=True)
class Interruption:
    """The reason a stream or response body was not read to its end.

    Attributes:
        error: the error that stopped reading it, if one did.
        is_dropped: whether the caller dropped it without closing it, when
            the rest of it could no longer be read.
        is_loop_ended: whether the caller dropped an async body without
            closing it, and its event loop ended before the rest was read.
    """

    error: BaseException | None = None
    is_dropped: bool = False
    is_loop_ended: bool = False

    def describe(self) -> str:
        """Return what happened, as the predicate of a sentence."""
        if self.is_loop_ended:
            return (
                "was dropped without being closed before any usage arrived, and "
                "its event loop ended before the rest of it could be read. Close "
                "async responses before the event loop ends"
            )
        if self.is_dropped:
            return (
                "was dropped without being closed before any usage arrived, "
                "so the rest of it could not be read"
            )
        if isinstance(self.error, asyncio.CancelledError):
            return "stopped before any usage arrived because its task was cancelled"
        if self.error is not None:
            return (
                "stopped before any usage arrived because reading it failed "
                f"({type(self.error).__name__})"
            )
        return "was closed before any usage arrived"


def outcome_from_bytes(
    content: bytes,
    call: ProviderCall,
    *,
    request_id: str | None,
    is_event_stream: bool,
    expects_usage: bool,
    interruption: Interruption | None = None,
) -> CallOutcome:
    """Read the usage of a response body that the caller read as bytes.

    Args:
        content: the body as received.
        call: the request that produced the body.
        request_id: the ``x-request-id`` header.
        is_event_stream: whether the body is a server-sent event stream.
        expects_usage: for chat and completion streams, whether the request
            asked for a usage chunk.
        interruption: why ``content`` is only the start of the body, or
            ``None`` when it is the whole body. A part of a body is billed
            only if the usage arrived in it.

    Returns:
        The usage to bill, or an :class:`UnmeteredCall`.
    """
    if is_event_stream:
        usage = StreamUsage(call, request_id=request_id, expects_usage=expects_usage)
        for event in SseParser().feed(content.decode("utf-8", errors="replace")):
            usage.observe(event)
        return (
            usage.ended() if interruption is None else usage.interrupted(interruption)
        )
    source = f"{name_response(None, request_id)} from {call.path}"
    if interruption is not None:
        return UnmeteredCall(
            call=call,
            reason="stream_interrupted",
            message=f"{source} {interruption.describe()}. {NOT_BILLED}",
            response_id=request_id,
            error=interruption.error,
        )
    try:
        body = json.loads(content)
    except ValueError as exc:
        message = f"{source} is not valid JSON. {NOT_BILLED}"
        return missing_usage(call, message, request_id, cause=exc)
    return outcome_from_body(body, call, request_id=request_id)


class SseParser:
    """Split server-sent event text into the JSON ``data`` of each event.

    Text may be fed in pieces of any size. The ``[DONE]`` marker and data that
    is not JSON are skipped.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[object]:
        """Add text and return the events it completed."""
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        events: list[object] = []
        for line in lines:
            line = line.rstrip("\r")
            if line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            elif not line and self._data:
                self._emit(events)
        return events

    def _emit(self, events: list[object]) -> None:
        data = "\n".join(self._data)
        self._data = []
        if data.startswith("[DONE]"):
            return
        try:
            events.append(json.loads(data))
        except ValueError:
            logger.debug("skipped a server-sent event whose data is not JSON")


class StreamUsage:
    """Follow the events of one stream and decide what the call used.

    Responses streams report usage only on their terminal event
    (``response.completed``, ``response.incomplete`` or ``response.failed``).
    Chat and completion streams report it on one chunk whose ``usage`` is set,
    and only when the request asked for it with ``stream_options``.

    Args:
        call: the request that opened the stream.
        request_id: the ``x-request-id`` header of the stream.
        expects_usage: for chat and completion streams, whether the request
            asked for a usage chunk; Responses streams always end with one.
        hides_usage_chunk: whether :meth:`observe` returns ``True`` for the
            usage-only chunk (``choices == []``), because the instrumentation,
            not the caller, requested it.
    """

    def __init__(
        self,
        call: ProviderCall,
        *,
        request_id: str | None,
        expects_usage: bool,
        hides_usage_chunk: bool = False,
    ) -> None:
        self.call = call
        self.outcome: CallOutcome | None = None
        """The decided outcome, once an event that carries usage arrived."""
        self._request_id = request_id
        self._is_responses = call.endpoint.startswith("responses")
        self._expects_usage = expects_usage or self._is_responses
        self._hides_usage_chunk = hides_usage_chunk
        self._response_id: str | None = None
        self._model: str | None = None
        self._error_event: str | None = None

    def observe(self, event: object) -> bool:
        """Read one event and return whether to hide it from the caller."""
        event = as_document(event)
        if not isinstance(event, Mapping):
            return False
        if self._is_responses:
            self._observe_response_event(event)
            return False
        return self._observe_chunk(event)

    def _observe_response_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, Mapping):
            self._remember(response)
        if kind == "error":
            code = event.get("code")
            self._error_event = code if isinstance(code, str) else "error"
        if kind not in RESPONSE_TERMINAL_EVENTS:
            return
        outcome = self._outcome_of(response)
        if isinstance(outcome, UnmeteredCall) and outcome.reason == "missing_usage":
            message = f"{self._source()} ended with {kind} but no usage. {NOT_BILLED}"
            failed = kind == "response.failed"
            outcome = replace(
                missing_usage(self.call, message, outcome.response_id, outcome.model),
                reason="stream_error" if failed else "stream_without_usage",
            )
        self._decide(outcome)

    def _observe_chunk(self, chunk: Mapping[str, Any]) -> bool:
        self._remember(chunk)
        error = chunk.get("error")
        if error:
            # The SDK raises APIError for such a chunk; the raw bytes and a
            # drained stream report it the same way.
            code = error.get("code") if isinstance(error, Mapping) else None
            self._error_event = code if isinstance(code, str) and code else "error"
        if chunk.get("usage") is None:
            return False
        self._decide(self._outcome_of(chunk))
        return self._hides_usage_chunk and chunk.get("choices") == []

    def _outcome_of(self, body: object) -> CallOutcome:
        return outcome_from_body(
            body,
            self.call,
            request_id=self._request_id,
            response_id=self._response_id,
            streamed=True,
        )

    def _remember(self, body: Mapping[str, Any]) -> None:
        response_id = body.get("id")
        if isinstance(response_id, str) and response_id:
            self._response_id = response_id
        model = body.get("model")
        if isinstance(model, str) and model:
            self._model = model

    def _fallback_id(self) -> str | None:
        return self._response_id or self._request_id

    def _source(self) -> str:
        """Name the stream, its response and its endpoint for a message."""
        name = name_response(self._response_id, self._request_id)
        return f"stream of {name} from {self.call.path}"

    def _decide(self, outcome: CallOutcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            return
        logger.warning("%s reported usage twice; keeping the first", self._source())

    def ended(self) -> CallOutcome:
        """Return the outcome of a stream that ended without an exception."""
        if self.outcome is not None:
            return self.outcome
        if self._error_event is not None:
            return self._unknown(
                "stream_error",
                f"ended with an error event ({self._error_event}) before any usage",
            )
        if self._is_responses:
            return self._unknown(
                "stream_interrupted", "ended before its terminal event"
            )
        if self._expects_usage:
            return self._unknown(
                "stream_interrupted",
                "ended before the usage chunk that the request asked for",
            )
        return self._unknown(
            "stream_without_usage",
            "ended without usage because the request did not set "
            "stream_options.include_usage",
        )

    def interrupted(self, interruption: Interruption) -> CallOutcome:
        """Return the outcome of a stream cut, closed or dropped early."""
        if self.outcome is not None:
            return self.outcome
        return self._unknown(
            "stream_interrupted", interruption.describe(), interruption.error
        )

    def failed(self, error: BaseException) -> CallOutcome:
        """Return the outcome of a stream that the provider ended with an error."""
        if self.outcome is not None:
            return self.outcome
        return self._unknown(
            "stream_error",
            "ended with an error from the provider before any usage",
            error,
        )

    def _unknown(
        self, reason: UnmeteredReason, what: str, error: BaseException | None = None
    ) -> UnmeteredCall:
        return UnmeteredCall(
            call=self.call,
            reason=reason,
            message=f"{self._source()} {what}. {NOT_BILLED}",
            response_id=self._fallback_id(),
            model=self._model,
            error=error,
        )
