"""Transports deliver postings to the ledger.

:class:`HttpxTransport` and :class:`AsyncHttpxTransport` send each posting as
one atomic bulk request and retry what may succeed later (no response, 5xx,
408, 423, 429) with the same references, so a retry can never post twice.
When the ledger says a reference is already used, the legs are fetched and
the posting counts as delivered only if every leg exists, is applied, matches
the posting and was not refunded. :class:`MemoryTransport` keeps postings in
a list, for tests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

import httpx

from ._blnk import (
    DEFAULT_TIMEOUT,
    ApiRequest,
    AsyncBlnkClient,
    BlnkClient,
    bulk_request,
    indicator_request,
    reference_request,
)
from ._posting import Leg, Posting
from .errors import (
    ConfigurationError,
    DuplicateReferenceError,
    LedgerError,
    LedgerUnavailableError,
    PostingConflictError,
)

__all__ = [
    "AsyncHttpxTransport",
    "AsyncTransport",
    "Delivery",
    "HttpxTransport",
    "MemoryTransport",
    "RetryPolicy",
    "Transport",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """The ledger's acknowledgement of a posting.

    Attributes:
        posting: the posting as delivered; its references may belong to a
            later generation than the one sent first.
        outcome: ``"posted"`` when this send wrote the legs, including an
            attempt whose response was lost and a later attempt found its
            legs; ``"duplicate"`` when an earlier send had already written
            them.
        batch_id: the ledger's bulk batch id, when it reported one.
        attempts: how many bulk requests this delivery took.
    """

    posting: Posting
    outcome: Literal["posted", "duplicate"]
    batch_id: str | None = None
    attempts: int = 1


@runtime_checkable
class Transport(Protocol):
    """Delivers postings from synchronous code."""

    def send(self, posting: Posting) -> Delivery:
        """Deliver one posting.

        Raises:
            LedgerError: the posting was not recorded. The subclass tells
                whether sending it again may succeed.
        """
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


@runtime_checkable
class AsyncTransport(Protocol):
    """Delivers postings from asynchronous code."""

    async def asend(self, posting: Posting) -> Delivery:
        """Deliver one posting; see :meth:`Transport.send`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transport retries.

    Attributes:
        attempts: bulk requests per delivery, the first included.
        initial_delay: seconds before the first retry; doubled each time.
        max_delay: the maximum pause between two attempts, in seconds.
        jitter: pause a random time between half and all of the delay, so
            many clients retrying together spread out.
    """

    attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 5.0
    jitter: bool = True

    def __post_init__(self) -> None:
        attempts = self.attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.attempts is {attempts!r}; use an int of 1 or more"
            )
        for name in ("initial_delay", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(
                    f"RetryPolicy.{name} is {value!r}; use seconds as a number"
                )
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"RetryPolicy.{name} is {value!r}; use a finite number >= 0"
                )

    def delay(self, attempt: int) -> float:
        """Return the pause in seconds after failed attempt number ``attempt``."""
        delay = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        if self.jitter:
            delay *= random.uniform(0.5, 1.0)
        return float(delay)


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Step = ApiRequest | _Sleep
_Verdict = Literal["delivered", "refunded", "incomplete"]


def _deliver(
    posting: Posting, retry: RetryPolicy, accounts: dict[tuple[str, str], str | None]
) -> Generator[_Step, Any, Delivery]:
    """Deliver a posting, as a sequence of requests and pauses.

    The caller runs each yielded request and sends back its decoded response,
    or throws the :class:`LedgerError` it raised into the generator.
    """
    error: LedgerError | None = None
    # After an attempt without a usable response, legs found on a later
    # attempt are most likely that attempt's own.
    sent_unanswered = False
    for attempt in range(1, retry.attempts + 1):
        duplicate: DuplicateReferenceError | None = None
        try:
            answer = yield bulk_request(posting.to_json(), posting.references)
            batch_id = answer.get("batch_id") if isinstance(answer, dict) else None
            return Delivery(posting, "posted", batch_id, attempt)
        except DuplicateReferenceError as exc:
            duplicate = exc
        except LedgerUnavailableError as exc:
            error = exc
            sent_unanswered = True
        if duplicate is not None:
            try:
                verdict = yield from _verify(posting, accounts)
            except LedgerUnavailableError as exc:
                error = exc
            else:
                if verdict == "delivered":
                    outcome: Literal["posted", "duplicate"] = (
                        "posted" if sent_unanswered else "duplicate"
                    )
                    logger.debug(
                        "posting %s found recorded (%s)", posting.event_id, outcome
                    )
                    return Delivery(posting, outcome, None, attempt)
                if verdict == "refunded":
                    error = LedgerUnavailableError(
                        f"legs of posting {posting.event_id} were refunded and its "
                        f"next generation could not be sent in {retry.attempts} "
                        "attempts; send it again later",
                        references=posting.references,
                    )
                    posting = posting.next_generation()
                    logger.warning(
                        "legs of posting %s were refunded by the ledger; "
                        "sending them again as generation %d",
                        posting.event_id,
                        posting.generation,
                    )
                    continue
                error = _partly_recorded(posting, duplicate)
        if attempt < retry.attempts:
            logger.warning(
                "posting %s attempt %d of %d failed (%s); retrying",
                posting.event_id,
                attempt,
                retry.attempts,
                error,
            )
            yield _Sleep(retry.delay(attempt))
    assert error is not None, "the loop ran at least once"
    raise error


def _partly_recorded(
    posting: Posting, duplicate: DuplicateReferenceError
) -> LedgerUnavailableError:
    return LedgerUnavailableError(
        f"posting {posting.event_id} is partly recorded: some legs exist and no "
        "refund of them has appeared yet. Blnk refunds the applied legs of a "
        "failed atomic batch asynchronously; retry later, and if this persists "
        f"reconcile references {posting.references} by hand",
        status=duplicate.status,
        code=duplicate.code,
        references=posting.references,
    )


def _advance(
    steps: Generator[_Step, Any, Delivery], answer: Any, failure: LedgerError | None
) -> _Step | Delivery:
    """Resume a delivery with a response or a failure; return its next step."""
    try:
        return steps.throw(failure) if failure else steps.send(answer)
    except StopIteration as stop:
        delivery: Delivery = stop.value
        return delivery


def _verify(
    posting: Posting, accounts: dict[tuple[str, str], str | None]
) -> Generator[_Step, Any, _Verdict]:
    """Check whether the legs behind used references match the posting."""
    found: list[Leg] = []
    refunded: list[Leg] = []
    for leg in posting.legs:
        stored = yield reference_request(leg.reference)
        if stored is None:
            continue
        yield from _check_leg(leg, stored, accounts)
        found.append(leg)
        refund = yield reference_request(f"{stored.get('transaction_id')}_refund")
        if refund is not None:
            refunded.append(leg)
    if refunded and len(refunded) != len(found):
        raise PostingConflictError(
            f"posting {posting.event_id} has refunded and unrefunded legs "
            f"({[leg.reference for leg in refunded]} refunded); "
            "reconcile these references by hand",
            references=posting.references,
        )
    if refunded:
        return "refunded"
    if len(found) == len(posting.legs):
        return "delivered"
    return "incomplete"


def _same_major_amount(stored: object, leg: Leg) -> bool:
    """Return whether a stored leg's major-unit ``amount`` matches ``leg``'s.

    Blnk's view by reference reports precision 0, so the major amount is
    the only sign of the precision the leg was posted at. Blnk computes it
    in float64, hence the relative tolerance. A view without it passes.
    """
    if isinstance(stored, bool) or not isinstance(stored, (int, float)):
        return True
    if not math.isfinite(stored):
        return False
    expected = Decimal(leg.precise_amount) / Decimal(leg.precision)
    difference = abs(Decimal(repr(stored)) - expected)
    return difference <= expected * Decimal("1e-9")


def _check_leg(
    leg: Leg, stored: dict[str, Any], accounts: dict[tuple[str, str], str | None]
) -> Generator[_Step, Any, None]:
    mismatches = []
    if stored.get("status") != "APPLIED":
        mismatches.append(f"status {stored.get('status')!r}")
    if stored.get("precise_amount") != leg.precise_amount:
        mismatches.append(
            f"amount {stored.get('precise_amount')!r} instead of {leg.precise_amount}"
        )
    elif not _same_major_amount(stored.get("amount"), leg):
        major = Decimal(leg.precise_amount) / Decimal(leg.precision)
        mismatches.append(
            f"amount {stored.get('amount')!r} instead of {major}, so another precision"
        )
    if stored.get("currency") != leg.currency:
        mismatches.append(f"currency {stored.get('currency')!r}")
    for side in ("source", "destination"):
        expected = yield from _balance_id(getattr(leg, side), leg.currency, accounts)
        if stored.get(side) != expected:
            mismatches.append(f"{side} {stored.get(side)!r} instead of {expected!r}")
    if mismatches:
        raise PostingConflictError(
            f"reference {leg.reference!r} is used by a transaction that does not "
            f"match this posting: {', '.join(mismatches)}",
            references=(leg.reference,),
        )


def _balance_id(
    account: str, currency: str, accounts: dict[tuple[str, str], str | None]
) -> Generator[_Step, Any, str | None]:
    if not account.startswith("@"):
        return account
    key = (account, currency)
    if accounts.get(key) is None:
        balance = yield indicator_request(account, currency)
        accounts[key] = balance.get("balance_id") if isinstance(balance, dict) else None
    return accounts[key]


class _HttpDelivery:
    """The retry settings and account cache the HTTP transports share."""

    _client: BlnkClient | AsyncBlnkClient

    def __init__(self, retry: RetryPolicy | None) -> None:
        self._retry = retry or RetryPolicy()
        # Indicator balances resolved to ids, for checking duplicate legs.
        self._accounts: dict[tuple[str, str], str | None] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client!r})"

    def _deliver(self, posting: Posting) -> Generator[_Step, Any, Delivery]:
        return _deliver(posting, self._retry, self._accounts)


class HttpxTransport(_HttpDelivery):
    """Deliver postings to a Blnk server over HTTP, synchronously.

    Args:
        base_url: the server's address, e.g. ``http://localhost:5001``.
        api_key: the ``X-Blnk-Key`` value, or ``None`` when auth is off.
        timeout: seconds per request, or an ``httpx.Timeout``.
        retry: how often to retry; see :class:`RetryPolicy`.
        http_transport: an httpx transport to use instead of the network,
            such as an embedded ledger's in-process transport.
    """

    _client: BlnkClient

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = BlnkClient(
            base_url, api_key=api_key, timeout=timeout, http_transport=http_transport
        )
        super().__init__(retry)

    @property
    def client(self) -> BlnkClient:
        """The underlying Blnk client, for setup and reads."""
        return self._client

    def send(self, posting: Posting) -> Delivery:
        """Deliver one posting; see :meth:`Transport.send`."""
        steps = self._deliver(posting)
        answer: Any = None
        failure: LedgerError | None = None
        while not isinstance(step := _advance(steps, answer, failure), Delivery):
            answer, failure = None, None
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                continue
            try:
                answer = self._client.call(step)
            except LedgerError as exc:
                failure = exc
        return step

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> HttpxTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncHttpxTransport(_HttpDelivery):
    """Deliver postings to a Blnk server over HTTP from async code.

    The arguments match :class:`HttpxTransport`; ``http_transport`` is an
    ``httpx.AsyncBaseTransport``.
    """

    _client: AsyncBlnkClient

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = AsyncBlnkClient(
            base_url, api_key=api_key, timeout=timeout, http_transport=http_transport
        )
        super().__init__(retry)

    async def asend(self, posting: Posting) -> Delivery:
        """Deliver one posting; see :meth:`Transport.send`."""
        steps = self._deliver(posting)
        answer: Any = None
        failure: LedgerError | None = None
        while not isinstance(step := _advance(steps, answer, failure), Delivery):
            answer, failure = None, None
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                answer = await self._client.call(step)
            except LedgerError as exc:
                failure = exc
        return step

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncHttpxTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _movement(leg: Leg) -> tuple[str, str, str, int]:
    return (leg.source, leg.destination, leg.currency, leg.precise_amount)


class MemoryTransport:
    """Keep postings in memory, for tests; works from sync and async code.

    References behave as in the ledger: sending a posting whose references
    are already stored counts as a duplicate delivery when the stored legs
    move the same amounts between the same accounts, and raises
    :class:`PostingConflictError` when they differ.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._postings: list[Posting] = []
        self._legs: dict[str, Leg] = {}

    @property
    def postings(self) -> list[Posting]:
        """The postings recorded so far, oldest first."""
        with self._lock:
            return list(self._postings)

    def send(self, posting: Posting) -> Delivery:
        """Record one posting; see :meth:`Transport.send`."""
        with self._lock:
            stored = [self._legs.get(ref) for ref in posting.references]
            if any(leg is not None for leg in stored):
                if all(
                    old is not None and _movement(old) == _movement(new)
                    for old, new in zip(stored, posting.legs, strict=True)
                ):
                    return Delivery(posting, "duplicate")
                raise PostingConflictError(
                    f"references {posting.references} already hold different legs",
                    references=posting.references,
                )
            self._postings.append(posting)
            self._legs.update((leg.reference, leg) for leg in posting.legs)
        return Delivery(posting, "posted")

    async def asend(self, posting: Posting) -> Delivery:
        """Record one posting; see :meth:`Transport.send`."""
        return self.send(posting)

    def close(self) -> None:
        """Do nothing: nothing to release."""

    async def aclose(self) -> None:
        """Do nothing: nothing to release."""
