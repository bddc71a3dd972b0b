"""Exceptions raised by blnk_meter.

Every exception derives from :class:`BlnkMeterError`, so one ``except`` clause
catches them all. The tree::

    BlnkMeterError
    ├── ConfigurationError          invalid settings: precision, money map, prices
    ├── CustomerError
    │   ├── MissingCustomerError    a call has no customer; the policy is "raise"
    │   ├── InvalidCustomerError    an id that cannot name a wallet or reference
    │   └── WalletLookupError       the meter's wallets function failed
    ├── UsageError                  provider usage cannot be billed as reported
    │   ├── MissingUsageError       the response carries no usage at all
    │   └── InvalidUsageError       counts missing, negative, fractional, absurd
    ├── PricingError
    │   └── UnknownModelError       no price is known for the model
    └── LedgerError                 the ledger did not record a posting
        ├── LedgerUnavailableError  no answer, or 5xx / 423 / 429 after retries
        ├── LedgerRejectedError     a 4xx answer that sending again repeats
        │   ├── InsufficientFundsError   a wallet without overdraft cannot pay
        │   ├── DuplicateReferenceError  the reference was already used (409)
        │   └── LedgerAuthError          a missing or invalid key, or a missing scope
        └── PostingConflictError    a reference holds legs that do not match
                                    the event, or that the ledger refunded

Errors raised inside the OpenAI instrumentation never reach the caller of the
SDK, except those that stop a call before it is sent, because the call could
not be billed: :class:`CustomerError` and its subclasses,
:class:`UnknownModelError` under the default policy, and
:class:`ConfigurationError` for a meter that cannot deliver (closed, or
without a transport for the client) or a ``wallets`` function that returns
something other than a Wallet. The others are logged and handed to the
meter's error hook together with the usage they concern.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BlnkMeterError",
    "ConfigurationError",
    "CustomerError",
    "DuplicateReferenceError",
    "InsufficientFundsError",
    "InvalidCustomerError",
    "InvalidUsageError",
    "LedgerAuthError",
    "LedgerError",
    "LedgerRejectedError",
    "LedgerUnavailableError",
    "MissingCustomerError",
    "MissingUsageError",
    "PostingConflictError",
    "PricingError",
    "UnknownModelError",
    "UsageError",
    "WalletLookupError",
]


class BlnkMeterError(Exception):
    """Base class of every error raised by blnk_meter."""


class ConfigurationError(BlnkMeterError, ValueError):
    """A setting is invalid; the message names it and the accepted values."""


class CustomerError(BlnkMeterError):
    """The customer of a metered call is missing or unusable."""


class MissingCustomerError(CustomerError):
    """A metered call happened outside any customer scope."""


class InvalidCustomerError(CustomerError, ValueError):
    """A customer id that is empty, too long or contains whitespace."""


class WalletLookupError(CustomerError):
    """The meter's ``wallets`` function raised for a customer."""


class UsageError(BlnkMeterError):
    """The provider reported usage that cannot be billed as it stands.

    Attributes:
        response_id: the provider's id of the response, or ``None`` when the
            response carried none.
        raw_usage: the usage object exactly as the provider sent it, kept for
            reconciliation; ``None`` when there was none.
    """

    def __init__(
        self,
        message: str,
        *,
        response_id: str | None = None,
        raw_usage: Any = None,
    ) -> None:
        super().__init__(message)
        self.response_id = response_id
        self.raw_usage = raw_usage


class MissingUsageError(UsageError):
    """The response (or stream) ended without any usage."""


class InvalidUsageError(UsageError):
    """A token count is missing, negative, fractional, not a number or absurd."""


class PricingError(BlnkMeterError):
    """A usage event cannot be priced."""


class UnknownModelError(PricingError):
    """No price is known for a model.

    Attributes:
        model: the model name as the provider served or the caller requested it.
    """

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class LedgerError(BlnkMeterError):
    """The ledger did not record a posting.

    Attributes:
        status: the HTTP status the ledger answered, or ``None`` when no
            answer arrived.
        code: Blnk's error code (``error_detail.code``), or ``None`` for
            servers older than v0.15 and for transport failures.
        references: the references of the legs involved, for reconciliation.
        batch_id: the bulk batch id the ledger reported, when it did.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        references: tuple[str, ...] = (),
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.references = references
        self.batch_id = batch_id


class LedgerUnavailableError(LedgerError):
    """The ledger could not be reached or kept failing; sending again may work."""


class LedgerRejectedError(LedgerError):
    """The ledger rejected the request; sending it again unchanged fails again."""


class InsufficientFundsError(LedgerRejectedError):
    """A wallet that forbids overdraft does not hold enough to pay."""


class DuplicateReferenceError(LedgerRejectedError):
    """A leg's reference has already been used in the ledger."""


class LedgerAuthError(LedgerRejectedError):
    """The ledger rejected the API key (401) or its scopes (403)."""


class PostingConflictError(LedgerError):
    """A posting's references are taken by legs that cannot count as delivered.

    Either the stored legs differ from the event (amount, currency, source or
    destination), or the ledger has refunded them after an atomic batch failed.
    """
