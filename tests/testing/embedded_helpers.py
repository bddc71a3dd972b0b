"""Helpers shared by the embedded-ledger tests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from blnk_meter.testing import EmbeddedLedger


def new_wallet(ledger: EmbeddedLedger, currency: str = "USD", funds: int = 0) -> str:
    """Create a customer balance, fund it from @World and return its id."""
    ledger_id = ledger.create_ledger("customers")["ledger_id"]
    balance_id: str = ledger.create_balance(ledger_id, currency)["balance_id"]
    if funds:
        ledger.record_transaction(
            {
                "precise_amount": funds,
                "precision": 100,
                "currency": currency,
                "reference": f"fund-{balance_id}",
                "description": "top-up",
                "source": "@World",
                "destination": balance_id,
                "allow_overdraft": True,
                "skip_queue": True,
            }
        )
    return balance_id


def spend(balance_id: str, cents: int, reference: str, **fields: Any) -> dict[str, Any]:
    """Return a body that moves ``cents`` from a wallet to @Revenue, synchronously."""
    body: dict[str, Any] = {
        "precise_amount": cents,
        "precision": 100,
        "currency": "USD",
        "reference": reference,
        "description": "usage",
        "source": balance_id,
        "destination": "@Revenue",
        "skip_queue": True,
    }
    body.update(fields)
    return body


class Clock:
    """A settable clock for the ledger."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now
