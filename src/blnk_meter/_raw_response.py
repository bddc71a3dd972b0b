"""Metering of raw responses: ``with_raw_response`` and ``with_streaming_response``.

A raw response whose body the SDK already read (``with_raw_response`` without
``stream=True``) is billed at once from its bytes. Any other raw response is
billed when the caller reads it: ``parse()`` of a stream hands the call to the
stream's iterator, and ``parse()``, ``read()``, ``text()``, ``json()`` or a
finished ``iter_*()`` bill from the bytes.

The caller may close the response first (``close()``, or leaving its
``with`` block) or drop it. With ``drain_on_close`` on, the rest of the body
is then read, from where the caller's ``iter_*()`` stopped, and the call is
billed from the whole body. Otherwise it is billed from what was read, or
reported as unmetered. A dropped response is read by the background worker
(:mod:`blnk_meter._worker`), never inside the garbage collector. The body is
never read while the caller still has a reference to the response, not even
at exit.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _worker
from ._extract import NOT_BILLED, header_request_id, name_response
from ._metered_call import MeteredCall
from ._metered_stream import attach_stream
from ._recorder import CallOutcome
from ._stream_usage import Interruption, outcome_from_bytes
from ._usage import UnmeteredCall

__all__ = [
    "RawBody",
    "async_chunks_wrapper",
    "async_close_wrapper",
    "async_parse_wrapper",
    "async_read_wrapper",
    "chunks_wrapper",
    "close_wrapper",
    "parse_wrapper",
    "read_wrapper",
    "track_raw_response",
]

logger = logging.getLogger(__name__)

_Chunk = TypeVar("_Chunk", bytes, str)

_open_bodies: weakref.WeakKeyDictionary[Any, RawBody] = weakref.WeakKeyDictionary()

_READER_ATTRIBUTE = "_blnk_meter_reader"
"""The attribute of a raw response that keeps the iterator of its body the
caller started last, so that closing the response reads on from there. The
response owns it, not :class:`RawBody`: the iterator refers back to the
response, so the two can only be collected together."""


@dataclass(frozen=True)
class _Reader:
    """An iterator over a body, and whether it yields lines."""

    chunks: Any
    """An ``Iterator`` of a sync response, an ``AsyncIterator`` of an async one."""
    is_line: bool


def _keep_reader(raw: Any, reader: _Reader) -> None:
    vars(raw)[_READER_ATTRIBUTE] = reader


def _reader_of(raw: Any) -> _Reader | None:
    reader = vars(raw).get(_READER_ATTRIBUTE)
    return reader if isinstance(reader, _Reader) else None


def _content_or_none(http_response: Any) -> bytes | None:
    """Return the body if it was read entirely, without reading it."""
    try:
        content = http_response.content
    except Exception:  # httpx raises ResponseNotRead for a body still unread
        return None
    return content if isinstance(content, bytes) else None


def track_raw_response(call: MeteredCall, raw: Any) -> CallOutcome | None:
    """Start metering a raw response returned by the SDK.

    Returns:
        The outcome when the body was read already, else ``None``: the call
        is then settled when the caller reads, closes or discards it.
    """
    http_response = raw.http_response
    is_event_stream = bool(
        getattr(raw, "_is_sse_stream", getattr(raw, "_stream", False))
    )
    body = RawBody(call, http_response, is_event_stream=is_event_stream)
    content = _content_or_none(http_response)
    if content is not None:
        return body.outcome_of_content(content)
    _open_bodies[raw] = body
    # The finalizer only queues the work. It does not run at exit, when the
    # caller may still hold the response.
    finalizer = weakref.finalize(raw, _worker.submit, body.settle_discarded)
    finalizer.atexit = False
    return None


def _open_body(raw: Any) -> RawBody | None:
    body = _open_bodies.get(raw)
    return body if body is not None and body.is_open else None


class RawBody:
    """The unread body of one metered raw response.

    Args:
        call: the metered call that produced the response.
        http_response: the HTTP response whose body the caller reads.
        is_event_stream: whether the body is a server-sent event stream.
    """

    def __init__(
        self, call: MeteredCall, http_response: Any, *, is_event_stream: bool
    ) -> None:
        self.call = call
        self.is_event_stream = is_event_stream
        self.is_handed_off = False
        self._http_response = http_response
        self._request_id = header_request_id(http_response)
        self._text: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def is_open(self) -> bool:
        """Whether this body still decides the call's outcome."""
        return not self.is_handed_off and not self.call.is_settled

    def hand_off(self, stream: Any) -> CallOutcome | None:
        """Let the iterator of ``stream``, parsed from this body, meter the call.

        Returns:
            An outcome to settle the call with when the stream cannot be
            metered, else ``None``.
        """
        self.is_handed_off = True
        if attach_stream(self.call, stream):
            return None
        name = name_response(None, self._request_id)
        return UnmeteredCall(
            call=self.call.call,
            reason="stream_without_usage",
            message=(
                f"the raw {name} from {self.call.call.path} was parsed into a "
                f"{type(stream).__name__}, whose events cannot be observed. "
                f"{NOT_BILLED}"
            ),
            response_id=self._request_id,
        )

    def outcome_of_content(
        self, content: bytes, interruption: Interruption | None = None
    ) -> CallOutcome:
        """Read the call's outcome from the body bytes.

        Args:
            content: the body, or its start when ``interruption`` is given.
            interruption: why the rest of the body was not read, if it was not.
        """
        return outcome_from_bytes(
            content,
            self.call.call,
            request_id=self._request_id,
            is_event_stream=self.is_event_stream,
            expects_usage=self.call.expects_stream_usage,
            interruption=interruption,
        )

    def feed(self, chunk: bytes | str, *, is_line: bool = False) -> None:
        """Keep a piece of the body that the caller iterated over."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        self._text.append(text + "\n" if is_line else text)

    def release(self) -> None:
        """Drop the pieces kept so far, once the call is settled."""
        self._text = []

    def outcome_of_fed(self, interruption: Interruption | None = None) -> CallOutcome:
        """Read the call's outcome from the pieces fed so far."""
        text = "".join(self._text) + self._decoder.decode(b"", final=True)
        return self.outcome_of_content(text.encode("utf-8"), interruption)

    def outcome_if_read(self) -> CallOutcome | None:
        """Return the outcome once the body was read entirely, else ``None``."""
        content = _content_or_none(self._http_response)
        if not self.is_open or content is None:
            return None
        return self.outcome_of_content(content)

    def drain(self, reader: _Reader | None) -> CallOutcome | None:
        """Read the rest of a body the caller closed or dropped.

        Args:
            reader: the iterator the caller started on the body, if any.

        Returns:
            The call's outcome, or ``None`` when it is settled already.
        """
        if not self.is_open:
            return None
        outcome = self._outcome_without_reading(reader)
        if outcome is not None:
            return outcome
        rest = self._rest_of_body(reader)
        try:
            for chunk in rest.chunks:
                self.feed(chunk, is_line=rest.is_line)
        except Exception as exc:
            return self._drain_failed(exc)
        return self.outcome_of_fed()

    async def adrain(self, reader: _Reader | None) -> CallOutcome | None:
        """Async counterpart of :meth:`drain`."""
        if not self.is_open:
            return None
        outcome = self._outcome_without_reading(reader)
        if outcome is not None:
            return outcome
        rest = self._rest_of_body(reader)
        try:
            async for chunk in rest.chunks:
                self.feed(chunk, is_line=rest.is_line)
        except Exception as exc:
            return self._drain_failed(exc)
        return self.outcome_of_fed()

    def _outcome_without_reading(self, reader: _Reader | None) -> CallOutcome | None:
        """Return the outcome when no more of the body can or need be read."""
        content = _content_or_none(self._http_response)
        if content is not None:
            return self.outcome_of_content(content)
        if not self.call.drain_on_close:
            return self.outcome_of_fed(Interruption())
        if reader is not None:
            # httpx closes a response once all its bytes arrived, but the
            # caller's iterator may still hold the last lines of them.
            return None
        if self._http_response.is_closed:
            return self.outcome_of_fed(Interruption())
        if getattr(self._http_response, "is_stream_consumed", False):
            # The caller's iterator was collected with the response, and httpx
            # cannot start the body over.
            return self.outcome_of_fed(Interruption(is_dropped=True))
        return None

    def _rest_of_body(self, reader: _Reader | None) -> _Reader:
        logger.debug("reading the rest of a response of %s", self.call.call.path)
        if reader is not None:
            return reader
        if self.call.call.is_async:
            return _Reader(self._http_response.aiter_bytes(), is_line=False)
        return _Reader(self._http_response.iter_bytes(), is_line=False)

    def _drain_failed(self, error: BaseException) -> CallOutcome:
        logger.debug(
            "reading the rest of a response of %s failed (%s)",
            self.call.call.path,
            type(error).__name__,
        )
        return self.outcome_of_fed(Interruption(error))

    async def asettle_drained(self, reader: _Reader | None) -> None:
        """Settle the call of an async body its caller closed or dropped."""
        try:
            outcome = await self.adrain(reader)
        except asyncio.CancelledError as exc:
            await _afinish(self, functools.partial(self._drain_failed, exc))
            raise
        except Exception as exc:
            _log_failure(self)
            await _afinish(self, functools.partial(self._drain_failed, exc))
            return
        await _afinish(self, lambda: outcome)

    def settle_discarded(self) -> None:
        """Settle the call of a response garbage collected while still open.

        It runs in the background worker. A sync body is read on in the
        worker. An async body is read on in a task on the event loop the call
        began on. It is reported as dropped when that loop has closed, or
        ends before the task could read the body.
        """
        if not self.is_open:
            return
        if not self.call.call.is_async:
            _finish(self, lambda: self.drain(None))
            return
        if self.call.drain_on_close and self.call.start_on_loop(
            lambda: self.asettle_drained(None),
            lambda: self.outcome_of_fed(Interruption(is_loop_ended=True)),
        ):
            return
        interruption = Interruption(is_dropped=self.call.drain_on_close)
        _finish(self, lambda: self.outcome_of_fed(interruption))

    def watch(self, chunks: Iterator[_Chunk], *, is_line: bool) -> Iterator[_Chunk]:
        """Pass ``chunks`` on, and settle the call when they run out."""
        for chunk in chunks:
            if self.is_open:
                self.feed(chunk, is_line=is_line)
            yield chunk
        _finish(self, self._outcome_if_open)

    async def awatch(
        self, chunks: AsyncIterator[_Chunk], *, is_line: bool
    ) -> AsyncIterator[_Chunk]:
        """Async counterpart of :meth:`watch`."""
        async for chunk in chunks:
            if self.is_open:
                self.feed(chunk, is_line=is_line)
            yield chunk
        await _afinish(self, self._outcome_if_open)

    def _outcome_if_open(self) -> CallOutcome | None:
        return self.outcome_of_fed() if self.is_open else None


# wrapt wrappers for the raw response classes. Each one passes straight
# through unless the response is a metered raw response still open.

_Wrapped = Callable[..., Any]


def _finish(body: RawBody, read_outcome: Callable[[], CallOutcome | None]) -> None:
    """Settle the call with ``read_outcome()``, if it returns one.

    An error is logged, not raised, so it never reaches the caller.
    """
    try:
        outcome = read_outcome()
        if outcome is not None:
            body.call.finish_from_sync_code(outcome)
    except Exception:
        _log_failure(body)
    finally:
        if body.call.is_settled:
            body.release()


async def _afinish(
    body: RawBody, read_outcome: Callable[[], CallOutcome | None]
) -> None:
    """Async counterpart of :func:`_finish`."""
    try:
        outcome = read_outcome()
        if outcome is not None:
            await body.call.afinish(outcome)
    except Exception:
        _log_failure(body)
    finally:
        if body.call.is_settled:
            body.release()


def _log_failure(body: RawBody) -> None:
    logger.exception("failed to meter a raw response of %s", body.call.call.path)


def parse_wrapper(
    wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrap the sync ``parse()`` of ``LegacyAPIResponse`` and ``APIResponse``."""
    body = _open_body(instance)
    if body is None:
        return wrapped(*args, **kwargs)
    if body.is_event_stream:
        stream = wrapped(*args, **kwargs)
        _finish(body, lambda: body.hand_off(stream))
        return stream
    try:
        return wrapped(*args, **kwargs)
    finally:
        _finish(body, body.outcome_if_read)


async def async_parse_wrapper(
    wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrap ``AsyncAPIResponse.parse()``."""
    body = _open_body(instance)
    if body is None:
        return await wrapped(*args, **kwargs)
    if body.is_event_stream:
        stream = await wrapped(*args, **kwargs)
        await _afinish(body, lambda: body.hand_off(stream))
        return stream
    try:
        return await wrapped(*args, **kwargs)
    finally:
        await _afinish(body, body.outcome_if_read)


def read_wrapper(
    wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrap ``APIResponse.read()``, which ``text()`` and ``json()`` call too."""
    content = wrapped(*args, **kwargs)
    body = _open_body(instance)
    if body is not None:
        _finish(body, lambda: body.outcome_of_content(content))
    return content


async def async_read_wrapper(
    wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrap ``AsyncAPIResponse.read()``, which ``text()`` and ``json()`` call too."""
    content = await wrapped(*args, **kwargs)
    body = _open_body(instance)
    if body is not None:
        await _afinish(body, lambda: body.outcome_of_content(content))
    return content


def chunks_wrapper(is_line: bool) -> Callable[..., Any]:
    """Return a wrapper for ``APIResponse.iter_bytes/iter_text/iter_lines``."""

    def wrapper(
        wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        chunks = wrapped(*args, **kwargs)
        body = _open_body(instance)
        if body is None:
            return chunks
        _keep_reader(instance, _Reader(chunks, is_line))
        return body.watch(chunks, is_line=is_line)

    return wrapper


def async_chunks_wrapper(is_line: bool) -> Callable[..., Any]:
    """Return a wrapper for the ``iter_*`` methods of ``AsyncAPIResponse``."""

    def wrapper(
        wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        chunks = wrapped(*args, **kwargs)
        body = _open_body(instance)
        if body is None:
            return chunks
        _keep_reader(instance, _Reader(chunks, is_line))
        return body.awatch(chunks, is_line=is_line)

    return wrapper


def close_wrapper(
    wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrap ``APIResponse.close()``, which ``with_streaming_response`` calls on exit.

    The call is settled first, so that the rest of the body can be read.
    """
    body = _open_body(instance)
    try:
        if body is not None:
            _finish(body, lambda: body.drain(_reader_of(instance)))
    finally:
        result = wrapped(*args, **kwargs)
    return result


async def async_close_wrapper(
    wrapped: _Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wrap ``AsyncAPIResponse.close()``; see :func:`close_wrapper`."""
    body = _open_body(instance)
    try:
        if body is not None:
            await body.asettle_drained(_reader_of(instance))
    finally:
        result = await wrapped(*args, **kwargs)
    return result
