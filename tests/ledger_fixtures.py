"""Helpers that set up wallets and postings in an embedded ledger for tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from blnk_meter import BlnkClient, MoneyMap, Posting, Usage, UsageEvent, Wallet
from blnk_meter._posting import build_posting
from blnk_meter._prices import PriceBook

USD = 10**8
BOOK = PriceBook.from_dict(
    {
        "currency": "USD",
        "source": "test rates",
        "models": {
            "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"}
        },
    }
)


def open_wallet(client: BlnkClient, *, funds: Decimal = Decimal(0)) -> str:
    """Create a customer USD balance, fund it from @World-USD and return its id."""
    ledger_id = client.create_ledger(f"customers-{uuid.uuid4().hex[:8]}")["ledger_id"]
    balance_id: str = client.create_balance(ledger_id, "USD")["balance_id"]
    if funds:
        top_up(client, balance_id, funds)
    return balance_id


def top_up(client: BlnkClient, balance_id: str, funds: Decimal) -> None:
    """Move ``funds`` dollars from @World-USD to a balance."""
    client.record_transaction(
        {
            "precise_amount": int(funds * USD),
            "precision": USD,
            "currency": "USD",
            "reference": f"top-up-{uuid.uuid4()}",
            "source": "@World-USD",
            "destination": balance_id,
            "description": "Wallet funding",
            "allow_overdraft": True,
            "skip_queue": True,
        }
    )


def usage_posting(
    wallet: Wallet,
    *,
    customer: str = "acme",
    response_id: str | None = None,
    input_tokens: int = 1_000_000,
    output_tokens: int = 100_000,
) -> Posting:
    """Build the posting of one priced chat completion."""
    usage = Usage(
        endpoint="chat.completions",
        model="gpt-4o-mini",
        response_id=response_id or f"chatcmpl-{uuid.uuid4().hex}",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    event = UsageEvent(
        customer=customer,
        wallet=wallet,
        usage=usage,
        charge=BOOK.charge(usage, USD),
        occurred_at=datetime.now(timezone.utc),
    )
    posting = build_posting(event, MoneyMap())
    assert posting is not None
    return posting


def balance_of(client: BlnkClient, balance_id: str) -> int:
    """Return a balance's ``balance`` field, in minor units."""
    balance: int = client.get_balance(balance_id)["balance"]
    return balance


def indicator_balance(client: BlnkClient, indicator: str, currency: str) -> int:
    """Return an indicator balance in minor units, 0 when it does not exist yet."""
    balance: dict[str, Any] | None = client.get_balance_by_indicator(
        indicator, currency
    )
    return 0 if balance is None else int(balance["balance"])
