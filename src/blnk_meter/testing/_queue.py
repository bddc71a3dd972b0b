"""The queue worker: what Blnk's Redis workers do after a request has its response.

Queue entries live in the database. An entry without ``due_at`` is queued
work: a ``_q`` copy, a queued commit or void, a queued refund or an async
batch. An entry with ``due_at`` is timed work, which runs once the clock
passes it: an inflight expiry, an auto-commit or a scheduled transaction.
Each entry is taken and processed inside one write transaction, so two
processes never run the same entry.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ._apierror import LedgerFailure
from ._bulk import rollback_batch, run_queued_bulk
from ._inflight import run_queued_action
from ._postings import record, reject
from ._records import Txn
from ._store import Session

__all__ = ["has_due_work", "run_next"]

logger = logging.getLogger(__name__)


def has_due_work(session: Session) -> bool:
    """Return whether timed work has come due."""
    row = session.conn.execute(
        "SELECT 1 FROM queue WHERE due_at IS NOT NULL AND due_at <= ? LIMIT 1",
        (session.now(),),
    ).fetchone()
    return row is not None


def _run_transaction(session: Session, payload: str) -> None:
    child = Txn.from_payload(payload)
    try:
        record(session, child)
    except LedgerFailure as exc:
        if "has already been used" in exc.message:
            logger.warning(
                "queued transaction %s dropped: %s", child.transaction_id, exc.message
            )
            return
        reject(session, child, exc.message)
        logger.info("queued transaction %s rejected: %s", child.reference, exc.message)
        batch_id = child.meta_data.get("QUEUED_PARENT_TRANSACTION")
        if child.atomic and isinstance(batch_id, str):
            rollback_batch(session, batch_id, child.inflight)


def _run_entry(session: Session, kind: str, target: str, payload: str) -> None:
    if kind == "transaction":
        _run_transaction(session, payload)
    elif kind == "inflight":
        action: dict[str, Any] = json.loads(payload)
        run_queued_action(
            session,
            action["transaction_id"],
            action["action"],
            int(action["precise_amount"]),
            action["action_id"],
        )
    elif kind == "expire":
        run_queued_action(session, target, "void", 0, None)
    elif kind == "autocommit":
        run_queued_action(session, target, "commit", 0, None)
    elif kind == "bulk":
        run_queued_bulk(session, payload)
    else:
        logger.error("queue entry of unknown kind %r for %s skipped", kind, target)


def run_next(session: Session, *, timed_only: bool) -> bool:
    """Take the oldest runnable entry, process it and return whether one ran.

    Args:
        timed_only: run only timed work that has come due, leaving queued
            work for an explicit ``process_queue()``.
    """
    condition = "due_at IS NOT NULL AND due_at <= ?"
    if not timed_only:
        condition = "due_at IS NULL OR due_at <= ?"
    row = session.conn.execute(
        f"SELECT seq, kind, target, payload FROM queue WHERE {condition}"
        " ORDER BY seq LIMIT 1",
        (session.now(),),
    ).fetchone()
    if row is None:
        return False
    seq, kind, target, payload = row
    session.conn.execute("DELETE FROM queue WHERE seq = ?", (seq,))
    _run_entry(session, kind, target, payload)
    return True
