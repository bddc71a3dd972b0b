"""Dry runs: the effect a request would have, computed and then discarded.

A dry run executes the real code inside a SQLite savepoint and rolls it back,
so the projection follows exactly the rules a real request would meet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._apierror import LedgerFailure, classify_message
from ._postings import Balance, find_indicator, load_balance
from ._records import Txn, json_number
from ._store import Session

__all__ = ["project", "rejection_reason"]


class _Discard(Exception):
    """Raised inside the savepoint to roll back a projection that succeeded."""


def rejection_reason(message: str) -> str:
    """Return Blnk's short category of a rejection message."""
    lowered = message.lower()
    if "insufficient funds" in lowered:
        return "insufficient_funds"
    if "overdraft limit" in lowered:
        return "overdraft_limit"
    if "failed to acquire lock" in lowered:
        return "lock_contention"
    if "exceeded max" in lowered:
        return "max_retries"
    return "other"


def _current(session: Session, identifier: str, currency: str) -> Balance | None:
    if identifier.startswith("@"):
        return find_indicator(session, identifier, currency)
    return load_balance(session, identifier)


def _amounts(prefix: str, balance: Balance | None) -> dict[str, str]:
    if balance is None:
        values = dict.fromkeys(
            ("balance", "credit", "debit", "in_debit", "in_credit"), 0
        )
    else:
        values = {
            "balance": balance.balance,
            "credit": balance.credit_balance,
            "debit": balance.debit_balance,
            "in_debit": balance.inflight_debit_balance,
            "in_credit": balance.inflight_credit_balance,
        }
    return {
        f"{prefix}_balance": str(values["balance"]),
        f"{prefix}_available": str(values["balance"] - values["in_debit"]),
        f"{prefix}_credit_balance": str(values["credit"]),
        f"{prefix}_debit_balance": str(values["debit"]),
        f"{prefix}_inflight_debit_balance": str(values["in_debit"]),
        f"{prefix}_inflight_credit_balance": str(values["in_credit"]),
    }


def _projection(
    role: str,
    identifier: str,
    currency: str,
    before: Balance | None,
    after: Balance | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "balance_id": after.balance_id if after else identifier,
        "role": role,
        "currency": currency,
    }
    if before is None:
        entry["virtual"] = True
    entry.update(_amounts("current", before))
    entry.update(_amounts("resulting", after if after is not None else before))
    return entry


def project(
    session: Session,
    subject: Txn,
    run: Callable[[], Txn],
    *,
    keep: bool = False,
    operation: str | None = None,
) -> dict[str, Any]:
    """Run ``run`` and report its effect on the balances of ``subject``.

    Args:
        subject: the transaction as requested; its source and destination
            name the balances to report.
        run: performs the real operation and returns the stored row.
        keep: leave the effect in place, for a batch projected cumulatively;
            the caller then discards the whole batch.
        operation: ``commit`` or ``void`` for an inflight projection.

    Returns:
        Blnk's preview object; a rejection is reported, not raised.
    """
    before = {
        "source": _current(session, subject.source, subject.currency),
        "destination": _current(session, subject.destination, subject.currency),
    }
    preview: dict[str, Any] = {"dry_run": True, "would_apply": True}
    if operation:
        preview["operation"] = operation
    result: Txn | None = None
    after: dict[str, Balance | None] = {"source": None, "destination": None}
    try:
        with session.savepoint():
            result = run()
            after["source"] = load_balance(session, result.source)
            after["destination"] = load_balance(session, result.destination)
            if not keep:
                raise _Discard
    except _Discard:
        pass
    except LedgerFailure as exc:
        result = None
        preview["would_apply"] = False
        preview["rejection"] = {
            "code": exc.code or classify_message(exc.message) or "TXN_VALIDATION_ERROR",
            "reason": rejection_reason(exc.message),
            "message": exc.api_message or exc.message,
        }
    reported = result or subject
    if result is not None:
        preview["status"] = result.status
    preview.update(
        reference=subject.reference,
        currency=reported.currency,
        amount=json_number(reported.amount),
        precise_amount=str(reported.precise_amount),
        precision=reported.precision,
    )
    preview["balances"] = [
        _projection(
            role, getattr(subject, role), subject.currency, before[role], after[role]
        )
        for role in ("source", "destination")
    ]
    return preview
