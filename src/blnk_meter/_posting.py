"""Turn a priced usage event into the ledger posting that records it.

A posting is one ``POST /transactions/bulk`` with ``"atomic": true`` and
``"skip_queue": true``. Its legs, in order:

1. the money leg: customer wallet -> revenue, in the billing currency,
   without overdraft for prepaid wallets. It goes first because it is the one
   that can fail for lack of funds, and Blnk writes nothing when the first leg
   of a batch fails, whereas a later failure leaves earlier legs applied until
   Blnk's compensating refunds run.
2. the TOKENS leg: token wallet -> system tokens, precision 1, overdraft
   allowed.

References are derived from the event's identity (endpoint, provider response
id, customer) and a generation number, so sending the same event again can
never post twice.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ._usage import Endpoint, Usage
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._prices import Charge

__all__ = [
    "RESERVED_META_KEYS",
    "BillingMode",
    "Leg",
    "MoneyMap",
    "Posting",
    "UsageEvent",
    "Wallet",
    "build_posting",
    "check_scope_metadata_key",
]

BillingMode = Literal["prepaid", "postpaid"]

_ENDPOINT_CODES: dict[Endpoint, str] = {
    "responses": "resp",
    "responses.compact": "compact",
    "chat.completions": "chat",
    "completions": "cmpl",
    "embeddings": "emb",
}
_SAFE_ID = re.compile(r"[A-Za-z0-9._\-]{1,200}")
_INDICATOR = re.compile(r"@\S+")
_TEMPLATE_FIELDS = ("customer", "model", "endpoint", "response_id")
_METER_NAME = "blnk_meter"

RESERVED_META_KEYS = frozenset(
    {
        "customer",
        "model",
        "requested_model",
        "endpoint",
        "response_id",
        "response_status",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "total_tokens",
        "billing",
        "metered_by",
        "posting_generation",
        "streamed",
        "tool_usage",
        "unpriced",
        "cost",
        "price_model",
        "price_fine_tuned",
        "price_via_family",
        "leg",
    }
)
"""The ``meta_data`` keys blnk_meter writes itself; scope metadata cannot use them.

Blnk adds its own keys too (``allow_overdraft``, ``atomic``, ``sequence``, ...),
which a scope may not use either because Blnk would overwrite them."""

_BLNK_META_KEYS = frozenset(
    {
        "allow_overdraft",
        "atomic",
        "inflight",
        "sequence",
        "QUEUED_PARENT_TRANSACTION",
        "blnk_rejection_reason",
        "BLNK_GENERATED_BY",
    }
)


@dataclass(frozen=True)
class Wallet:
    """The ledger balance a customer pays from.

    Attributes:
        balance: a Blnk balance id (``bln_...``) or an ``@indicator``.
        billing: ``"prepaid"`` wallets can never go below zero: a posting they
            cannot pay is rejected. ``"postpaid"`` wallets run into overdraft,
            which is what the customer owes at the end of the period.
    """

    balance: str
    billing: BillingMode = "prepaid"

    def __post_init__(self) -> None:
        _check_account("Wallet.balance", self.balance)
        if self.billing not in ("prepaid", "postpaid"):
            raise ConfigurationError(
                f"invalid billing mode {self.billing!r}; use 'prepaid' or 'postpaid'"
            )


@dataclass(frozen=True)
class MoneyMap:
    """Where the money and the tokens of a usage event move in the ledger.

    Account fields take a balance id or an ``@indicator``; accounts and
    descriptions may use the placeholders ``{customer}``, ``{model}``,
    ``{endpoint}`` and ``{response_id}``, except ``customer_wallet``, which
    names one wallet per customer and takes ``{customer}`` only. Blnk
    creates an indicator balance in its general ledger the first time a
    transaction names it.

    Attributes:
        currency: the currency of the money leg.
        revenue: the account credited with the charge.
        customer_wallet: the wallet of a customer the meter has no explicit
            :class:`Wallet` for.
        billing: the billing mode of such template wallets.
        token_currency: the currency of the TOKENS leg.
        token_source: the account the consumed tokens leave.
        token_destination: the account the consumed tokens reach.
        charge_description: the money leg's description.
        token_description: the TOKENS leg's description.
    """

    currency: str = "USD"
    revenue: str = "@Revenue"
    customer_wallet: str = "@{customer}-USD"
    billing: BillingMode = "postpaid"
    token_currency: str = "TOKENS"
    token_source: str = "@Token-Wallet"
    token_destination: str = "@System-Tokens"
    charge_description: str = "AI usage charge: {model} ({endpoint})"
    token_description: str = "AI usage tokens: {model} ({endpoint})"

    def __post_init__(self) -> None:
        for name in (
            "revenue",
            "customer_wallet",
            "token_source",
            "token_destination",
            "charge_description",
            "token_description",
        ):
            _check_template(f"MoneyMap.{name}", getattr(self, name))
        for name in ("currency", "token_currency"):
            value = getattr(self, name)
            if not isinstance(value, str) or not re.fullmatch(
                r"[A-Za-z0-9_\-]+", value
            ):
                raise ConfigurationError(
                    f"invalid MoneyMap.{name} {value!r}; use a code such as 'USD'"
                )
        if self.currency == self.token_currency:
            raise ConfigurationError(
                f"MoneyMap.currency and token_currency are both {self.currency!r}; "
                "tokens and money need separate balances"
            )
        _check_template(
            "MoneyMap.customer_wallet", self.customer_wallet, fields=("customer",)
        )
        sample = {key: "x" for key in _TEMPLATE_FIELDS}
        for name in ("revenue", "token_source", "token_destination"):
            _check_account(f"MoneyMap.{name}", getattr(self, name).format(**sample))
        Wallet(self.customer_wallet.format(**sample), self.billing)

    def wallet_for(self, customer: str) -> Wallet:
        """Return the template wallet of a customer."""
        balance = self.customer_wallet.format(customer=customer)
        return Wallet(balance, self.billing)


@dataclass(frozen=True)
class UsageEvent:
    """One provider response's usage, attributed to a customer and priced.

    Attributes:
        customer: the customer id that pays.
        wallet: the wallet the charge is taken from.
        usage: the tokens the provider reported.
        charge: the price of the usage, or ``None`` when the model has no price
            and the meter's policy posts the tokens with a flagged zero charge.
        occurred_at: when the usage was recorded, timezone-aware UTC; it
            becomes the legs' ``effective_date``.
        metadata: extra ``meta_data`` entries from the customer scope.
    """

    customer: str
    wallet: Wallet
    usage: Usage
    charge: Charge | None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        """The event's stable identity: endpoint, response id and customer."""
        code = _ENDPOINT_CODES[self.usage.endpoint]
        return f"bm:{code}:{_safe_id(self.usage.response_id)}:{self.customer}"


@dataclass(frozen=True)
class Leg:
    """One transaction of a bulk posting, in Blnk's request shape."""

    reference: str
    source: str
    destination: str
    currency: str
    precise_amount: int
    precision: int
    allow_overdraft: bool
    description: str
    effective_date: str
    meta_data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Return the leg as a ``/transactions/bulk`` item."""
        return {
            "precise_amount": self.precise_amount,
            "precision": self.precision,
            "currency": self.currency,
            "reference": self.reference,
            "source": self.source,
            "destination": self.destination,
            "description": self.description,
            "allow_overdraft": self.allow_overdraft,
            "effective_date": self.effective_date,
            "meta_data": dict(self.meta_data),
        }


@dataclass(frozen=True)
class Posting:
    """The atomic bulk request that records one usage event.

    Attributes:
        event_id: the identity of the event the posting records.
        customer: the customer id that pays.
        legs: the transactions, in the order the ledger applies them.
        generation: 1 for the first set of references; a higher number when
            an earlier attempt's references were consumed by legs the ledger
            later refunded.
    """

    event_id: str
    customer: str
    legs: tuple[Leg, ...]
    generation: int = 1

    @property
    def references(self) -> tuple[str, ...]:
        """The legs' references, in order."""
        return tuple(leg.reference for leg in self.legs)

    def to_json(self) -> dict[str, Any]:
        """Return the body of ``POST /transactions/bulk``."""
        return {
            "atomic": True,
            "skip_queue": True,
            "run_async": False,
            "transactions": [leg.to_json() for leg in self.legs],
        }

    def next_generation(self) -> Posting:
        """Return the same posting with fresh references.

        Used when the ledger refunded the legs of an earlier attempt, which
        leaves their references used but their effect undone.
        """
        generation = self.generation + 1
        legs = tuple(
            replace(
                leg,
                reference=_reference(self.event_id, generation, _leg_kind(leg)),
                meta_data={**leg.meta_data, "posting_generation": generation},
            )
            for leg in self.legs
        )
        return replace(self, legs=legs, generation=generation)


def build_posting(
    event: UsageEvent,
    money_map: MoneyMap,
    *,
    token_precision: int = 1,
) -> Posting | None:
    """Build the bulk posting of a usage event.

    A charge that rounds to zero minor units has no money leg, because Blnk
    rejects zero amounts; the exact cost stays in the TOKENS leg's
    ``meta_data``. An event with neither tokens nor a charge has nothing to
    record and returns ``None``.

    Args:
        event: the priced usage event.
        money_map: where money and tokens move.
        token_precision: the precision of the TOKENS currency (1: whole tokens).

    Returns:
        The posting, or ``None`` when there is nothing to record.
    """
    usage = event.usage
    fields = {
        "customer": event.customer,
        "model": usage.model,
        "endpoint": usage.endpoint,
        "response_id": usage.response_id,
    }
    meta = _meta_data(event)
    effective_date = _rfc3339(event.occurred_at)
    legs: list[Leg] = []
    charge = event.charge
    if charge is not None and charge.amount > 0:
        legs.append(
            Leg(
                reference=_reference(event.event_id, 1, "charge"),
                source=event.wallet.balance,
                destination=money_map.revenue.format(**fields),
                currency=charge.currency,
                precise_amount=charge.amount,
                precision=charge.precision,
                allow_overdraft=event.wallet.billing == "postpaid",
                description=money_map.charge_description.format(**fields),
                effective_date=effective_date,
                meta_data={**meta, "leg": "charge"},
            )
        )
    if usage.total_tokens > 0:
        legs.append(
            Leg(
                reference=_reference(event.event_id, 1, "tokens"),
                source=money_map.token_source.format(**fields),
                destination=money_map.token_destination.format(**fields),
                currency=money_map.token_currency,
                precise_amount=usage.total_tokens * token_precision,
                precision=token_precision,
                allow_overdraft=True,
                description=money_map.token_description.format(**fields),
                effective_date=effective_date,
                meta_data={**meta, "leg": "tokens"},
            )
        )
    if not legs:
        return None
    return Posting(event_id=event.event_id, customer=event.customer, legs=tuple(legs))


def _meta_data(event: UsageEvent) -> dict[str, Any]:
    usage = event.usage
    meta: dict[str, Any] = {
        "customer": event.customer,
        "model": usage.model,
        "endpoint": usage.endpoint,
        "response_id": usage.response_id,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.total_tokens,
        "billing": event.wallet.billing,
        "metered_by": _METER_NAME,
        "posting_generation": 1,
    }
    if usage.requested_model is not None:
        meta["requested_model"] = usage.requested_model
    if usage.status is not None:
        meta["response_status"] = usage.status
    if usage.streamed:
        meta["streamed"] = True
    if usage.tool_usage:
        # Hosted-tool usage is not priced yet; it is kept for reconciliation.
        meta["tool_usage"] = _floats_as_text(usage.tool_usage)
    charge = event.charge
    if charge is None:
        meta["unpriced"] = True
        meta["cost"] = "0"
    else:
        meta["cost"] = _plain_decimal(charge.cost)
        meta["price_model"] = charge.model_key
        if charge.fine_tuned:
            meta["price_fine_tuned"] = True
        if charge.via_family:
            meta["price_via_family"] = True
    for key, value in event.metadata.items():
        check_scope_metadata_key(key)
        meta[key] = value
    return meta


def _plain_decimal(value: Decimal) -> str:
    """Write a Decimal in fixed notation without trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def check_scope_metadata_key(key: str) -> None:
    """Reject a scope metadata key that blnk_meter or Blnk writes itself.

    Raises:
        ConfigurationError: the key is reserved.
    """
    if key in RESERVED_META_KEYS or key in _BLNK_META_KEYS:
        raise ConfigurationError(
            f"metadata key {key!r} is reserved because blnk_meter or Blnk writes "
            "it on every posting; rename it, e.g. to 'app_" + key + "'"
        )


def _reference(event_id: str, generation: int, kind: str) -> str:
    # References end in a word, never in "_q", "_<digits>" or "_refund",
    # which Blnk derives from references for its own rows.
    if generation == 1:
        return f"{event_id}:{kind}"
    return f"{event_id}:g{generation}:{kind}"


def _leg_kind(leg: Leg) -> str:
    return leg.reference.rsplit(":", 1)[1]


def _safe_id(response_id: str) -> str:
    if _SAFE_ID.fullmatch(response_id):
        return response_id
    digest = hashlib.sha256(response_id.encode()).hexdigest()[:32]
    return f"sha256-{digest}"


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"occurred_at {moment!r} has no timezone; use UTC")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _check_account(name: str, value: object) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigurationError(
            f"invalid {name} {value!r}: use a balance id ('bln_...') or an "
            "indicator such as '@Revenue', without spaces"
        )
    if value.startswith("@") and not _INDICATOR.fullmatch(value):
        raise ConfigurationError(f"invalid indicator {value!r} for {name}")


def _check_template(
    name: str, template: object, fields: tuple[str, ...] = _TEMPLATE_FIELDS
) -> None:
    if not isinstance(template, str) or not template:
        raise ConfigurationError(f"{name} must be a non-empty string, not {template!r}")
    try:
        parts = [part[1:] for part in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid template {name} {template!r}: {exc}"
        ) from exc
    for field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in fields or spec or conversion:
            allowed = ", ".join(f"{{{field}}}" for field in fields)
            raise ConfigurationError(
                f"invalid placeholder {{{field_name}}} in {name} {template!r}: "
                f"use only {allowed}"
            )


def _floats_as_text(value: Any) -> Any:
    """Return ``value`` with each float written as its shortest decimal string.

    Provider JSON such as a hosted tool's ``cost`` may hold floats, and no
    float is sent to the ledger, not even in ``meta_data``.
    """
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {key: _floats_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_floats_as_text(item) for item in value]
    return value
