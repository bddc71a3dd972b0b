"""Refunds: new transactions that reverse applied ones.

A refund copies the original with source and destination swapped,
``allow_overdraft`` set and the reference ``<original id>_refund``. Like any
transaction it is queued unless ``skip_queue`` is set, so a queued refund
shows as a QUEUED ``<id>_refund`` row plus its APPLIED ``<id>_refund_q``
copy once the queue has run.
"""

from __future__ import annotations

from typing import Any

from ._apierror import LedgerFailure
from ._postings import queue_transaction, select_txns
from ._records import Txn
from ._requests import set_flag_metadata
from ._store import Session, new_id

__all__ = ["refund_all", "refundable_rows"]


def refundable_rows(session: Session, transaction_id: str) -> list[Txn]:
    """Return what refunding an id reverses, newest first.

    That is the row itself when APPLIED, its APPLIED or VOID children, and the
    APPLIED rows queued under it (a queued transaction or a bulk batch).
    """
    return select_txns(
        session,
        "(transaction_id = ? AND status = 'APPLIED')"
        " OR (parent_transaction = ? AND status IN ('APPLIED', 'VOID'))"
        " OR (status = 'APPLIED'"
        " AND json_extract(meta_data, '$.QUEUED_PARENT_TRANSACTION') = ?)",
        (transaction_id, transaction_id, transaction_id),
    )


def _is_refunded(session: Session, original: Txn) -> bool:
    row = session.conn.execute(
        "SELECT 1 FROM transactions WHERE parent_transaction = ?"
        " AND source = ? AND destination = ?",
        (original.transaction_id, original.destination, original.source),
    ).fetchone()
    return row is not None


def _refund(
    session: Session,
    original: Txn,
    *,
    skip_queue: bool,
    description: str,
    meta_data: dict[str, Any],
) -> Txn:
    if original.status not in ("APPLIED", "VOID"):
        raise LedgerFailure(
            f"transaction {original.transaction_id} cannot be refunded in status"
            f" {original.status} (only APPLIED or VOID)"
        )
    if _is_refunded(session, original):
        raise LedgerFailure(
            f"transaction {original.transaction_id} has already been refunded"
        )
    now = session.now()
    refund = original.copy(
        transaction_id=new_id("txn"),
        parent_transaction=original.transaction_id,
        reference=f"{original.transaction_id}_refund",
        source=original.destination,
        destination=original.source,
        description=description or original.description,
        status="QUEUED",
        allow_overdraft=True,
        inflight=original.status == "VOID",
        skip_queue=skip_queue,
        atomic=False,
        created_at=now,
        effective_date=now,
        scheduled_for=None,
        inflight_expiry_date=None,
        inflight_commit_date=None,
        meta_data={**original.meta_data, **meta_data},
    )
    set_flag_metadata(refund)
    refund.hash = refund.compute_hash()
    return queue_transaction(session, refund)


def refund_all(
    session: Session,
    transaction_id: str,
    *,
    skip_queue: bool = False,
    description: str = "",
    meta_data: dict[str, Any] | None = None,
) -> list[Txn]:
    """Refund every refundable row under an id.

    Returns:
        The refund transactions, in the order of :func:`refundable_rows`;
        an empty list when nothing is refundable.

    Raises:
        LedgerFailure: a row is already refunded or cannot be refunded. The
            caller rolls back the refunds made before it.
    """
    refunds: list[Txn] = []
    errors: list[str] = []
    for original in refundable_rows(session, transaction_id):
        try:
            refunds.append(
                _refund(
                    session,
                    original,
                    skip_queue=skip_queue,
                    description=description,
                    meta_data=meta_data or {},
                )
            )
        except LedgerFailure as exc:
            errors.append(exc.message)
    if errors:
        raise LedgerFailure(f"error occurred during processing: [{' '.join(errors)}]")
    return refunds
