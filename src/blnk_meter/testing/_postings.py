"""Applying transactions to balances, synchronously or through the queue.

:func:`record` is Blnk's ``RecordTransaction``: check the reference, resolve
the balances (creating ``@indicator`` balances on first use), check funds and
write the row and both balances. :func:`queue_transaction` is Blnk's
``QueueTransaction``: with ``skip_queue`` it records at once, otherwise it
stores a QUEUED row and leaves a ``<reference>_q`` copy on the queue.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from ._apierror import LedgerFailure
from ._records import AMOUNT_FIELDS, TXN_COLUMNS, Txn, txn_from_row
from ._requests import minor_from_float
from ._store import GENERAL_LEDGER_ID, INT64_MAX, Session, new_id

__all__ = [
    "Balance",
    "enqueue",
    "find_txn",
    "load_balance",
    "queue_transaction",
    "record",
    "reject",
    "select_txns",
]

logger = logging.getLogger(__name__)

_SETTLED_STATUS = {
    "QUEUED": "APPLIED",
    "APPLIED": "APPLIED",
    "SCHEDULED": "APPLIED",
    "COMMIT": "APPLIED",
    "VOID": "VOID",
}


@dataclass
class Balance:
    """The amounts of one balance row, changed in memory and then saved."""

    balance_id: str
    currency: str
    indicator: str
    balance: int
    credit_balance: int
    debit_balance: int
    inflight_balance: int
    inflight_credit_balance: int
    inflight_debit_balance: int

    def recompute(self) -> None:
        """Restore ``balance = credit - debit`` and its inflight counterpart."""
        self.balance = self.credit_balance - self.debit_balance
        self.inflight_balance = (
            self.inflight_credit_balance - self.inflight_debit_balance
        )

    def check_range(self, reference: str) -> None:
        """Raise when an amount left the signed 64-bit range SQLite stores."""
        for name in AMOUNT_FIELDS:
            if abs(getattr(self, name)) > INT64_MAX:
                raise LedgerFailure(
                    f"transaction {reference!r} would take {name} of balance"
                    f" {self.balance_id} past {INT64_MAX}, the largest amount"
                    " the ledger stores; post smaller amounts",
                    code="TXN_INVALID_AMOUNT",
                )

    def save(self, session: Session) -> None:
        """Write the amounts and increment the version."""
        session.conn.execute(
            "UPDATE balances SET balance = ?, credit_balance = ?, debit_balance = ?,"
            " inflight_balance = ?, inflight_credit_balance = ?,"
            " inflight_debit_balance = ?, version = version + 1"
            " WHERE balance_id = ?",
            (
                self.balance,
                self.credit_balance,
                self.debit_balance,
                self.inflight_balance,
                self.inflight_credit_balance,
                self.inflight_debit_balance,
                self.balance_id,
            ),
        )


_BALANCE_SELECT = (
    "SELECT balance_id, currency, indicator, balance, credit_balance,"
    " debit_balance, inflight_balance, inflight_credit_balance,"
    " inflight_debit_balance FROM balances"
)


def load_balance(session: Session, balance_id: str) -> Balance | None:
    """Return the balance with this id, or ``None``."""
    row = session.conn.execute(
        f"{_BALANCE_SELECT} WHERE balance_id = ?", (balance_id,)
    ).fetchone()
    return Balance(*row) if row else None


def find_indicator(session: Session, indicator: str, currency: str) -> Balance | None:
    """Return the general-ledger balance of an indicator and currency, or None."""
    row = session.conn.execute(
        f"{_BALANCE_SELECT} WHERE indicator = ? AND currency = ?",
        (indicator, currency),
    ).fetchone()
    return Balance(*row) if row else None


def _resolve(session: Session, identifier: str, currency: str) -> Balance:
    if identifier.startswith("@"):
        found = find_indicator(session, identifier, currency)
        if found is not None:
            return found
        balance_id = new_id("bln")
        session.conn.execute(
            "INSERT INTO balances (balance_id, ledger_id, indicator, currency,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (balance_id, GENERAL_LEDGER_ID, identifier, currency, session.now()),
        )
        created = load_balance(session, balance_id)
        assert created is not None
        return created
    balance = load_balance(session, identifier)
    if balance is None:
        message = f"Balance with ID '{identifier}' not found"
        raise LedgerFailure(
            f"failed to get source and destination balances: {message}",
            code="GEN_NOT_FOUND",
            api_message=message,
        )
    return balance


def _check_funds(txn: Txn, source: Balance) -> None:
    """Raise unless the source can pay, as Blnk's ``canProcessTransaction``."""
    if txn.allow_overdraft and txn.overdraft_limit == 0:
        return
    available = source.balance - source.inflight_debit_balance
    if available >= txn.precise_amount:
        return
    if txn.overdraft_limit > 0:
        limit_minor = minor_from_float(txn.overdraft_limit, txn.precision)
        if available - txn.precise_amount >= -limit_minor:
            return
        raise LedgerFailure(
            "failed to apply transaction to balances:"
            " transaction exceeds overdraft limit"
        )
    raise LedgerFailure(
        "failed to apply transaction to balances: insufficient funds in source balance"
    )


def _release_inflight(balance: Balance, side: str, amount: int, step: str) -> None:
    inflight_amount = getattr(balance, f"inflight_{side}_balance")
    if inflight_amount < amount:
        raise LedgerFailure(
            f"failed to apply transaction to balances: {step} failed:"
            f" insufficient inflight {side} balance: have {inflight_amount},"
            f" need {amount}"
        )
    setattr(balance, f"inflight_{side}_balance", inflight_amount - amount)


def _apply(txn: Txn, source: Balance, destination: Balance) -> None:
    amount = txn.precise_amount
    if txn.status == "COMMIT":
        _release_inflight(source, "debit", amount, "commit inflight debit")
        _release_inflight(destination, "credit", amount, "commit inflight credit")
        source.debit_balance += amount
        destination.credit_balance += amount
    elif txn.status == "VOID":
        _release_inflight(source, "debit", amount, "void inflight debit")
        _release_inflight(destination, "credit", amount, "void inflight credit")
    else:
        if amount <= 0:
            raise LedgerFailure(
                "failed to apply transaction to balances:"
                " transaction precise amount must be positive"
            )
        _check_funds(txn, source)
        if txn.inflight:
            source.inflight_debit_balance += amount
            destination.inflight_credit_balance += amount
        else:
            source.debit_balance += amount
            destination.credit_balance += amount
    for balance in (source, destination):
        balance.recompute()
        balance.check_range(txn.reference)


def _reference_used(session: Session, reference: str) -> bool:
    row = session.conn.execute(
        "SELECT 1 FROM transactions WHERE reference = ?", (reference,)
    ).fetchone()
    return row is not None


def _duplicate(reference: str) -> LedgerFailure:
    return LedgerFailure(
        f"transaction validation failed: reference {reference} has already been used"
    )


def record(session: Session, txn: Txn) -> Txn:
    """Apply a transaction to its balances and store it, or write nothing.

    ``txn.source`` and ``txn.destination`` are replaced by the resolved
    balance ids, as Blnk does, so an error message can name them.

    Returns:
        The stored row: APPLIED, INFLIGHT or VOID.

    Raises:
        LedgerFailure: the reference is used, a balance does not exist, the
            source lacks funds, or an inflight hold cannot cover a
            settlement. Nothing is written then.
    """
    with session.savepoint():
        if _reference_used(session, txn.reference):
            raise _duplicate(txn.reference)
        source = _resolve(session, txn.source, txn.currency)
        txn.source = source.balance_id
        destination = _resolve(session, txn.destination, txn.currency)
        txn.destination = destination.balance_id
        if source.balance_id == destination.balance_id:
            raise LedgerFailure(
                "transaction validation failed: source and destination cannot"
                f" be the same balance ({source.balance_id})",
                code="TXN_VALIDATION_ERROR",
            )
        _apply(txn, source, destination)
        status = "INFLIGHT" if txn.inflight else _SETTLED_STATUS[txn.status]
        stored = txn.copy(status=status, inflight=status == "INFLIGHT")
        if status != "INFLIGHT":
            stored.meta_data.pop("inflight", None)
        stored.insert(session.conn)
        source.save(session)
        destination.save(session)
    return stored


def enqueue(
    session: Session,
    kind: str,
    target: str,
    payload: str,
    due_at: str | None = None,
) -> None:
    """Add work to the queue; ``due_at`` delays it until that time."""
    session.conn.execute(
        "INSERT INTO queue (kind, target, due_at, payload) VALUES (?, ?, ?, ?)",
        (kind, target, due_at, payload),
    )


def _store_queued(session: Session, txn: Txn) -> None:
    """Store the QUEUED row and queue its ``_q`` copy, or log why not.

    Blnk does this after responding 201, so a failure here (an unknown
    balance, a used reference) is only logged and the id it returned never
    exists.
    """
    try:
        with session.savepoint():
            row = txn.copy(
                source=_resolve(session, txn.source, txn.currency).balance_id,
                destination=_resolve(session, txn.destination, txn.currency).balance_id,
            )
            try:
                row.insert(session.conn)
            except sqlite3.IntegrityError:
                raise _duplicate(row.reference) from None
            child = row.copy(
                transaction_id=new_id("txn"),
                parent_transaction=row.transaction_id,
                reference=f"{row.reference}_q",
            )
            enqueue(
                session,
                "transaction",
                row.transaction_id,
                child.to_payload(),
                due_at=row.scheduled_for,
            )
    except LedgerFailure as exc:
        logger.warning(
            "queued transaction %s (reference %r) was not stored: %s",
            txn.transaction_id,
            txn.reference,
            exc.message,
        )


def queue_transaction(session: Session, txn: Txn) -> Txn:
    """Process a new transaction as Blnk's ``QueueTransaction`` does.

    Returns:
        The transaction to return: the stored row for ``skip_queue``,
        otherwise the QUEUED transaction with source and destination as sent.

    Raises:
        LedgerFailure: a ``skip_queue`` transaction failed; nothing is written.
    """
    if txn.skip_queue:
        stored = record(session, txn)
        response = txn.copy(status=stored.status)
    else:
        txn.meta_data["QUEUED_PARENT_TRANSACTION"] = txn.transaction_id
        if "bulk" in txn.parent_transaction:
            txn.meta_data["QUEUED_PARENT_TRANSACTION"] = txn.parent_transaction
        _store_queued(session, txn)
        response = txn
    target = json.dumps(txn.transaction_id)
    if txn.inflight_expiry_date:
        enqueue(session, "expire", txn.transaction_id, target, txn.inflight_expiry_date)
    if txn.inflight_commit_date:
        enqueue(
            session, "autocommit", txn.transaction_id, target, txn.inflight_commit_date
        )
    return response


def reject(session: Session, txn: Txn, reason: str) -> None:
    """Store a queued copy as REJECTED with the reason in its meta_data."""
    rejected = txn.copy(status="REJECTED")
    rejected.meta_data["blnk_rejection_reason"] = reason
    try:
        rejected.insert(session.conn)
    except sqlite3.IntegrityError:
        logger.warning(
            "rejected transaction %s was not stored: reference %r is used",
            txn.transaction_id,
            txn.reference,
        )


def select_txns(session: Session, where: str, params: tuple[object, ...]) -> list[Txn]:
    """Return the transactions matching a SQL condition, newest first."""
    rows = session.conn.execute(
        f"SELECT {TXN_COLUMNS} FROM transactions WHERE {where}"
        " ORDER BY created_at DESC, seq DESC",
        params,
    ).fetchall()
    return [txn_from_row(row) for row in rows]


def find_txn(session: Session, column: str, value: str) -> Txn | None:
    """Return the transaction whose ``transaction_id`` or ``reference`` matches."""
    assert column in ("transaction_id", "reference")
    rows = select_txns(session, f"{column} = ?", (value,))
    return rows[0] if rows else None
