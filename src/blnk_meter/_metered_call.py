"""One metered provider call, from its ``begin`` to its single outcome.

The instrumentation wrappers share these pieces: the settings of
:func:`blnk_meter._instrument.install`, the :class:`MeteredCall` that makes
sure a recorder hears exactly one ``finish`` or ``cancel`` per ``begin``, and
the capture that hands the wrappers the JSON the SDK decoded. Calls still
unsettled when the process exits are reported by :func:`settle_calls_at_exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeGuard

from . import _worker
from ._extract import NOT_BILLED
from ._recorder import CallOutcome, Recorder
from ._usage import ProviderCall, UnmeteredCall

__all__ = [
    "MeteredCall",
    "RawCapture",
    "Settings",
    "capturing",
    "record_raw_data",
    "settle_calls_at_exit",
]

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
        _unsettled_calls.add(self)
        _worker.start()
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
        # The background worker may settle a call while another thread does.
        with self._settle_lock:
            if self._is_settled:
                return False
            self._is_settled = True
        _unsettled_calls.discard(self)
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
        """Finish from code that cannot await, such as the background worker.

        A call from a sync client finishes at once. A call from an async
        client finishes with ``afinish`` in a task on the event loop it began
        on, or with ``finish`` when that loop has closed or ends before the
        task runs.
        """
        if not self.start_on_loop(lambda: self.afinish(outcome), lambda: outcome):
            self.finish(outcome)

    def start_on_loop(
        self,
        start: Callable[[], Coroutine[Any, Any, None]],
        fallback: Callable[[], CallOutcome],
    ) -> bool:
        """Run ``start()`` in a task on the asyncio loop the call began on.

        It is safe to call from any thread. When the task ends without
        settling the call (it was cancelled or failed), or never runs because
        the loop stopped first, the background worker settles the call with
        ``finish(fallback())``. ``asyncio.run`` cancels the tasks still
        pending when its coroutine returns, so a task started just before
        that never runs.

        Returns:
            ``False`` when the call has no such loop, or it has closed, so
            nothing was started.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        settlement = _LoopSettlement(self, start, fallback)
        try:
            loop.call_soon_threadsafe(settlement.start_task)
        except RuntimeError:  # the loop closed in the meantime
            settlement.cancel()
            return False
        return True


_tasks: set[asyncio.Task[None]] = set()
"""Tasks of :class:`_LoopSettlement`, kept because the event loop keeps only
weak references to tasks."""


class _LoopSettlement:
    """A task that settles a call on its event loop, with a fallback outcome.

    When the task ended without settling the call, its done callback hands
    the fallback to the background worker, so that no posting blocks the
    loop. When the loop closed before the task was created (closing a loop
    drops the callbacks it has not run yet), ``__del__`` hands it over.
    """

    def __init__(
        self,
        call: MeteredCall,
        start: Callable[[], Coroutine[Any, Any, None]],
        fallback: Callable[[], CallOutcome],
    ) -> None:
        self._call: MeteredCall | None = call
        self._start = start
        self._fallback = fallback
        self._submit = _worker.submit

    def start_task(self) -> None:
        """Create the task; run as a callback on the call's event loop."""
        task = asyncio.get_running_loop().create_task(self._start())
        _tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        _tasks.discard(task)
        call = self._call
        if call is not None and not call.is_settled:
            self._submit(self.settle_unsettled)

    def cancel(self) -> None:
        """Forget the call, because the caller settles it another way."""
        self._call = None

    def settle_unsettled(self) -> None:
        """Settle the call with the fallback outcome, unless it is settled."""
        call, self._call = self._call, None
        if call is None or call.is_settled:
            return
        try:
            outcome = self._fallback()
        except Exception:
            logger.exception("failed to settle a call to %s", call.call.path)
            return
        call.finish(outcome)

    def __del__(self) -> None:
        # NOTE: a loop closed without cancelling its tasks leaves a task that
        # never ran pending in ``_tasks``, so neither this finalizer nor the
        # done callback runs, and the call is settled only at exit.
        # asyncio.run and asyncio.Runner cancel every task before they close
        # the loop.
        call = self._call
        if call is not None and not call.is_settled:
            self._submit(self.settle_unsettled)


_unsettled_calls: weakref.WeakSet[MeteredCall] = weakref.WeakSet()
"""Calls begun and not settled yet, so that the exit hook can report them."""


def _disown_calls_after_fork() -> None:
    """Mark the open calls a forked child inherited as settled, silently.

    The parent settles and reports them itself. Marked settled, the child's
    copies are neither read on when collected nor reported at its exit.
    """
    for metered in list(_unsettled_calls):
        # Another thread may have held the lock at the moment of the fork.
        metered._settle_lock = threading.Lock()
        metered._is_settled = True
    _unsettled_calls.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_calls_after_fork)


def settle_calls_at_exit(wait: float) -> None:
    """Report the calls still unsettled as the process exits.

    Run from an ``atexit`` hook, while logging still works. It first waits
    for the background worker to settle the calls handed to it, then reports
    every call still unsettled as unmetered, without reading the responses
    the caller still holds.

    Args:
        wait: the maximum wait for the background worker, in seconds.
    """
    if not _unsettled_calls:
        return
    if not _worker.wait_idle(wait):
        logger.warning(
            "blnk_meter's background worker was still settling calls at exit"
        )
    for metered in list(_unsettled_calls):
        metered.finish(_exited_first(metered.call))


def _exited_first(call: ProviderCall) -> UnmeteredCall:
    model = call.requested_model
    named = f" for model {model!r}" if model else ""
    return UnmeteredCall(
        call=call,
        reason="stream_interrupted",
        message=(
            f"the call to {call.path}{named} was not settled when the process "
            f"exited, so its usage was not read. {NOT_BILLED}"
        ),
    )


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
    """The first JSON document the SDK decoded while a capture was active.

    Args:
        strips_null_usage: remove a ``"usage": null`` key from the documents
            before the SDK builds its models from them.
    """

    __slots__ = ("data", "headers", "is_set", "strips_null_usage")

    def __init__(self, *, strips_null_usage: bool = False) -> None:
        self.data: object = None
        self.headers: Any = None
        self.is_set = False
        self.strips_null_usage = strips_null_usage

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
def capturing(*, strips_null_usage: bool = False) -> Iterator[RawCapture]:
    """Capture what the SDK decodes inside the ``with`` block.

    The capture follows the context, so it also records what generators
    advanced inside the block, and coroutines awaited inside it, decode.

    Args:
        strips_null_usage: remove ``"usage": null`` from the decoded
            documents. A chunk stream that requested usage carries that key
            on every chunk. When the instrumentation, not the caller, made
            that request, the caller's chunks would otherwise gain a key in
            ``to_dict()``, ``to_json()`` and ``model_dump(exclude_unset=True)``.
    """
    capture = RawCapture(strips_null_usage=strips_null_usage)
    reset_token = _active_capture.set(capture)
    try:
        yield capture
    finally:
        _active_capture.reset(reset_token)


def record_raw_data(data: object, response: object) -> object:
    """Hand a decoded JSON document to the active capture, if there is one.

    Returns:
        The document the SDK builds its model from: ``data``, or a copy
        without its ``"usage": null`` key when the capture strips it.
    """
    capture = _active_capture.get()
    if capture is None:
        return data
    if capture.strips_null_usage and _has_null_usage(data):
        data = {key: value for key, value in data.items() if key != "usage"}
    capture.record(data, response)
    return data


def _has_null_usage(data: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(data, dict) and "usage" in data and data["usage"] is None
