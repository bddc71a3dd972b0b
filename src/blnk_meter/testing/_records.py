"""Transaction, balance and ledger records and their JSON forms.

Blnk responds to a create with the whole in-memory transaction, but reads return
only the columns its queries select: a read never shows ``allow_overdraft``,
``skip_queue`` or ``atomic``, ``GET /transactions/{id}`` omits
``effective_date``, and ``GET /transactions/reference/{ref}`` also returns
``precision`` 0 and an empty ``hash``. The views below reproduce that.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Literal

from ._store import ZERO_TIME

__all__ = [
    "Txn",
    "View",
    "balance_json",
    "format_major",
    "json_number",
    "ledger_json",
    "major_amount",
    "txn_from_row",
    "txn_json",
]

View = Literal["created", "by_id", "by_reference", "list"]

TXN_COLUMNS = (
    "transaction_id, parent_transaction, source, destination, reference,"
    " amount, precise_amount, precision, currency, description, status, hash,"
    " created_at, effective_date, scheduled_for, meta_data"
)


def major_amount(precise_amount: int, precision: int) -> Decimal:
    """Return minor units divided by the precision, exactly when it terminates.

    A quotient that does not terminate is rounded to 16 decimal places, as
    Blnk's decimal library does.
    """
    with localcontext() as context:
        # Wide enough for every integer the request parser produces, so the
        # quantize below never runs out of digits.
        context.prec = 2100
        quotient = Decimal(precise_amount) / Decimal(precision)
        if quotient * precision != precise_amount:
            quotient = quotient.quantize(Decimal("1e-16"), rounding=ROUND_HALF_UP)
        if quotient == quotient.to_integral_value():
            return quotient.quantize(Decimal(1))
        return quotient.normalize()


def format_major(amount: Decimal) -> str:
    """Format a major-unit amount without exponent, as Go's decimal does."""
    return format(amount, "f")


@dataclass
class Txn:
    """One transaction row, or one that is about to be written.

    ``precise_amount`` is in minor units; ``amount`` is the major-unit value
    Blnk reports next to it (a float on Blnk's wire), kept here as Decimal.
    Timestamps are stored text (see ``format_time``) or ``None`` when unset.
    """

    transaction_id: str = ""
    parent_transaction: str = ""
    source: str = ""
    destination: str = ""
    reference: str = ""
    precise_amount: int = 0
    precision: int = 1
    amount: Decimal = Decimal(0)
    amount_string: str | None = None
    overdraft_limit: float = 0.0
    currency: str = ""
    description: str = ""
    status: str = ""
    hash: str = ""
    allow_overdraft: bool = False
    inflight: bool = False
    skip_queue: bool = False
    atomic: bool = False
    created_at: str = ""
    effective_date: str | None = None
    scheduled_for: str | None = None
    inflight_expiry_date: str | None = None
    inflight_commit_date: str | None = None
    meta_data: dict[str, Any] = field(default_factory=dict)

    def copy(self, **changes: Any) -> Txn:
        """Return a copy with its own meta_data and the given fields changed."""
        changes.setdefault("meta_data", dict(self.meta_data))
        return replace(self, **changes)

    def compute_hash(self) -> str:
        """Return Blnk's SHA-256 over amount, reference, currency and balances."""
        text = (
            f"{format_major(self.amount)}{self.reference}{self.currency}"
            f"{self.source}{self.destination}"
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def to_payload(self) -> str:
        """Serialise every field, for a queue entry."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["amount"] = str(self.amount)
        return json.dumps(data)

    @classmethod
    def from_payload(cls, payload: str) -> Txn:
        """Rebuild a transaction serialised by :meth:`to_payload`."""
        data = json.loads(payload)
        data["amount"] = Decimal(data["amount"])
        return cls(**data)

    def insert(self, conn: sqlite3.Connection) -> None:
        """Insert the row; a used reference raises ``sqlite3.IntegrityError``."""
        conn.execute(
            f"INSERT INTO transactions ({TXN_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.transaction_id,
                self.parent_transaction,
                self.source,
                self.destination,
                self.reference,
                float(self.amount),
                self.precise_amount,
                self.precision,
                self.currency,
                self.description,
                self.status,
                self.hash,
                self.created_at,
                self.effective_date,
                self.scheduled_for,
                json.dumps(self.meta_data),
            ),
        )


def txn_from_row(row: tuple[Any, ...]) -> Txn:
    """Build a transaction from a row selected with ``TXN_COLUMNS``."""
    meta = json.loads(row[15]) if row[15] else {}
    precise, precision = int(row[6]), int(row[7])
    return Txn(
        transaction_id=row[0],
        parent_transaction=row[1],
        source=row[2],
        destination=row[3],
        reference=row[4],
        amount=major_amount(precise, precision),
        precise_amount=precise,
        precision=precision,
        currency=row[8],
        description=row[9],
        status=row[10],
        hash=row[11],
        created_at=row[12],
        effective_date=row[13],
        scheduled_for=row[14],
        inflight=meta.get("inflight") is True,
        meta_data=meta,
    )


def json_number(value: Decimal | float) -> int | float:
    """Return a JSON number: an int when whole, as Go prints a whole float64."""
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def txn_json(txn: Txn, view: View) -> dict[str, Any]:
    """Return the transaction as Blnk's JSON object for the given view.

    ``inflight: true`` moves from meta_data to the top level, and empty
    meta_data is omitted, as Blnk's response transform does.
    """
    created = view == "created"
    meta = dict(txn.meta_data)
    inflight = txn.inflight or meta.get("inflight") is True
    if meta.get("inflight") is True:
        del meta["inflight"]
    body: dict[str, Any] = {
        "precise_amount": txn.precise_amount,
        "amount": json_number(txn.amount),
    }
    if created and txn.amount_string is not None:
        body["amount_string"] = txn.amount_string
    body["precision"] = 0 if view == "by_reference" else txn.precision
    body["overdraft_limit"] = json_number(txn.overdraft_limit) if created else 0
    body["transaction_id"] = txn.transaction_id
    body["parent_transaction"] = txn.parent_transaction
    if txn.source:
        body["source"] = txn.source
    if txn.destination:
        body["destination"] = txn.destination
    body["reference"] = txn.reference
    body["currency"] = txn.currency
    if txn.description:
        body["description"] = txn.description
    body["status"] = txn.status
    body["hash"] = "" if view == "by_reference" else txn.hash
    body["allow_overdraft"] = txn.allow_overdraft and created
    body["inflight"] = inflight
    body["skip_queue"] = txn.skip_queue and created
    body["atomic"] = txn.atomic and created
    body["created_at"] = txn.created_at
    if view in ("created", "list") and txn.effective_date is not None:
        body["effective_date"] = txn.effective_date
    body["scheduled_for"] = (created and txn.scheduled_for) or ZERO_TIME
    body["inflight_expiry_date"] = (created and txn.inflight_expiry_date) or ZERO_TIME
    body["inflight_commit_date"] = (created and txn.inflight_commit_date) or ZERO_TIME
    if meta:
        body["meta_data"] = meta
    return body


BALANCE_COLUMNS = (
    "balance_id, ledger_id, identity_id, indicator, currency, balance,"
    " credit_balance, debit_balance, inflight_balance, inflight_credit_balance,"
    " inflight_debit_balance, version, created_at, meta_data,"
    " track_fund_lineage, allocation_strategy"
)

AMOUNT_FIELDS = (
    "balance",
    "credit_balance",
    "debit_balance",
    "inflight_balance",
    "inflight_credit_balance",
    "inflight_debit_balance",
)


def balance_json(row: tuple[Any, ...], *, with_meta: bool = True) -> dict[str, Any]:
    """Return a balance row (selected with ``BALANCE_COLUMNS``) as Blnk's JSON."""
    body: dict[str, Any] = {
        "balance": row[5],
        "version": row[11],
        "inflight_balance": row[8],
        "credit_balance": row[6],
        "inflight_credit_balance": row[9],
        "debit_balance": row[7],
        "inflight_debit_balance": row[10],
        "ledger_id": row[1],
        "identity_id": row[2],
        "balance_id": row[0],
    }
    if row[3]:
        body["indicator"] = row[3]
    body["currency"] = row[4]
    body["created_at"] = row[12]
    body["inflight_expires_at"] = ZERO_TIME
    body["meta_data"] = json.loads(row[13]) if with_meta and row[13] else None
    body["track_fund_lineage"] = bool(row[14])
    if row[15]:
        body["allocation_strategy"] = row[15]
    return body


def ledger_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """Return a ledger row (ledger_id, name, created_at, meta_data) as JSON."""
    return {
        "ledger_id": row[0],
        "name": row[1],
        "created_at": row[2],
        "meta_data": json.loads(row[3]) if row[3] else None,
    }
