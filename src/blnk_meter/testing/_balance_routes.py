"""The balance endpoints: create, read, list, filter and historical balance."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from ._apierror import ApiError
from ._records import BALANCE_COLUMNS, balance_json, ledger_json
from ._requests import BindError, bind
from ._routes import (
    LEDGER_SELECT,
    Reply,
    Request,
    Route,
    filter_table,
    list_page,
    malformed,
    validation_error,
)
from ._store import GENERAL_LEDGER_ID, Session, format_time, new_id, parse_rfc3339

__all__ = ["BALANCE_ROUTES"]

_BALANCE_SPEC = {
    "ledger_id": "str",
    "currency": "str",
    "identity_id": "str",
    "meta_data": "object",
    "precision": "float",
    "indicator": "str",
    "track_fund_lineage": "bool",
    "allocation_strategy": "str",
}


def _balance_errors(raw: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name in ("ledger_id", "currency"):
        if not raw[name]:
            errors[name] = "cannot be blank"
    if raw["track_fund_lineage"] and not raw["identity_id"]:
        errors["identity_id"] = (
            "identity_id is required when track_fund_lineage is enabled"
        )
    if raw["allocation_strategy"] not in ("", "FIFO", "LIFO", "PROPORTIONAL"):
        errors["allocation_strategy"] = (
            "allocation_strategy must be one of: FIFO, LIFO, PROPORTIONAL"
        )
    indicator = raw["indicator"]
    if indicator and raw["ledger_id"] != GENERAL_LEDGER_ID:
        errors["indicator"] = (
            "indicator is only allowed for General Ledger balances"
            " (ledger_id = general_ledger_id)"
        )
    elif indicator and not re.fullmatch(r"@\S+", indicator):
        errors["indicator"] = (
            "indicator must start with '@' and contain no whitespace (e.g. '@cash')"
        )
    return errors


def _read_balance_body(request: Request) -> dict[str, Any]:
    try:
        raw = bind(request.json(), _BALANCE_SPEC, "CreateBalance")
    except BindError as exc:
        raise malformed(exc) from None
    raw["allocation_strategy"] = (raw["allocation_strategy"] or "").strip().upper()
    raw["indicator"] = (raw["indicator"] or "").strip()
    errors = _balance_errors(raw)
    if errors:
        raise validation_error(errors)
    return raw


def _check_balance_target(session: Session, raw: dict[str, Any]) -> None:
    ledger = session.conn.execute(
        "SELECT 1 FROM ledgers WHERE ledger_id = ?", (raw["ledger_id"],)
    ).fetchone()
    if ledger is None:
        raise ApiError("GEN_BAD_REQUEST", "Invalid ledger ID")
    duplicate = session.conn.execute(
        "SELECT 1 FROM balances"
        " WHERE indicator = ? AND currency = ? AND indicator != ''",
        (raw["indicator"], raw["currency"]),
    ).fetchone()
    if duplicate is not None:
        raise ApiError(
            "GEN_CONFLICT",
            f"Balance already exists for indicator '{raw['indicator']}'"
            f" and '{raw['currency']}'",
        )


def create_balance(session: Session, request: Request) -> Reply:
    """``POST /balances``: one indicator per currency; ``precision`` is ignored."""
    raw = _read_balance_body(request)
    _check_balance_target(session, raw)

    balance_id = new_id("bln")
    meta = json.dumps(raw["meta_data"]) if raw["meta_data"] is not None else None
    session.conn.execute(
        "INSERT INTO balances (balance_id, ledger_id, identity_id, indicator, currency,"
        " created_at, meta_data, track_fund_lineage, allocation_strategy)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            balance_id,
            raw["ledger_id"],
            raw["identity_id"] or "",
            raw["indicator"],
            raw["currency"],
            session.now(),
            meta,
            int(bool(raw["track_fund_lineage"])),
            raw["allocation_strategy"] or "FIFO",
        ),
    )

    row = session.conn.execute(
        f"SELECT {BALANCE_COLUMNS} FROM balances WHERE balance_id = ?", (balance_id,)
    ).fetchone()
    body = balance_json(row)
    # Blnk builds this response in memory, before the database sets version 1.
    body["version"] = 0
    return 201, body


def _queued_amounts(session: Session, balance_id: str) -> tuple[int, int]:
    pending = (
        "status = 'QUEUED' AND NOT EXISTS (SELECT 1 FROM transactions AS child"
        " WHERE child.parent_transaction = transactions.transaction_id"
        " AND child.status IN ('APPLIED', 'REJECTED', 'VOID', 'INFLIGHT'))"
    )
    row = session.conn.execute(
        "SELECT"
        f" (SELECT COALESCE(SUM(precise_amount), 0) FROM transactions"
        f" WHERE source = ? AND {pending}),"
        f" (SELECT COALESCE(SUM(precise_amount), 0) FROM transactions"
        f" WHERE destination = ? AND source != ? AND {pending})",
        (balance_id, balance_id, balance_id),
    ).fetchone()
    return int(row[0]), int(row[1])


def get_balance(session: Session, request: Request, balance_id: str) -> Reply:
    """``GET /balances/{id}``: ``with_queued`` and ``include=ledger`` supported."""
    row = session.conn.execute(
        f"SELECT {BALANCE_COLUMNS} FROM balances WHERE balance_id = ?", (balance_id,)
    ).fetchone()
    if row is None:
        raise ApiError("BAL_NOT_FOUND", f"Balance with ID '{balance_id}' not found")
    body = balance_json(row)
    if request.param("with_queued", "false") == "true":
        debit, credit = _queued_amounts(session, balance_id)
        body["queued_debit_balance"] = debit
        body["queued_credit_balance"] = credit
    includes = [value for key, value in request.query if key == "include"]
    if "ledger" in includes:
        ledger = session.conn.execute(
            f"{LEDGER_SELECT} WHERE ledger_id = ?", (body["ledger_id"],)
        ).fetchone()
        body["ledger"] = ledger_json(ledger) if ledger else None
    return 200, body


def get_balance_by_indicator(
    session: Session, request: Request, indicator: str, currency: str
) -> Reply:
    """``GET /balances/indicator/{indicator}/currency/{currency}``; never creates."""
    row = session.conn.execute(
        f"SELECT {BALANCE_COLUMNS} FROM balances WHERE indicator = ? AND currency = ?",
        (indicator, currency),
    ).fetchone()
    if row is None:
        raise ApiError(
            "BAL_NOT_FOUND", f"balance with indicator '{indicator}' not found"
        )
    return 200, balance_json(row, with_meta=False)


def balance_at(session: Session, request: Request, balance_id: str) -> Reply:
    """``GET /balances/{id}/at``: sums of APPLIED rows up to the timestamp.

    Rows count by ``COALESCE(effective_date, created_at)``. There are no
    snapshots, so ``from_source`` changes nothing but the echoed flag.
    """
    text = request.param("timestamp", "")
    moment = parse_rfc3339(text) if text else session.clock()
    if moment is None:
        raise ApiError(
            "BAL_INVALID_TIMESTAMP",
            "invalid timestamp format. Please use ISO 8601 format"
            " (e.g., 2024-01-01T15:04:05Z)",
        )
    found = session.conn.execute(
        "SELECT currency FROM balances WHERE balance_id = ?", (balance_id,)
    ).fetchone()
    if found is None:
        raise ApiError("BAL_NOT_FOUND", f"Balance with ID '{balance_id}' not found")
    cutoff = format_time(moment)
    sums = session.conn.execute(
        "SELECT"
        " COALESCE(SUM(CASE WHEN destination = ? THEN precise_amount END), 0),"
        " COALESCE(SUM(CASE WHEN source = ? THEN precise_amount END), 0)"
        " FROM transactions WHERE status = 'APPLIED'"
        " AND (source = ? OR destination = ?)"
        " AND COALESCE(effective_date, created_at) <= ?",
        (balance_id, balance_id, balance_id, balance_id, cutoff),
    ).fetchone()
    credit, debit = int(sums[0]), int(sums[1])
    from_source = request.param("from_source", "") in ("true", "1")
    return 200, {
        "balance": {
            "balance": credit - debit,
            "debit_balance": debit,
            "credit_balance": credit,
            "currency": found[0],
            "balance_id": balance_id,
        },
        "timestamp": _rfc3339_seconds(moment),
        "from_source": from_source,
    }


def _rfc3339_seconds(moment: datetime) -> str:
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def list_balances(session: Session, request: Request) -> Reply:
    """``GET /balances``: limit 10 by default, query-string filters."""
    rows = list_page(
        session, request, "balances", BALANCE_COLUMNS, default_limit=10, strict=True
    )
    return 200, [balance_json(row) for row in rows]


def filter_balances(session: Session, request: Request) -> Reply:
    """``POST /balances/filter``."""
    result = filter_table(session, request, "balances", BALANCE_COLUMNS)
    if isinstance(result, tuple):
        rows, total = result
        return 200, {"data": [balance_json(row) for row in rows], "total_count": total}
    return 200, [balance_json(row) for row in result]


BALANCE_ROUTES = [
    Route("POST", ("balances",), create_balance, True),
    Route("GET", ("balances",), list_balances, False),
    Route("POST", ("balances", "filter"), filter_balances, False),
    Route("GET", ("balances", "{}"), get_balance, False),
    Route("GET", ("balances", "{}", "at"), balance_at, False),
    Route(
        "GET",
        ("balances", "indicator", "{}", "currency", "{}"),
        get_balance_by_indicator,
        False,
    ),
]
