"""Iterators that meter the server-sent event streams of the OpenAI SDK.

``Stream.__init__`` stores ``self.__stream__()`` as its iterator, and every
consumer (``for``, ``next()``, the ``.stream()`` helpers, raw ``.parse()``)
pulls from that one iterator. The instrumentation makes ``__stream__`` return
one of the iterators below, which pass each event through unchanged, read the
usage on the way and tell the recorder when the stream ends.

``Stream.close()`` and the helpers' ``close()`` close the HTTP response but
leave the event generator suspended. So the iterators also replace ``close``
(``aclose`` for async streams) on that response object, and a stream closed
before its usage arrived is drained there.

A sync stream that is garbage collected is drained by the background worker
(:mod:`blnk_meter._worker`): the SDK's decoder reads the body through
:class:`_EventBlocks`, so the bytes after the last event the caller got are
still there when the SDK's generators are finalized. An async stream that is
garbage collected is reported as interrupted.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from . import _worker
from ._extract import header_request_id
from ._metered_call import MeteredCall, RawCapture, capturing
from ._recorder import CallOutcome
from ._stream_usage import Interruption, SseParser, StreamUsage

__all__ = ["AsyncMeteredStreamIterator", "MeteredStreamIterator", "attach_stream"]

logger = logging.getLogger(__name__)


def attach_stream(call: MeteredCall, stream: Any) -> bool:
    """Meter ``stream``, a ``Stream`` or ``AsyncStream`` that no one read yet.

    Returns:
        ``False`` when the stream does not iterate through a metered
        iterator, so its usage cannot be observed.
    """
    iterator = getattr(stream, "_iterator", None)
    if not isinstance(iterator, (MeteredStreamIterator, AsyncMeteredStreamIterator)):
        return False
    iterator.attach(call, stream.response)
    return True


def _outcome_of_error(usage: StreamUsage, error: BaseException) -> CallOutcome:
    from openai import APIConnectionError, APIError

    # The SDK raises a bare APIError for an error chunk inside the stream and
    # APIConnectionError (or its timeout subclass) when the connection fails.
    if isinstance(error, APIError) and not isinstance(error, APIConnectionError):
        return usage.failed(error)
    return usage.interrupted(Interruption(error))


def _observe(usage: StreamUsage, item: object, capture: RawCapture) -> bool:
    """Read one event, preferring the JSON the SDK decoded it from."""
    try:
        return usage.observe(capture.data if capture.is_set else item)
    except Exception:
        logger.exception(
            "failed to read usage from a stream event of %s", usage.call.path
        )
        return False


def _is_closed_generator(events: object) -> bool:
    """Whether a generator was closed, or finished, so it yields nothing more."""
    frame_attribute = "ag_frame" if hasattr(events, "ag_frame") else "gi_frame"
    return getattr(events, frame_attribute, True) is None


def _is_running_generator(events: object) -> bool:
    """Whether a generator is executing, so it cannot be advanced from here.

    The SDK's event generator closes the response in its ``finally`` block.
    When something other than the stream closes the generator (the event
    loop at shutdown, or the garbage collector), that close reaches the
    metering iterator while the generator still runs, and the rest of the
    stream can no longer be read.
    """
    running_attribute = "ag_running" if hasattr(events, "ag_running") else "gi_running"
    return getattr(events, running_attribute, False) is True


def _interruption_without_drain(
    call: MeteredCall, events: object
) -> Interruption | None:
    """Return why a stream stopped early cannot be drained, or ``None`` if it can."""
    if _is_running_generator(events):
        return Interruption(is_dropped=True)
    if not call.drain_on_close or _is_closed_generator(events):
        return Interruption()
    return None


_EMPTY_LINES = (b"\n", b"\r", b"\r\n")


class _EventBlocks:
    """The body of a sync stream, cut into pieces after every empty line.

    The SDK's decoder reads the body through this iterator. An event ends at
    an empty line, so when the decoder hands the caller an event, it has read
    nothing past that event. The bytes the caller has not seen stay here, and
    can be read after the caller dropped the stream. A cut where no event
    ends (the LF of a CRLF split between two reads) only makes the decoder
    ask for the next piece sooner.

    Args:
        read_body: the response's own ``iter_bytes``.
    """

    def __init__(self, read_body: Callable[..., Iterator[bytes]]) -> None:
        self._read_body = read_body
        self._chunks: Iterator[bytes] | None = None
        self._pieces: deque[bytes] = deque()
        self._line: list[bytes] = []
        self._block: list[bytes] = []
        self._is_exhausted = False

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Stand in for the response's ``iter_bytes``."""
        if chunk_size is not None:
            return self._read_body(chunk_size)
        return self

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while not self._pieces:
            if self._is_exhausted:
                raise StopIteration
            self._read_more()
        return self._pieces.popleft()

    def _read_more(self) -> None:
        if self._chunks is None:
            self._chunks = iter(self._read_body())
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._is_exhausted = True
            rest = b"".join(self._block) + b"".join(self._line)
            if rest:
                self._pieces.append(rest)
            return
        for part in chunk.splitlines(keepends=True):
            self._line.append(part)
            if not part.endswith((b"\n", b"\r")):
                continue  # the end of the chunk, in the middle of a line
            line = b"".join(self._line)
            self._line.clear()
            self._block.append(line)
            if line in _EMPTY_LINES:
                self._pieces.append(b"".join(self._block))
                self._block.clear()


class _SyncStream:
    """The metering of one sync stream, kept apart from its iterator.

    It refers to neither the iterator nor the SDK's ``Stream``, so a stream
    that the caller drops is still garbage collected. The response's
    ``close`` and the iterator's finalizer use it, the finalizer after the
    stream is gone.

    Args:
        call: the metered call of the stream.
        usage: follows the stream's events.
        response: the stream's HTTP response; its ``iter_bytes`` and
            ``close`` are replaced.
    """

    def __init__(self, call: MeteredCall, usage: StreamUsage, response: Any) -> None:
        self.call = call
        self.usage = usage
        self.is_pulling = False
        self.has_ended = False
        self._is_collected = False
        self._blocks = _EventBlocks(response.iter_bytes)
        self._close: Callable[[], None] = response.close
        # Kept on the instance for the finalizer: late in interpreter
        # shutdown, module globals are already None.
        self._submit = _worker.submit
        self._is_finalizing = sys.is_finalizing
        response.iter_bytes = self._blocks.iter_bytes
        response.close = self.close_response

    def end(self, outcome: CallOutcome) -> None:
        """Settle the call with the outcome of the stream's last event."""
        self.has_ended = True
        self.call.finish(outcome)

    def stop(self) -> None:
        """Settle a stream that the caller stopped reading before its usage."""
        if self.has_ended or self.call.is_settled:
            return
        if not self.call.drain_on_close:
            self.end(self.usage.interrupted(Interruption()))
            return
        logger.debug(
            "draining a stream of %s closed before its usage", self.call.call.path
        )
        self.end(self._read_rest())

    def _read_rest(self) -> CallOutcome:
        """Read the events the caller did not get, until one carries usage."""
        parser = SseParser()
        try:
            for piece in self._blocks:
                text = piece.decode("utf-8", errors="replace")
                for event in parser.feed(text):
                    self.usage.observe(event)
                    if self.usage.outcome is not None:
                        return self.usage.outcome
        except Exception as exc:
            logger.debug(
                "draining a stream of %s failed", self.call.call.path, exc_info=True
            )
            return self.usage.interrupted(Interruption(exc))
        return self.usage.ended()

    def close_response(self) -> None:
        """Settle the call, then close the response; replaces its ``close``."""
        if self._is_collected:
            # The SDK's event generator closes the response as the collector
            # finalizes it. The background worker closes it after reading on.
            return
        try:
            # The SDK closes the response itself while an event is pulled,
            # when the stream ends or fails; only a close from outside stops.
            if not self.is_pulling and not self._is_finalizing():
                self.stop()
        except Exception:
            logger.exception("failed to settle a closed stream")
        finally:
            self._close()

    def on_collected(self) -> None:
        """Hand a stream the caller dropped to the background worker.

        It runs inside the garbage collector, as a weakref callback, before
        the SDK's generators are finalized. So it only sets a flag and queues
        the work, and takes no lock.
        """
        if self.has_ended or self.call.is_settled:
            return
        self._is_collected = self._submit(self.settle_collected)

    def settle_collected(self) -> None:
        """Read on and settle a stream that the caller dropped, then close it."""
        try:
            self.stop()
        finally:
            self._close()


class MeteredStreamIterator:
    """The iterator of a sync ``Stream``, metering the events it passes on.

    Args:
        open_events: calls the SDK's ``Stream.__stream__`` and returns its
            event generator.
    """

    def __init__(self, open_events: Callable[[], Iterator[Any]]) -> None:
        self._stream: _SyncStream | None = None
        self._events = open_events()

    def attach(self, call: MeteredCall, response: Any) -> None:
        """Start metering for ``call``; ``response`` is the stream's HTTP response."""
        usage = StreamUsage(
            call.call,
            request_id=header_request_id(response),
            expects_usage=call.expects_stream_usage,
            hides_usage_chunk=call.hides_usage_chunk,
        )
        stream = _SyncStream(call, usage, response)
        # A finalizer that also ran at exit would read held streams on.
        finalizer = weakref.finalize(self, stream.on_collected)
        finalizer.atexit = False
        self._stream = stream

    def __iter__(self) -> MeteredStreamIterator:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        if stream is None or stream.has_ended:
            return next(self._events)
        while True:
            item, hidden = self._pull(stream)
            if not hidden:
                return item

    def _pull(self, stream: _SyncStream) -> tuple[Any, bool]:
        stream.is_pulling = True
        try:
            with capturing(strips_null_usage=stream.call.hides_usage_chunk) as capture:
                item = next(self._events)
        except StopIteration:
            stream.end(stream.usage.ended())
            raise
        except BaseException as exc:
            stream.end(_outcome_of_error(stream.usage, exc))
            raise
        finally:
            stream.is_pulling = False
        hidden = _observe(stream.usage, item, capture)
        if stream.usage.outcome is not None:
            stream.call.finish(stream.usage.outcome)
        return item, hidden


class AsyncMeteredStreamIterator:
    """The iterator of an ``AsyncStream``, metering the events it passes on.

    Args:
        open_events: calls the SDK's ``AsyncStream.__stream__`` and returns its
            async event generator.
    """

    def __init__(self, open_events: Callable[[], AsyncIterator[Any]]) -> None:
        self._call: MeteredCall | None = None
        self._usage: StreamUsage | None = None
        self._is_pulling = False
        self._has_ended = False
        self._aclose_response: Callable[[], Any] | None = None
        # Kept on the instance for ``__del__``: late in interpreter shutdown,
        # module globals are already None.
        self._submit = _worker.submit
        self._events = open_events()

    def attach(self, call: MeteredCall, response: Any) -> None:
        """Start metering for ``call``; ``response`` is the stream's HTTP response."""
        self._usage = StreamUsage(
            call.call,
            request_id=header_request_id(response),
            expects_usage=call.expects_stream_usage,
            hides_usage_chunk=call.hides_usage_chunk,
        )
        self._call = call
        self._aclose_response = response.aclose
        response.aclose = self._aclose_response_after_stop

    def _open_meter(self) -> tuple[MeteredCall, StreamUsage] | None:
        """Return the call and its usage while the stream still needs metering."""
        if self._call is None or self._usage is None or self._has_ended:
            return None
        return self._call, self._usage

    def _needs_stop(self) -> tuple[MeteredCall, StreamUsage] | None:
        meter = self._open_meter()
        if meter is None or meter[0].is_settled:
            return None
        return meter

    def __aiter__(self) -> AsyncMeteredStreamIterator:
        return self

    async def __anext__(self) -> Any:
        meter = self._open_meter()
        if meter is None:
            return await self._events.__anext__()
        while True:
            item, hidden = await self._pull(*meter)
            if not hidden:
                return item

    async def _pull(self, call: MeteredCall, usage: StreamUsage) -> tuple[Any, bool]:
        self._is_pulling = True
        try:
            with capturing(strips_null_usage=call.hides_usage_chunk) as capture:
                item = await self._events.__anext__()
        except StopAsyncIteration:
            await self._end(call, usage.ended())
            raise
        except BaseException as exc:
            await self._end(call, _outcome_of_error(usage, exc))
            raise
        finally:
            self._is_pulling = False
        hidden = _observe(usage, item, capture)
        if usage.outcome is not None:
            await call.afinish(usage.outcome)
        return item, hidden

    async def _end(self, call: MeteredCall, outcome: CallOutcome) -> None:
        self._has_ended = True
        await call.afinish(outcome)

    async def stop(self) -> None:
        """Settle a stream that the caller stopped reading before its usage."""
        meter = self._needs_stop()
        if meter is None:
            return
        call, usage = meter
        interruption = _interruption_without_drain(call, self._events)
        if interruption is not None:
            await self._end(call, usage.interrupted(interruption))
            return
        logger.debug("draining a stream of %s closed before its usage", call.call.path)
        try:
            while not call.is_settled:
                await self._pull(call, usage)
        except StopAsyncIteration:
            pass
        except Exception:
            logger.debug(
                "draining a stream of %s failed", call.call.path, exc_info=True
            )

    async def _aclose_response_after_stop(self) -> None:
        try:
            if not self._is_pulling:
                await self.stop()
        except Exception:
            logger.exception("failed to settle a closed stream")
        finally:
            if self._aclose_response is not None:
                await self._aclose_response()

    def __del__(self) -> None:
        # NOTE: an async stream garbage collected before its usage arrived is
        # reported as interrupted, not drained. A finalizer cannot await, and
        # the collector finalizes (closes) the response's buffers in the same
        # pass, before a task on the event loop could read the rest. Closing
        # the stream (``async with`` or ``await stream.close()``) drains it.
        meter = self._needs_stop()
        if meter is None:
            return
        self._has_ended = True
        call, usage = meter
        self._submit(lambda: _settle_dropped(call, usage))


def _settle_dropped(call: MeteredCall, usage: StreamUsage) -> None:
    """Report an async stream dropped before its usage; runs in the worker."""
    call.finish_from_sync_code(usage.interrupted(Interruption(is_dropped=True)))
