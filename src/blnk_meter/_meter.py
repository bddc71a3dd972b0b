"""The meter: configuration and the pipeline from usage to ledger posting.

usage -> price -> posting -> transport. Each step takes a typed value and
returns one; failures are kept with the usage they concern, logged, counted
and handed to the error hook, so nothing is lost and nothing is guessed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from ._blnk import redact_url
from ._extract import NOT_BILLED
from ._failures import FailureKind, FailureLog, MeterFailure, MeterStats
from ._money import Precisions
from ._posting import MoneyMap, Posting, UsageEvent, Wallet, build_posting
from ._prices import Charge, PriceBook
from ._recorder import CallOutcome
from ._scope import Scope, validate_customer
from ._transports import (
    AsyncHttpxTransport,
    AsyncTransport,
    Delivery,
    HttpxTransport,
    Transport,
)
from ._usage import ProviderCall, UnmeteredCall, Usage
from .errors import (
    BlnkMeterError,
    ConfigurationError,
    InvalidUsageError,
    MissingCustomerError,
    UnknownModelError,
    WalletLookupError,
)

__all__ = ["Meter"]

logger = logging.getLogger(__name__)

OutsideScopePolicy = Literal["raise", "default", "ignore"]
UnknownModelPolicy = Literal["raise", "zero"]
# Mapping keys are Any, because a dict that mixes str and int keys is inferred
# as dict[object, Wallet]. The keys are checked as customer ids at runtime.
WalletSource = Mapping[Any, Wallet] | Callable[[str], Wallet | None]
"""Customer ids (strings or integers) to wallets, or a function of the id."""


@dataclass(frozen=True)
class _Call:
    """The token the instrumentation carries from begin to finish."""

    meter: Meter
    call: ProviderCall
    customer: str
    wallet: Wallet
    metadata: Mapping[str, str]


class Meter:
    """Price the usage of metered calls and post it to the ledger.

    Args:
        transport: delivers postings; a :class:`Transport` for sync clients,
            an :class:`AsyncTransport` for async clients, or one object that
            is both (such as :class:`MemoryTransport`). Mutually exclusive with
            ``ledger_url``.
        ledger_url: the Blnk server's address; builds an
            :class:`HttpxTransport` and an :class:`AsyncHttpxTransport`.
        api_key: the ``X-Blnk-Key`` value for ``ledger_url``; ``None`` when
            the server runs without auth.
        async_transport: a separate transport for async clients.
        prices: the price book; the shipped OpenAI prices by default.
        money_map: accounts, currencies and descriptions of the postings.
        wallets: the wallet of each customer, as a mapping or a function of
            the customer id; customers it does not name (or for which the
            function returns ``None``) use ``money_map.customer_wallet``.
        precisions: minor units per currency, overriding the defaults
            (USD: 10**8, TOKENS: 1). Keep one precision per currency forever:
            ledger balances store bare integers.
        outside_scope: what a call made outside any customer scope does:
            ``"raise"`` stops it before it is sent with
            :class:`MissingCustomerError`; ``"default"`` bills
            ``default_customer``; ``"ignore"`` lets it through unmetered and
            logs a warning.
        default_customer: the customer for ``outside_scope="default"``.
        unknown_model: ``"raise"`` stops calls to a requested model without a
            price before they are sent, and keeps served models without a
            price as ``"unpriced"`` failures; ``"zero"`` posts their tokens with
            a zero charge flagged ``unpriced`` in ``meta_data``.
        max_tokens_per_call: usage above this many tokens in one response is
            treated as invalid instead of being billed. Raise it if your
            models accept larger contexts.
        on_error: called with every :class:`MeterFailure`; exceptions it
            raises are logged and swallowed.

    Raises:
        ConfigurationError: the settings contradict each other.
    """

    def __init__(
        self,
        transport: Transport | AsyncTransport | None = None,
        *,
        ledger_url: str | None = None,
        api_key: str | None = None,
        async_transport: AsyncTransport | None = None,
        prices: PriceBook | None = None,
        money_map: MoneyMap | None = None,
        wallets: WalletSource | None = None,
        precisions: Mapping[str, int] | None = None,
        outside_scope: OutsideScopePolicy = "raise",
        default_customer: str | None = None,
        unknown_model: UnknownModelPolicy = "raise",
        max_tokens_per_call: int = 10_000_000,
        on_error: Callable[[MeterFailure], None] | None = None,
    ) -> None:
        if (transport is None) == (ledger_url is None):
            raise ConfigurationError(
                "pass exactly one of transport=... or ledger_url=... to Meter "
                "(blnk_meter.configure() also reads the BLNK_URL environment variable)"
            )
        if ledger_url is not None:
            _check_ledger_url(ledger_url)
            transport = HttpxTransport(ledger_url, api_key=api_key)
            async_transport = async_transport or AsyncHttpxTransport(
                ledger_url, api_key=api_key
            )
        self._sync_transport, self._async_transport = _split_transports(
            transport, async_transport
        )
        self.prices = prices or PriceBook.default()
        self.money_map = money_map or MoneyMap()
        self.precisions = Precisions(precisions)
        self._check_currencies()
        self._wallets = _check_wallets(wallets)
        self._outside_scope = _check_choice(
            "outside_scope", outside_scope, ("raise", "default", "ignore")
        )
        self._default_customer = (
            validate_customer(default_customer)
            if default_customer is not None
            else None
        )
        if outside_scope != "default" and self._default_customer is not None:
            raise ConfigurationError(
                f"default_customer={self._default_customer!r} is used only with "
                f"outside_scope='default', not {outside_scope!r}; pass both or "
                "neither"
            )
        if outside_scope == "default" and self._default_customer is None:
            raise ConfigurationError(
                "outside_scope='default' needs default_customer=<customer id>"
            )
        self._unknown_model = _check_choice(
            "unknown_model", unknown_model, ("raise", "zero")
        )
        if (
            isinstance(max_tokens_per_call, bool)
            or not isinstance(max_tokens_per_call, int)
            or max_tokens_per_call < 1
        ):
            raise ConfigurationError(
                f"max_tokens_per_call is {max_tokens_per_call!r}; use a positive int"
            )
        self._max_tokens = max_tokens_per_call
        self._log = FailureLog(on_error)
        self._closed = False

    def __repr__(self) -> str:
        transport = self._sync_transport or self._async_transport
        return f"Meter(transport={transport!r}, currency={self.money_map.currency!r})"

    # Public reads ----------------------------------------------------------

    @property
    def stats(self) -> MeterStats:
        """A snapshot of the meter's counters."""
        return self._log.stats

    @property
    def failures(self) -> list[MeterFailure]:
        """Calls that were not recorded in the ledger, oldest first."""
        return self._log.failures

    def wallet_for(self, customer: str) -> Wallet:
        """Return the wallet a customer pays from.

        Raises:
            WalletLookupError: the ``wallets`` function raised.
            ConfigurationError: it returned something other than a Wallet.
        """
        wallets = self._wallets
        wallet: Wallet | None
        if wallets is None:
            wallet = None
        elif callable(wallets):
            try:
                wallet = wallets(customer)
            except Exception as exc:
                raise WalletLookupError(
                    f"the wallets function failed for customer {customer!r}: "
                    f"{type(exc).__name__}: {exc}; the call was not sent because "
                    "it could not be billed"
                ) from exc
        else:
            wallet = wallets.get(customer)
        if wallet is None:
            return self.money_map.wallet_for(customer)
        if not isinstance(wallet, Wallet):
            raise ConfigurationError(
                f"the wallet of customer {customer!r} is {wallet!r}; use Wallet(...)"
            )
        return wallet

    # Recorder: begin -------------------------------------------------------

    def begin(self, call: ProviderCall, scope: Scope | None) -> _Call | None:
        """Attribute a provider call to a customer before it is sent.

        Returns:
            The token to pass to :meth:`finish`, or ``None`` when the call is
            outside any scope under the ``"ignore"`` policy.

        Raises:
            MissingCustomerError: no customer and the policy is ``"raise"``.
            UnknownModelError: the requested model has no price and the
                policy is ``"raise"``.
            WalletLookupError: the ``wallets`` function raised.
            ConfigurationError: the meter is closed, or no transport can
                deliver for this client.
        """
        if self._closed:
            raise ConfigurationError(
                f"the meter is closed, so the call to {call.path} was not sent; "
                "configure a new Meter"
            )
        customer = scope.customer if scope is not None else None
        if customer is None:
            customer = self._customer_outside_scope(call)
            if customer is None:
                return None
        self._check_transport(call)
        model = call.requested_model
        # An Azure client's model field names a deployment; such calls are
        # priced by the model the response reports.
        check_model = self._unknown_model == "raise" and not call.is_azure
        if check_model and model and not self.prices.has_price(model):
            raise UnknownModelError(
                f"no price for model {model!r}, so the call to {call.path} was not "
                "sent; add the model with PriceBook.with_prices({...}) or a price "
                "file, or create the Meter with unknown_model='zero'",
                model=model,
            )
        wallet = self.wallet_for(customer)
        self._count("calls")
        metadata = scope.metadata if scope is not None else {}
        return _Call(self, call, customer, wallet, metadata)

    def _customer_outside_scope(self, call: ProviderCall) -> str | None:
        if self._outside_scope == "default":
            return self._default_customer
        if self._outside_scope == "ignore":
            self._count("ignored")
            logger.warning(
                "OpenAI call to %s made outside any customer scope; not metered",
                call.path,
            )
            return None
        raise MissingCustomerError(
            f"OpenAI call to {call.path} (model {call.requested_model!r}) has no "
            "customer, so it was not sent: run it inside @metered(customer=...) or "
            "'with metered(customer=...)', or create the Meter with "
            "outside_scope='default' and a default_customer. A thread does not "
            "inherit the scope of the code that started it: start its work with "
            "asyncio.to_thread or contextvars.copy_context().run"
        )

    def _check_transport(self, call: ProviderCall) -> None:
        if not call.is_async and self._sync_transport is None:
            raise ConfigurationError(
                "a synchronous OpenAI client needs a synchronous transport; pass "
                "Meter(transport=HttpxTransport(...)) or Meter(ledger_url=...)"
            )

    # Recorder: finish ------------------------------------------------------

    def finish(self, token: _Call, outcome: CallOutcome) -> Delivery | None:
        """Price and post a finished call, from synchronous code.

        Failures are kept in :attr:`failures` instead of raised. Only an
        interruption such as ``KeyboardInterrupt`` propagates, after its
        posting was kept.

        Returns:
            The delivery, or ``None`` when nothing was posted.
        """
        posting = self._prepare(token, outcome)
        if posting is None:
            return None
        try:
            if self._sync_transport is None:
                raise ConfigurationError(
                    "a posting finished in synchronous code but the meter has only "
                    "an async transport; it is kept for aretry_undelivered()"
                )
            delivery = self._sync_transport.send(posting)
        except BaseException as exc:
            self._undelivered(token, outcome, posting, exc)
            if not isinstance(exc, Exception):
                raise
            return None
        return self._delivered(delivery, first_send=True)

    async def afinish(self, token: _Call, outcome: CallOutcome) -> Delivery | None:
        """Price and post a finished call, from async code; see :meth:`finish`.

        A task cancelled while its posting is in flight keeps the posting as
        undelivered, then the cancellation propagates.
        """
        posting = self._prepare(token, outcome)
        if posting is None:
            return None
        try:
            delivery = await self._asend(posting)
        except BaseException as exc:
            self._undelivered(token, outcome, posting, exc)
            if not isinstance(exc, Exception):
                raise
            return None
        return self._delivered(delivery, first_send=True)

    def cancel(self, token: _Call, error: BaseException | None) -> None:
        """Forget a call that failed before the provider reported usage."""
        self._count("cancelled")
        # Only the type: the message may quote the provider's response.
        logger.debug(
            "OpenAI call to %s for customer %s failed before any usage: %s",
            token.call.path,
            token.customer,
            type(error).__name__ if error is not None else None,
        )

    async def acancel(self, token: _Call, error: BaseException | None) -> None:
        """Async counterpart of :meth:`cancel`."""
        self.cancel(token, error)

    async def _asend(self, posting: Posting) -> Delivery:
        if self._async_transport is not None:
            return await self._async_transport.asend(posting)
        transport = self._sync_transport
        assert transport is not None, "checked when the call began"
        return await asyncio.to_thread(transport.send, posting)

    def _prepare(self, token: _Call, outcome: CallOutcome) -> Posting | None:
        try:
            return self._build(token, outcome)
        except Exception as exc:
            self._unexpected(token, outcome, None, exc)
            return None

    def _build(self, token: _Call, outcome: CallOutcome) -> Posting | None:
        if isinstance(outcome, UnmeteredCall):
            message = f"{outcome.message} (customer {token.customer!r})"
            self._fail("unmetered", token, message, outcome.error, unmetered=outcome)
            return None
        usage = outcome
        if usage.total_tokens > self._max_tokens:
            error = InvalidUsageError(
                f"response {usage.response_id!r} for customer {token.customer!r} "
                f"reports {usage.total_tokens} tokens, more than "
                f"max_tokens_per_call={self._max_tokens}. Raise "
                f"max_tokens_per_call if this is genuine. {NOT_BILLED}",
                response_id=usage.response_id,
                raw_usage=usage.raw_usage,
            )
            report = UnmeteredCall(
                call=token.call,
                reason="invalid_usage",
                message=str(error),
                response_id=usage.response_id,
                model=usage.model,
                raw_usage=usage.raw_usage,
                error=error,
            )
            self._fail(
                "unmetered", token, str(error), error, usage=usage, unmetered=report
            )
            return None
        charge = self._price(token, usage)
        if charge is False:
            return None
        event = UsageEvent(
            customer=token.customer,
            wallet=token.wallet,
            usage=usage,
            charge=charge,
            metadata=token.metadata,
        )
        token_precision = self.precisions.precision_of(self.money_map.token_currency)
        posting = build_posting(event, self.money_map, token_precision=token_precision)
        if posting is None:
            self._count("empty")
            logger.debug(
                "response %s used no tokens; nothing posted", usage.response_id
            )
        elif charge is None:
            self._count("unpriced_zero")
        return posting

    def _price(self, token: _Call, usage: Usage) -> Charge | Literal[False] | None:
        precision = self.precisions.precision_of(self.money_map.currency)
        try:
            return self.prices.charge(usage, precision)
        except UnknownModelError as exc:
            if self._unknown_model == "zero":
                logger.warning(
                    "no price for model %r (response %s, customer %s); posting its "
                    "tokens with a zero charge flagged 'unpriced'",
                    usage.model,
                    usage.response_id,
                    token.customer,
                )
                return None
            message = (
                f"response {usage.response_id!r} for customer {token.customer!r} "
                f"not billed: {exc}"
            )
            self._fail("unpriced", token, message, exc, usage=usage)
            return False

    # Outcomes --------------------------------------------------------------

    def _delivered(self, delivery: Delivery, *, first_send: bool = False) -> Delivery:
        posting = delivery.posting
        self._count("posted" if delivery.outcome == "posted" else "duplicates")
        if first_send and delivery.outcome == "duplicate" and delivery.attempts == 1:
            # No earlier attempt of this meter wrote these legs.
            logger.warning(
                "posting %s for customer %s was already in the ledger before this "
                "meter sent it; the provider may have reused a response id, or "
                "another process billed the same response",
                posting.event_id,
                posting.customer,
            )
        logger.debug(
            "posting %s %s (batch %s, %d attempt(s))",
            posting.event_id,
            delivery.outcome,
            delivery.batch_id,
            delivery.attempts,
        )
        return delivery

    def _undelivered(
        self, token: _Call, outcome: CallOutcome, posting: Posting, exc: BaseException
    ) -> None:
        usage = outcome if isinstance(outcome, Usage) else None
        reason = str(exc) if isinstance(exc, BlnkMeterError) else repr(exc)
        message = (
            f"ledger did not record posting {posting.event_id} for customer "
            f"{token.customer!r} (references {', '.join(posting.references)}): "
            f"{reason}"
        )
        self._fail("undelivered", token, message, exc, usage=usage, posting=posting)

    def _unexpected(
        self,
        token: _Call,
        outcome: CallOutcome,
        posting: Posting | None,
        exc: Exception,
    ) -> None:
        usage = outcome if isinstance(outcome, Usage) else None
        response = f"response {usage.response_id!r} " if usage is not None else ""
        message = (
            f"blnk_meter failed to bill {response}from {token.call.path} for "
            f"customer {token.customer!r}: {type(exc).__name__}: {exc}"
        )
        self._fail("failed", token, message, exc, usage=usage, posting=posting)

    def _fail(
        self,
        kind: FailureKind,
        token: _Call,
        message: str,
        error: BaseException | None,
        *,
        usage: Usage | None = None,
        unmetered: UnmeteredCall | None = None,
        posting: Posting | None = None,
    ) -> None:
        failure = MeterFailure(
            kind=kind,
            message=message,
            call=token.call,
            customer=token.customer,
            error=error,
            usage=usage,
            unmetered=unmetered,
            posting=posting,
        )
        self._log.record(failure)

    def _count(self, name: str) -> None:
        self._log.count(name)

    def _check_currencies(self) -> None:
        if self.prices.currency != self.money_map.currency:
            raise ConfigurationError(
                f"the price book is in {self.prices.currency!r} but the money map "
                f"posts {self.money_map.currency!r}; use one currency for both"
            )
        self.precisions.precision_of(self.money_map.currency)
        self.precisions.precision_of(self.money_map.token_currency)

    # Follow-up ---------------------------------------------------------------

    def retry_undelivered(self, transport: Transport | None = None) -> int:
        """Send the undelivered postings again, from synchronous code.

        The references are the same as the first time, so a posting that did
        reach the ledger is not recorded twice.

        Args:
            transport: deliver through this transport instead of the meter's
                own, for example after :meth:`close`.

        Returns:
            How many postings the ledger now holds; the others stay in
            :attr:`failures`.
        """
        sender = transport or self._sync_transport
        pending = self._log.take_undelivered()
        delivered = 0
        for index, failure in enumerate(pending):
            assert failure.posting is not None
            try:
                if sender is None:
                    raise ConfigurationError(
                        "the meter has no synchronous transport; use "
                        "aretry_undelivered() or pass transport=..."
                    )
                self._redelivered(sender.send(failure.posting))
                delivered += 1
            except BaseException as exc:
                self._log.keep(failure, exc)
                if not isinstance(exc, Exception):
                    self._log.restore(pending[index + 1 :])
                    raise
        return delivered

    async def aretry_undelivered(self, transport: AsyncTransport | None = None) -> int:
        """Async counterpart of :meth:`retry_undelivered`."""
        pending = self._log.take_undelivered()
        delivered = 0
        for index, failure in enumerate(pending):
            assert failure.posting is not None
            try:
                if transport is not None:
                    delivery = await transport.asend(failure.posting)
                else:
                    delivery = await self._asend(failure.posting)
                self._redelivered(delivery)
                delivered += 1
            except BaseException as exc:
                self._log.keep(failure, exc)
                if not isinstance(exc, Exception):
                    self._log.restore(pending[index + 1 :])
                    raise
        return delivered

    def _redelivered(self, delivery: Delivery) -> None:
        self._delivered(delivery)
        self._count("retried")

    def clear_failures(self) -> list[MeterFailure]:
        """Remove the kept failures and return them, oldest first.

        Call it once the failures are handled elsewhere (written to your own
        store, reconciled, alerted on): the meter keeps every failure in
        memory until then. Counters are not reset.
        """
        return self._log.clear()

    def close(self) -> None:
        """Close the transports' connections.

        A closed meter stops further calls before they are sent, because it
        could not bill them. Kept failures stay readable.
        """
        self._closed = True
        _close(self._sync_transport)

    async def aclose(self) -> None:
        """Close the transports' connections, from async code; see :meth:`close`."""
        self._closed = True
        transport = self._async_transport
        if transport is not None and callable(getattr(transport, "aclose", None)):
            await transport.aclose()
        if cast(object, self._sync_transport) is not transport:
            _close(self._sync_transport)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigurationError(
            f"invalid {name} {value!r}; use one of {', '.join(map(repr, choices))}"
        )
    return value


def _check_ledger_url(url: str) -> None:
    try:
        parsed = urlsplit(url)
        valid = parsed.scheme in ("http", "https") and bool(parsed.hostname)
        valid = valid and (parsed.port is None or parsed.port > 0)
        valid = valid and url == url.strip()  # a pasted address may carry spaces
    except (TypeError, ValueError, AttributeError):
        valid = False
    if not valid:
        shown = redact_url(url) if isinstance(url, str) else url
        raise ConfigurationError(
            f"invalid ledger_url {shown!r}; use the Blnk server's address, "
            "e.g. 'http://localhost:5001'"
        )


def _check_wallets(wallets: WalletSource | None) -> WalletSource | None:
    """Check a wallets mapping and key it by customer ids as strings.

    Scopes turn integer customer ids into strings, so an integer key must be
    converted too or it would never match.
    """
    if wallets is None or callable(wallets):
        return wallets
    if not isinstance(wallets, Mapping):
        raise ConfigurationError(
            "wallets must map customer ids to Wallet objects, or be a function, "
            f"not a {type(wallets).__name__}"
        )
    checked: dict[str, Wallet] = {}
    for customer, wallet in wallets.items():
        key = validate_customer(customer)
        if not isinstance(wallet, Wallet):
            raise ConfigurationError(
                f"the wallet of customer {customer!r} is {wallet!r}; use "
                f"Wallet({wallet!r}, 'prepaid') or Wallet(..., 'postpaid')"
            )
        if key in checked:
            raise ConfigurationError(
                f"customer {key!r} appears twice in wallets (as {customer!r} too)"
            )
        checked[key] = wallet
    return checked


def _split_transports(
    transport: object, async_transport: object
) -> tuple[Transport | None, AsyncTransport | None]:
    """Tell the sync and async delivery methods of the given transports apart."""
    sync = transport if callable(getattr(transport, "send", None)) else None
    if async_transport is None and callable(getattr(transport, "asend", None)):
        async_transport = transport
    if async_transport is not None and not callable(
        getattr(async_transport, "asend", None)
    ):
        raise ConfigurationError(
            f"async_transport {async_transport!r} has no async asend(posting) method"
        )
    if sync is None and async_transport is None:
        raise ConfigurationError(
            f"transport {transport!r} has neither send(posting) nor async "
            "asend(posting); pass an HttpxTransport, AsyncHttpxTransport or "
            "MemoryTransport, or an object with one of those methods"
        )
    return cast(Transport | None, sync), cast(AsyncTransport | None, async_transport)


def _close(transport: object) -> None:
    close = getattr(transport, "close", None)
    if callable(close):
        close()
