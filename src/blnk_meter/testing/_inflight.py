"""Committing and voiding inflight holds.

A hold is an INFLIGHT row. Rows never change, so a commit or a void is a new
settlement row whose ``parent_transaction`` is the hold: APPLIED for a
commit (possibly partial, repeatedly) and VOID for the release of what
remains. An id may also name the parent of holds, such as a queued
transaction or a bulk batch, and then applies to each of its INFLIGHT legs.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from ._apierror import ApiError, LedgerFailure
from ._postings import enqueue, find_txn, record, select_txns
from ._records import Txn, major_amount
from ._requests import minor_from_float
from ._store import Session, new_id

__all__ = [
    "Action",
    "classify_inflight_error",
    "commit_or_void",
    "inflight_legs",
    "queue_action",
    "requested_amount",
    "run_queued_action",
    "settle_legs",
]

logger = logging.getLogger(__name__)

Action = Literal["commit", "void"]


def inflight_legs(session: Session, transaction_id: str) -> list[Txn]:
    """Return the INFLIGHT rows an id names: itself, its children or batch legs."""
    return select_txns(
        session,
        "status = 'INFLIGHT' AND (transaction_id = ? OR parent_transaction = ?"
        " OR json_extract(meta_data, '$.QUEUED_PARENT_TRANSACTION') = ?)",
        (transaction_id, transaction_id, transaction_id),
    )


def _committed(session: Session, leg_id: str) -> int:
    row = session.conn.execute(
        "SELECT COALESCE(SUM(precise_amount), 0) FROM transactions"
        " WHERE parent_transaction = ? AND status = 'APPLIED'",
        (leg_id,),
    ).fetchone()
    return int(row[0])


def _is_voided(session: Session, leg_id: str) -> bool:
    row = session.conn.execute(
        "SELECT 1 FROM transactions WHERE parent_transaction = ? AND status = 'VOID'",
        (leg_id,),
    ).fetchone()
    return row is not None


def _money(txn: Txn, precise_amount: int) -> str:
    return f"{txn.currency}{float(major_amount(precise_amount, txn.precision)):.2f}"


def _remaining(session: Session, leg: Txn, action: Action) -> int:
    if _is_voided(session, leg.transaction_id):
        raise LedgerFailure("transaction has already been voided")
    remaining = leg.precise_amount - _committed(session, leg.transaction_id)
    if remaining == 0:
        verb = "commit" if action == "commit" else "void"
        raise LedgerFailure(f"cannot {verb}. Transaction already committed")
    return remaining


def _check_requested(leg: Txn, amount: int, remaining: int) -> None:
    if amount < 0:
        raise LedgerFailure("commit amount cannot be negative")
    if amount > leg.precise_amount:
        raise LedgerFailure(
            "cannot commit more than the original transaction amount. Original:"
            f" {_money(leg, leg.precise_amount)}, Requested: {_money(leg, amount)}"
        )
    if amount > remaining:
        raise LedgerFailure(
            "cannot commit more than the remaining amount. Available:"
            f" {_money(leg, remaining)}, Requested: {_money(leg, amount)}"
        )


def settle_leg(
    session: Session,
    leg: Txn,
    action: Action,
    amount: int = 0,
    reference: str | None = None,
) -> Txn:
    """Write the settlement row of one hold and move the balances.

    Args:
        leg: the INFLIGHT row.
        action: ``commit`` moves ``amount`` (0 = all that remains) from
            inflight to posted; ``void`` releases all that remains.
        amount: minor units to commit; ignored for a void.
        reference: the settlement's reference; ``ref_<uuid>`` by default.

    Raises:
        LedgerFailure: the hold is voided, fully committed, or the amount
            is negative or larger than what remains.
    """
    remaining = _remaining(session, leg, action)
    if action == "commit":
        _check_requested(leg, amount, remaining)
    settled = amount if action == "commit" and amount else remaining
    now = session.now()
    settlement = leg.copy(
        transaction_id=new_id("txn"),
        parent_transaction=leg.transaction_id,
        reference=reference or new_id("ref"),
        precise_amount=settled,
        amount=major_amount(settled, leg.precision),
        amount_string=None,
        status="COMMIT" if action == "commit" else "VOID",
        inflight=False,
        created_at=now,
        effective_date=now,
    )
    settlement.meta_data.pop("inflight", None)
    settlement.hash = settlement.compute_hash()
    return record(session, settlement)


def _processing_error(messages: list[str]) -> LedgerFailure:
    return LedgerFailure(f"error occurred during processing: [{' '.join(messages)}]")


def settle_legs(
    session: Session, transaction_id: str, action: Action, amount: int
) -> list[Txn]:
    """Settle every INFLIGHT leg an id names, synchronously.

    Raises:
        ApiError: no INFLIGHT leg exists (``TXN_NOT_INFLIGHT``).
        LedgerFailure: a leg could not be settled; the caller rolls back.
    """
    legs = inflight_legs(session, transaction_id)
    if not legs:
        raise ApiError("TXN_NOT_INFLIGHT", f"no transaction to {action}")
    settled: list[Txn] = []
    errors: list[str] = []
    for leg in legs:
        try:
            settled.append(settle_leg(session, leg, action, amount))
        except LedgerFailure as exc:
            errors.append(exc.message)
    if errors:
        raise _processing_error(errors)
    return settled


def requested_amount(
    session: Session,
    transaction_id: str,
    amount: float | None,
    precise_amount: int | None,
) -> int:
    """Return the minor units a commit requests; 0 means all that remains.

    ``precise_amount`` wins; otherwise ``amount`` (major units) is scaled by
    the precision stored on the transaction or its first child, else by 1.

    Raises:
        ApiError: ``precise_amount`` is zero or negative (``TXN_INVALID_AMOUNT``).
    """
    if precise_amount is not None:
        if precise_amount <= 0:
            raise ApiError("TXN_INVALID_AMOUNT", "precise_amount must be positive")
        return precise_amount
    if not amount:
        return 0
    row = session.conn.execute(
        "SELECT precision FROM transactions WHERE transaction_id = ?"
        " OR parent_transaction = ? LIMIT 1",
        (transaction_id, transaction_id),
    ).fetchone()
    precision = int(row[0]) if row and row[0] > 0 else 1
    return minor_from_float(amount, precision)


def _is_hold(txn: Txn) -> bool:
    return txn.status == "INFLIGHT" or (
        txn.status == "QUEUED" and txn.meta_data.get("inflight") is True
    )


def _expand_parent(
    session: Session, transaction_id: str, action: Action, error: LedgerFailure
) -> Txn:
    """Return the first hold under a parent id, or raise ``error`` if none."""
    legs = inflight_legs(session, transaction_id)
    if not legs:
        raise error
    if all(
        leg.precise_amount == _committed(session, leg.transaction_id) for leg in legs
    ):
        verb = "commit" if action == "commit" else "void"
        raise LedgerFailure(f"cannot {verb}. Transaction already committed")
    return legs[0].copy(transaction_id=transaction_id)


def queue_action(
    session: Session, transaction_id: str, action: Action, amount: int
) -> Txn:
    """Check a commit or void and queue it, as Blnk does without ``skip_queue``.

    Returns:
        The hold as stored, still INFLIGHT (or QUEUED while its own
        queued work is pending).

    Raises:
        LedgerFailure: the hold is unknown, voided, committed, or the amount
            is too large.
        ApiError: a commit or void is already queued (``GEN_CONFLICT``).
    """
    txn = find_txn(session, "transaction_id", transaction_id)
    if txn is not None and _is_hold(txn):
        if _is_voided(session, transaction_id):
            raise LedgerFailure("transaction has already been voided")
        remaining = txn.precise_amount - _committed(session, transaction_id)
        if remaining == 0:
            raise LedgerFailure("cannot commit. Transaction already committed")
        if action == "commit":
            _check_requested(txn, amount, remaining)
        hold = txn
    elif txn is None:
        message = f"Transaction with ID '{transaction_id}' not found"
        error = LedgerFailure(message, code="GEN_NOT_FOUND")
        hold = _expand_parent(session, transaction_id, action, error)
    else:
        error = LedgerFailure("transaction is not in inflight status")
        hold = _expand_parent(session, transaction_id, action, error)
    pending = session.conn.execute(
        "SELECT 1 FROM queue WHERE kind = 'inflight' AND target = ?",
        (transaction_id,),
    ).fetchone()
    if pending is not None:
        raise ApiError(
            "GEN_CONFLICT", "a commit or void is already queued for this transaction"
        )
    payload = {
        "transaction_id": transaction_id,
        "action": action,
        "precise_amount": amount,
        "action_id": new_id("act"),
    }
    enqueue(session, "inflight", transaction_id, json.dumps(payload))
    return hold


_TERMINAL = {"ALREADY_COMMITTED", "ALREADY_VOIDED", "NOT_INFLIGHT", "INVALID_AMOUNT"}


def classify_inflight_error(message: str) -> str:
    """Return Blnk's per-item code for a failed commit or void."""
    if "not found" in message:
        return "NOT_FOUND"
    if "has already been voided" in message:
        return "ALREADY_VOIDED"
    if "Transaction already committed" in message:
        return "ALREADY_COMMITTED"
    if "not in inflight status" in message:
        return "NOT_INFLIGHT"
    if "cannot commit more than" in message:
        return "INVALID_AMOUNT"
    if "failed to acquire lock" in message:
        return "LOCKED"
    return "INTERNAL_ERROR"


def run_queued_action(
    session: Session,
    transaction_id: str,
    action: Action,
    amount: int,
    action_id: str | None,
) -> None:
    """Settle the legs of a queued commit, void, expiry or auto-commit.

    Legs that are already settled are skipped, which makes the work
    idempotent; other failures are logged.
    """
    for leg in inflight_legs(session, transaction_id):
        reference = None
        if action_id:
            reference = f"{leg.transaction_id}_{action}_{action_id}"
        try:
            settle_leg(session, leg, action, amount, reference)
        except LedgerFailure as exc:
            code = classify_inflight_error(exc.message)
            if code in _TERMINAL or "has already been used" in exc.message:
                logger.debug("%s of %s skipped: %s", action, leg.transaction_id, code)
            else:
                logger.warning(
                    "%s of %s failed: %s", action, leg.transaction_id, exc.message
                )


def commit_or_void(
    session: Session, transaction_id: str, action: Action, amount: int
) -> Txn:
    """Settle one hold synchronously, as a bulk commit or void item.

    Raises:
        LedgerFailure: the id is unknown, not a hold, or cannot be settled.
    """
    txn = find_txn(session, "transaction_id", transaction_id)
    if txn is None:
        raise LedgerFailure(
            f"Transaction with ID '{transaction_id}' not found", code="GEN_NOT_FOUND"
        )
    if txn.status != "INFLIGHT":
        raise LedgerFailure("transaction is not in inflight status")
    return settle_leg(session, txn, action, amount)
