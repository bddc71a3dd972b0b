"""Follow the HTTP attempts of one SDK request, to find responses that were lost.

The SDK's ``request`` sends a request once, and again for each retry. The
instrumentation wraps ``_send_request``, which sends one attempt and returns
its response. So it can tell an attempt that received a response from one
whose response never arrived, because of a read timeout, a connection that
failed while waiting, a cancelled task or an interrupt. The provider may
have processed and billed such a request. Failures before the request went
out (connect errors and timeouts, a full connection pool, write errors) are
not lost responses.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ._extract import NOT_BILLED
from ._metered_call import MeteredCall, Settings
from ._usage import ProviderCall, UnmeteredCall

__all__ = [
    "Attempts",
    "LostAttempt",
    "areport_retried",
    "async_send_wrapper",
    "lost_response",
    "report_retried",
    "sync_send_wrapper",
    "tracking_attempts",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LostAttempt:
    """An attempt whose request was sent but whose response never arrived.

    Attributes:
        error: what ended the wait: the HTTP client's exception, a
            cancellation or an interrupt.
        cause: why no response arrived, as a clause for a message.
    """

    error: BaseException
    cause: str


class Attempts:
    """The attempts of one SDK request, in the order they were sent."""

    def __init__(self) -> None:
        self.lost: list[LostAttempt] = []
        self.is_last_lost = False

    def received(self) -> None:
        """Note that an attempt received a response, of any status."""
        self.is_last_lost = False

    def failed(self, error: BaseException) -> None:
        """Note that an attempt raised ``error`` instead of returning a response."""
        cause = _cause_of_loss(error)
        self.is_last_lost = cause is not None
        if cause is not None:
            self.lost.append(LostAttempt(error, cause))

    def last_lost(self) -> LostAttempt | None:
        """Return the last attempt if its response was lost, else ``None``."""
        return self.lost[-1] if self.is_last_lost else None

    def retried_lost(self) -> list[LostAttempt]:
        """Return the lost attempts that the SDK sent again."""
        return self.lost[:-1] if self.is_last_lost else self.lost


def _cause_of_loss(error: BaseException) -> str | None:
    """Return why a failed attempt has no response, or ``None`` if it was not sent.

    NOTE: a cancellation or an interrupt counts as a lost response even while
    the connection is still being opened, because the wrapper cannot see when
    the request's bytes left. Opening a connection is usually quick next to
    waiting for a model's response.
    """
    name = type(error).__name__
    if isinstance(error, asyncio.CancelledError):
        return "the task waiting for it was cancelled"
    if not isinstance(error, Exception):
        return f"the wait for it was interrupted ({name})"
    for module in _http_client_modules():
        if isinstance(error, module.ReadTimeout):
            return f"reading it timed out ({name})"
        if isinstance(error, (module.ReadError, module.RemoteProtocolError)):
            return f"the connection failed while waiting for it ({name})"
    return None


def _http_client_modules() -> list[Any]:
    """Return the loaded HTTP client packages the SDK may send with."""
    names = ("httpx2", "httpx")
    return [sys.modules[name] for name in names if name in sys.modules]


def lost_response(
    call: ProviderCall, attempt: LostAttempt, *, is_retried: bool
) -> UnmeteredCall:
    """Report an attempt whose response was lost.

    Args:
        call: the request as it was sent.
        attempt: the attempt whose response never arrived.
        is_retried: whether the SDK sent the request again afterwards.
    """
    model = call.requested_model
    named = f" for model {model!r}" if model else ""
    retried = ", and the SDK sent the request again" if is_retried else ""
    return UnmeteredCall(
        call=call,
        reason="response_lost",
        message=(
            f"the request to {call.path}{named} was sent, but no response "
            f"arrived because {attempt.cause}{retried}. The provider may have "
            f"processed and billed it. {NOT_BILLED}"
        ),
        error=attempt.error,
    )


_active_attempts: ContextVar[Attempts | None] = ContextVar(
    "blnk_meter_attempts", default=None
)


@contextmanager
def tracking_attempts() -> Iterator[Attempts]:
    """Record the attempts that requests sent inside the ``with`` block make."""
    attempts = Attempts()
    reset_token = _active_attempts.set(attempts)
    try:
        yield attempts
    finally:
        _active_attempts.reset(reset_token)


def sync_send_wrapper(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Wrap ``SyncAPIClient._send_request`` to note what each attempt got."""
    attempts = _active_attempts.get()
    if attempts is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        attempts.failed(exc)
        raise
    attempts.received()
    return response


async def async_send_wrapper(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Wrap ``AsyncAPIClient._send_request`` to note what each attempt got."""
    attempts = _active_attempts.get()
    if attempts is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        attempts.failed(exc)
        raise
    attempts.received()
    return response


def report_retried(settings: Settings, call: ProviderCall, attempts: Attempts) -> None:
    """Report each attempt the SDK retried after its response was lost."""
    for attempt in attempts.retried_lost():
        try:
            token = settings.recorder.begin(call)
        except Exception:
            _log_retried_error(call)
            continue
        if token is not None:
            outcome = lost_response(call, attempt, is_retried=True)
            MeteredCall(call, token, settings).finish(outcome)


async def areport_retried(
    settings: Settings, call: ProviderCall, attempts: Attempts
) -> None:
    """Async counterpart of :func:`report_retried`."""
    for attempt in attempts.retried_lost():
        try:
            token = await settings.recorder.abegin(call)
        except Exception:
            _log_retried_error(call)
            continue
        if token is not None:
            outcome = lost_response(call, attempt, is_retried=True)
            await MeteredCall(call, token, settings).afinish(outcome)


def _log_retried_error(call: ProviderCall) -> None:
    logger.exception(
        "recorder begin() failed for a retried call to %s whose response was "
        "lost; that attempt is not reported",
        call.path,
    )
