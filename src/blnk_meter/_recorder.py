"""The interface between the OpenAI instrumentation and whatever bills the calls.

The instrumentation calls :meth:`Recorder.begin` before a billable request is
sent and exactly one of :meth:`Recorder.finish` or :meth:`Recorder.cancel`
once the call's outcome is known. Async clients use the ``a``-prefixed
coroutines instead.
"""

from __future__ import annotations

from typing import Protocol

from ._usage import ProviderCall, UnmeteredCall, Usage

__all__ = ["CallOutcome", "Recorder"]

CallOutcome = Usage | UnmeteredCall
"""What a finished call produced: usage to bill, or a report that it is unknown."""


class Recorder(Protocol):
    """Receives every billable provider call the instrumentation sees."""

    def begin(self, call: ProviderCall) -> object | None:
        """Start metering a call before its request is sent.

        Returns:
            An opaque token passed back to :meth:`finish` or :meth:`cancel`,
            or ``None`` to leave this call unmetered.

        Raises:
            BlnkMeterError: to stop the call before the provider is paid, for
                example when no customer is in scope. Only documented errors
                are raised here; the instrumentation lets them propagate.
        """
        ...

    async def abegin(self, call: ProviderCall) -> object | None:
        """Async counterpart of :meth:`begin`."""
        ...

    def finish(self, token: object, outcome: CallOutcome) -> None:
        """Bill a finished call, or report that its usage is unknown."""
        ...

    async def afinish(self, token: object, outcome: CallOutcome) -> None:
        """Async counterpart of :meth:`finish`."""
        ...

    def cancel(self, token: object, error: BaseException | None) -> None:
        """Forget a call that failed before the provider reported any usage."""
        ...

    async def acancel(self, token: object, error: BaseException | None) -> None:
        """Async counterpart of :meth:`cancel`."""
        ...
