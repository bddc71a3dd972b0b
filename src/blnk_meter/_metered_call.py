"""One metered provider call, from its ``begin`` to its single outcome.

The instrumentation wrappers share these pieces: the settings of
:func:`blnk_meter._instrument.install`, the :class:`MeteredCall` that makes
sure a recorder hears exactly one ``finish`` or ``cancel`` per ``begin``, and
the capture that hands the wrappers the JSON the SDK decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ._recorder import CallOutcome, Recorder
from ._usage import ProviderCall, UnmeteredCall

__all__ = ["MeteredCall", "RawCapture", "Settings", "capturing", "record_raw_data"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The settings the instrumentation was installed with.

    Attributes:
        recorder: receives every metered call.
        inject_stream_usage: ask chat and completion streams for a usage chunk.
        drain_on_close: read the rest of a stream closed before its usage,
            and of a raw response closed or dropped before it was read.
    """

    recorder: Recorder
    inject_stream_usage: bool
    drain_on_close: bool


class MeteredCall:
    """A call that a recorder began, until its single finish or cancel.

    Every method is safe to call more than once, because only the first
    outcome reaches the recorder. An ``Exception`` from the recorder is
    logged, not raised.

    Args:
        call: the request as it was sent.
        token: what the recorder's ``begin`` returned.
        settings: the settings in force when the call began.
        expects_stream_usage: whether a chat or completion stream request
            asked for a usage chunk, by the caller or by the instrumentation.
        hides_usage_chunk: whether the instrumentation asked for that chunk
            and so hides it from the caller.
    """

    def __init__(
        self,
        call: ProviderCall,
        token: object,
        settings: Settings,
        *,
        expects_stream_usage: bool = False,
        hides_usage_chunk: bool = False,
    ) -> None:
        self.call = call
        self.expects_stream_usage = expects_stream_usage
        self.hides_usage_chunk = hides_usage_chunk
        self.drain_on_close = settings.drain_on_close
        self._token = token
        self._recorder = settings.recorder
        self._is_settled = False
        self._settle_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        if call.is_async:
            # An async client may run under another event loop than asyncio's
            # (trio, through anyio); finalizers then settle with ``finish``.
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()

    @property
    def is_settled(self) -> bool:
        """Whether the recorder has received the outcome already."""
        return self._is_settled

    def _settle(self) -> bool:
        # A finalizer may settle a stream from another thread.
        with self._settle_lock:
            if self._is_settled:
                return False
            self._is_settled = True
            return True

    def finish(self, outcome: CallOutcome) -> None:
        """Hand the outcome to the recorder's ``finish``."""
        if not self._settle():
            return
        _log_outcome(outcome)
        try:
            self._recorder.finish(self._token, outcome)
        except Exception:
            _log_recorder_error("finish", self.call)

    async def afinish(self, outcome: CallOutcome) -> None:
        """Hand the outcome to the recorder's ``afinish``."""
        if not self._settle():
            return
        _log_outcome(outcome)
        try:
            await self._recorder.afinish(self._token, outcome)
        except Exception:
            _log_recorder_error("afinish", self.call)

    def cancel(self, error: BaseException | None) -> None:
        """Report to ``cancel`` that the call failed before any usage."""
        if not self._settle():
            return
        _log_cancel(self.call, error)
        try:
            self._recorder.cancel(self._token, error)
        except Exception:
            _log_recorder_error("cancel", self.call)

    async def acancel(self, error: BaseException | None) -> None:
        """Report to ``acancel`` that the call failed before any usage."""
        if not self._settle():
            return
        _log_cancel(self.call, error)
        try:
            await self._recorder.acancel(self._token, error)
        except Exception:
            _log_recorder_error("acancel", self.call)

    def finish_from_sync_code(self, outcome: CallOutcome) -> None:
        """Finish from code that cannot await, such as a finalizer.

        A call from a sync client finishes at once. A call from an async
        client finishes with ``afinish`` in a task on the event loop it began
        on, or with ``finish`` when that loop has closed.
        """
        if not self.start_on_loop(lambda: self.afinish(outcome)):
            self.finish(outcome)

    def start_on_loop(self, start: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``start()`` in a task on the asyncio loop the call began on.

        It is safe to call from any thread and from a finalizer.

        Returns:
            ``False`` when the call has no such loop, or it has closed, so
            nothing was started.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(_start_task, start)
        except RuntimeError:  # the loop closed in the meantime
            return False
        return True


_tasks: set[asyncio.Task[None]] = set()


def _start_task(start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # The event loop keeps only weak references to tasks.
    task = asyncio.get_running_loop().create_task(start())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _log_outcome(outcome: CallOutcome) -> None:
    if isinstance(outcome, UnmeteredCall):
        logger.debug("call to %s not metered (%s)", outcome.call.path, outcome.reason)


def _log_cancel(call: ProviderCall, error: BaseException | None) -> None:
    # The error's message may quote the provider's response, so only its
    # type is logged.
    logger.debug(
        "call to %s failed before any usage (%s)", call.path, type(error).__name__
    )


def _log_recorder_error(method: str, call: ProviderCall) -> None:
    logger.exception(
        "recorder %s() failed for a call to %s; the caller's OpenAI call is unaffected",
        method,
        call.path,
    )


class RawCapture:
    """The first JSON document the SDK decoded while a capture was active."""

    __slots__ = ("data", "headers", "is_set")

    def __init__(self) -> None:
        self.data: object = None
        self.headers: Any = None
        self.is_set = False

    def record(self, data: object, response: object) -> None:
        """Keep ``data`` and the response headers, unless something came first."""
        if self.is_set:
            return
        self.is_set = True
        self.data = data
        self.headers = getattr(response, "headers", None)


_active_capture: ContextVar[RawCapture | None] = ContextVar(
    "blnk_meter_raw_capture", default=None
)


@contextmanager
def capturing() -> Iterator[RawCapture]:
    """Capture what the SDK decodes inside the ``with`` block.

    The capture follows the context, so it also records what generators
    advanced inside the block, and coroutines awaited inside it, decode.
    """
    capture = RawCapture()
    reset_token = _active_capture.set(capture)
    try:
        yield capture
    finally:
        _active_capture.reset(reset_token)


def record_raw_data(data: object, response: object) -> None:
    """Hand a decoded JSON document to the active capture, if there is one."""
    capture = _active_capture.get()
    if capture is not None:
        capture.record(data, response)
