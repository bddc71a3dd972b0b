"""Failures a meter keeps for calls it could not record, and its counters.

Failures are kept in memory with everything needed to reconcile or resend
them, and each is logged and handed to the meter's error hook.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Literal

from ._posting import Posting
from ._usage import ProviderCall, UnmeteredCall, Usage

__all__ = ["FailureKind", "FailureLog", "MeterFailure", "MeterStats"]

logger = logging.getLogger(__name__)

FailureKind = Literal["unmetered", "unpriced", "undelivered", "failed"]


@dataclass(frozen=True)
class MeterFailure:
    """A billable call that was not recorded in the ledger, kept for follow-up.

    Attributes:
        kind: ``"unmetered"`` (usage unknown or invalid), ``"unpriced"`` (no
            price for the model), ``"undelivered"`` (the ledger did not record
            the posting; :meth:`Meter.retry_undelivered` sends it again) or
            ``"failed"`` (an unexpected error inside blnk_meter).
        message: what went wrong, naming the response and the customer.
        call: the provider request.
        customer: the customer the call was attributed to.
        error: the exception behind the failure, if any.
        usage: the usage, when it was known.
        unmetered: the instrumentation's report, for unknown usage.
        posting: the posting that was not delivered.
        occurred_at: when the failure was recorded (UTC).
    """

    kind: FailureKind
    message: str
    call: ProviderCall
    customer: str | None
    error: BaseException | None = None
    usage: Usage | None = None
    unmetered: UnmeteredCall | None = None
    posting: Posting | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True)
class MeterStats:
    """Counters since the meter was created.

    Every counter only grows. The postings still waiting for delivery are
    the ``"undelivered"`` entries of :attr:`Meter.failures`.

    Attributes:
        calls: billable provider calls the meter began metering. Each
            attempt that the SDK sent again after its response was lost
            counts as one more call.
        posted: postings the ledger recorded on the send that counted them,
            first sends and retries alike.
        duplicates: postings the ledger already held from an earlier send.
        empty: calls that used no tokens and cost nothing, so posted nothing.
        unpriced_zero: postings sent with a flagged zero charge because the
            model has no price and the policy is ``"zero"``.
        cancelled: calls that got an error response from the provider, or
            failed before any usage; nothing to bill.
        ignored: calls outside any customer scope under the ``"ignore"`` policy.
        unmetered: calls whose usage was unknown or invalid.
        unpriced: calls not posted because the model has no price.
        undelivered: postings the ledger did not record when first sent.
        retried: undelivered postings the ledger recorded on a later
            :meth:`Meter.retry_undelivered`.
        failed: calls lost to an unexpected error inside blnk_meter.
    """

    calls: int = 0
    posted: int = 0
    duplicates: int = 0
    empty: int = 0
    unpriced_zero: int = 0
    cancelled: int = 0
    ignored: int = 0
    unmetered: int = 0
    unpriced: int = 0
    undelivered: int = 0
    retried: int = 0
    failed: int = 0


class FailureLog:
    """A thread-safe record of a meter's failures and counters.

    Args:
        on_error: called with every new failure; exceptions it raises are
            logged and swallowed.
    """

    def __init__(self, on_error: Callable[[MeterFailure], None] | None) -> None:
        self._on_error = on_error
        # Reentrant, so a garbage-collector finalizer that settles a call in
        # the thread already holding the lock cannot deadlock on it.
        self._lock = threading.RLock()
        self._stats: dict[str, int] = dict.fromkeys(MeterStats.__dataclass_fields__, 0)
        self._failures: list[MeterFailure] = []

    @property
    def stats(self) -> MeterStats:
        """A snapshot of the counters."""
        with self._lock:
            return MeterStats(**self._stats)

    @property
    def failures(self) -> list[MeterFailure]:
        """The kept failures, oldest first."""
        with self._lock:
            return list(self._failures)

    def count(self, name: str) -> None:
        """Add one to a counter of :class:`MeterStats`."""
        with self._lock:
            self._stats[name] += 1

    def record(self, failure: MeterFailure) -> None:
        """Keep a new failure, count it, log it and pass it to the hook."""
        with self._lock:
            self._failures.append(failure)
            self._stats[failure.kind] += 1
        logger.error("%s [%s]", failure.message, failure.kind)
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:
                logger.exception("the meter's on_error hook raised")
        _drop_tracebacks(failure.error)

    def take_undelivered(self) -> list[MeterFailure]:
        """Remove and return the undelivered failures, for sending again.

        Taking them out first means two concurrent retries never send the
        same posting at once.
        """
        with self._lock:
            taken = [f for f in self._failures if f.kind == "undelivered"]
            self._failures = [f for f in self._failures if f.kind != "undelivered"]
        if taken:
            logger.info("sending %d undelivered posting(s) again", len(taken))
        return taken

    def restore(self, failures: list[MeterFailure]) -> None:
        """Put back failures taken for a retry that was interrupted."""
        with self._lock:
            self._failures.extend(failures)

    def clear(self) -> list[MeterFailure]:
        """Remove and return every kept failure."""
        with self._lock:
            taken, self._failures = self._failures, []
        return taken

    def keep(self, failure: MeterFailure, error: BaseException) -> None:
        """Put back a failure whose retry failed, with the new error."""
        event_id = failure.posting.event_id if failure.posting else None
        reason = f"{type(error).__name__}: {error}"
        logger.error("posting %s still undelivered: %s", event_id, reason)
        again = replace(
            failure,
            message=f"ledger did not record posting {event_id} for customer "
            f"{failure.customer!r} on retry: {reason}",
            error=error,
            occurred_at=datetime.now(timezone.utc),
        )
        _drop_tracebacks(error)
        with self._lock:
            self._failures.append(again)


def _drop_tracebacks(error: BaseException | None) -> None:
    """Release the stack frames a kept exception holds on to.

    A traceback keeps every frame of the failed call alive, tens of
    kilobytes each, for as long as the failure is kept.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
