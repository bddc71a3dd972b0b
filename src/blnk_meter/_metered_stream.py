"""Iterators that meter the server-sent event streams of the OpenAI SDK.

``Stream.__init__`` stores ``self.__stream__()`` as its iterator, and every
consumer (``for``, ``next()``, the ``.stream()`` helpers, raw ``.parse()``)
pulls from that one iterator. The instrumentation makes ``__stream__`` return
one of the iterators below, which pass each event through unchanged, read the
usage on the way and tell the recorder when the stream ends.

``Stream.close()`` and the helpers' ``close()`` close the HTTP response but
leave the event generator suspended. So the iterators also replace ``close``
(``aclose`` for async streams) on that response object, and a stream closed
before its usage arrived is drained there. A sync stream that is garbage
collected is drained by its iterator's finalizer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ._metered_call import MeteredCall, RawCapture, capturing
from ._recorder import CallOutcome
from ._stream_usage import Interruption, StreamUsage

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


def _request_id(response: Any) -> str | None:
    headers = getattr(response, "headers", None)
    request_id = headers.get("x-request-id") if headers is not None else None
    return request_id if isinstance(request_id, str) else None


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


class _StreamMeter:
    """State shared by the sync and async iterators."""

    def __init__(self) -> None:
        self._call: MeteredCall | None = None
        self._usage: StreamUsage | None = None
        self._is_pulling = False
        self._has_ended = False

    def attach(self, call: MeteredCall, response: Any) -> None:
        self._usage = StreamUsage(
            call.call,
            request_id=_request_id(response),
            expects_usage=call.expects_stream_usage,
            hides_usage_chunk=call.hides_usage_chunk,
        )
        self._call = call

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


class MeteredStreamIterator(_StreamMeter):
    """The iterator of a sync ``Stream``, metering the events it passes on.

    Args:
        open_events: calls the SDK's ``Stream.__stream__`` and returns its
            event generator.
    """

    def __init__(self, open_events: Callable[[], Iterator[Any]]) -> None:
        super().__init__()
        self._close_response: Callable[[], None] | None = None
        # Opened after this object exists, so that when both become garbage
        # in one cycle, CPython's collector finalizes this iterator first (it
        # runs finalizers in allocation order) and it can still drain them.
        self._events = open_events()

    def attach(self, call: MeteredCall, response: Any) -> None:
        """Start metering for ``call``; ``response`` is the stream's HTTP response."""
        super().attach(call, response)
        self._close_response = response.close
        response.close = self._close_response_after_stop

    def __iter__(self) -> MeteredStreamIterator:
        return self

    def __next__(self) -> Any:
        meter = self._open_meter()
        if meter is None:
            return next(self._events)
        while True:
            item, hidden = self._pull(*meter)
            if not hidden:
                return item

    def _pull(self, call: MeteredCall, usage: StreamUsage) -> tuple[Any, bool]:
        self._is_pulling = True
        try:
            with capturing() as capture:
                item = next(self._events)
        except StopIteration:
            self._end(call, usage.ended())
            raise
        except BaseException as exc:
            self._end(call, _outcome_of_error(usage, exc))
            raise
        finally:
            self._is_pulling = False
        hidden = _observe(usage, item, capture)
        if usage.outcome is not None:
            call.finish(usage.outcome)
        return item, hidden

    def _end(self, call: MeteredCall, outcome: CallOutcome) -> None:
        self._has_ended = True
        call.finish(outcome)

    def stop(self) -> None:
        """Settle a stream that the caller stopped reading before its usage."""
        meter = self._needs_stop()
        if meter is None:
            return
        call, usage = meter
        interruption = _interruption_without_drain(call, self._events)
        if interruption is not None:
            self._end(call, usage.interrupted(interruption))
            return
        logger.debug("draining a stream of %s closed before its usage", call.call.path)
        try:
            while not call.is_settled:
                self._pull(call, usage)
        except StopIteration:
            pass
        except Exception:
            logger.debug(
                "draining a stream of %s failed", call.call.path, exc_info=True
            )

    def _close_response_after_stop(self) -> None:
        try:
            # The SDK closes the response itself while an event is pulled,
            # when the stream ends or fails; only a close from outside stops.
            if not self._is_pulling:
                self.stop()
        except Exception:
            logger.exception("failed to settle a closed stream")
        finally:
            if self._close_response is not None:
                self._close_response()

    def __del__(self) -> None:
        # NOTE: draining here reads the rest of the response inside the
        # garbage collector, which blocks the collecting thread until the
        # provider finishes the stream.
        try:
            self.stop()
        except BaseException:
            with contextlib.suppress(Exception):
                logger.exception("failed to settle a garbage-collected stream")


class AsyncMeteredStreamIterator(_StreamMeter):
    """The iterator of an ``AsyncStream``, metering the events it passes on.

    Args:
        open_events: calls the SDK's ``AsyncStream.__stream__`` and returns its
            async event generator.
    """

    def __init__(self, open_events: Callable[[], AsyncIterator[Any]]) -> None:
        super().__init__()
        self._aclose_response: Callable[[], Any] | None = None
        # Opened after this object exists; see MeteredStreamIterator.
        self._events = open_events()

    def attach(self, call: MeteredCall, response: Any) -> None:
        """Start metering for ``call``; ``response`` is the stream's HTTP response."""
        super().attach(call, response)
        self._aclose_response = response.aclose
        response.aclose = self._aclose_response_after_stop

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
            with capturing() as capture:
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
        call, usage = meter
        self._has_ended = True
        try:
            call.finish_from_sync_code(usage.interrupted(Interruption(is_dropped=True)))
        except BaseException:
            with contextlib.suppress(Exception):
                logger.exception("failed to settle a garbage-collected stream")
