"""Routing of Blnk's HTTP paths, and the ledger and balance endpoints.

A handler receives the open database session and the request, and returns a
status with a JSON-ready body. Raising :class:`ApiError` returns an error response and
rolls back everything the request wrote; returning an error status keeps the
writes, which Blnk's bulk endpoint needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._apierror import ApiError
from ._filters import build_where, filters_from_body, filters_from_query
from ._records import BALANCE_COLUMNS, balance_json, ledger_json
from ._requests import BindError, bind, parse_json
from ._store import GENERAL_LEDGER_ID, Session, format_time, new_id, parse_rfc3339

__all__ = ["Reply", "Request", "Route", "list_page", "parse_target"]

Reply = tuple[int, Any]


@dataclass
class Request:
    """One HTTP request as the handlers see it.

    Attributes:
        method: upper-case HTTP method.
        segments: the path split on ``/`` with each segment percent-decoded.
        query: the query parameters in order, blank values kept.
        body: the raw request body.
    """

    method: str
    segments: list[str]
    query: list[tuple[str, str]]
    body: bytes

    def param(self, name: str, default: str) -> str:
        """Return the first value of a query parameter, or ``default``."""
        for key, value in self.query:
            if key == name:
                return value
        return default

    def json(self) -> Any:
        """Decode the body as JSON; raises :class:`BindError` when it is not."""
        return parse_json(self.body)


def parse_target(method: str, target: str, body: bytes) -> Request:
    """Split a request target (path and optional query) into a :class:`Request`."""
    parts = urlsplit(target)
    segments = [unquote(segment) for segment in parts.path.split("/") if segment]
    query = parse_qsl(parts.query, keep_blank_values=True)
    return Request(method.upper(), segments, query, body)


Handler = Callable[..., Reply]


@dataclass(frozen=True)
class Route:
    """A method and path pattern; ``{}`` segments are passed to the handler."""

    method: str
    pattern: tuple[str, ...]
    handler: Handler
    writes: bool

    def match(self, request: Request) -> list[str] | None:
        """Return the captured segments when the request matches, else None."""
        if request.method != self.method or len(request.segments) != len(self.pattern):
            return None
        captured = []
        for expected, actual in zip(self.pattern, request.segments, strict=True):
            if expected == "{}":
                captured.append(actual)
            elif expected != actual:
                return None
        return captured


def _malformed(exc: BindError, legacy_key: str = "error") -> ApiError:
    return ApiError("GEN_MALFORMED_REQUEST", str(exc), legacy_key=legacy_key)


def _validation(errors: dict[str, str], code: str = "GEN_VALIDATION_ERROR") -> ApiError:
    message = "; ".join(f"{name}: {errors[name]}" for name in sorted(errors)) + "."
    return ApiError(code, message, legacy_key="errors")


def list_page(
    session: Session,
    request: Request,
    table: str,
    columns: str,
    *,
    default_limit: int,
    strict: bool,
) -> list[tuple[Any, ...]]:
    """Return one page of a table, newest first, filtered by the query string.

    Args:
        strict: reject a bad ``limit``/``offset`` with 400, as the ledger and
            balance lists do; otherwise fall back to the defaults.
    """
    limit = _int_param(request, "limit", default_limit, strict, minimum=1)
    offset = _int_param(request, "offset", 0, strict, minimum=0)
    filters, logical, errors = filters_from_query(request.query)
    if errors:
        raise ApiError(
            "GEN_VALIDATION_ERROR",
            "invalid filter parameters",
            errors,
            legacy_key="errors",
            legacy_value=errors,
        )
    where, params = build_where(filters, logical, table)
    rows = session.conn.execute(
        f"SELECT {columns} FROM {table} WHERE {where}"
        " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    ).fetchall()
    return rows


def _int_param(
    request: Request, name: str, default: int, strict: bool, *, minimum: int
) -> int:
    text = request.param(name, str(default))
    value = int(text) if re.fullmatch(r"[+-]?\d+", text) else None
    if value is not None and value >= minimum:
        return value
    if strict:
        raise ApiError("GEN_VALIDATION_ERROR", f"Invalid {name} value")
    return default


def root(session: Session, request: Request) -> Reply:
    """``GET /``: Blnk's liveness response."""
    return 200, "server running..."


def health(session: Session, request: Request) -> Reply:
    """``GET /health``: the database responds, so the ledger is up."""
    session.conn.execute("SELECT 1").fetchone()
    return 200, {"status": "UP"}


_LEDGER_SELECT = "SELECT ledger_id, name, created_at, meta_data FROM ledgers"


def create_ledger(session: Session, request: Request) -> Reply:
    """``POST /ledgers``: names are not unique, as in Blnk."""
    try:
        raw = bind(
            request.json(), {"name": "str", "meta_data": "object"}, "CreateLedger"
        )
    except BindError as exc:
        raise _malformed(exc, "errors") from None
    if not raw["name"]:
        raise _validation({"name": "cannot be blank"})
    ledger_id, now = new_id("ldg"), session.now()
    meta = json.dumps(raw["meta_data"]) if raw["meta_data"] is not None else None
    session.conn.execute(
        "INSERT INTO ledgers (ledger_id, name, created_at, meta_data)"
        " VALUES (?, ?, ?, ?)",
        (ledger_id, raw["name"], now, meta),
    )
    return 201, ledger_json((ledger_id, raw["name"], now, meta))


def get_ledger(session: Session, request: Request, ledger_id: str) -> Reply:
    """``GET /ledgers/{id}``."""
    row = session.conn.execute(f"{_LEDGER_SELECT} WHERE ledger_id = ?", (ledger_id,))
    found = row.fetchone()
    if found is None:
        raise ApiError("LGR_NOT_FOUND", "Ledger not found")
    return 200, ledger_json(found)


def list_ledgers(session: Session, request: Request) -> Reply:
    """``GET /ledgers``: limit 10 by default, query-string filters."""
    rows = list_page(
        session,
        request,
        "ledgers",
        "ledger_id, name, created_at, meta_data",
        default_limit=10,
        strict=True,
    )
    return 200, [ledger_json(row) for row in rows]


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
        raise _malformed(exc) from None
    raw["allocation_strategy"] = (raw["allocation_strategy"] or "").strip().upper()
    raw["indicator"] = (raw["indicator"] or "").strip()
    errors = _balance_errors(raw)
    if errors:
        raise _validation(errors)
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
            f"{_LEDGER_SELECT} WHERE ledger_id = ?", (body["ledger_id"],)
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


def filter_table(session: Session, request: Request, table: str, columns: str) -> Any:
    """Run a ``POST /<table>/filter`` body and return its rows.

    Returns:
        A list of rows, or ``(rows, total_count)`` when ``include_count``.
    """
    try:
        body = request.json()
    except BindError as exc:
        raise ApiError("GEN_VALIDATION_ERROR", str(exc)) from None
    query = filters_from_body(body, table)
    where, params = build_where(query.filters, query.logical, table)
    sort_column = query.sort_by if query.sort_by in _SORTABLE[table] else "created_at"
    direction = "ASC" if query.sort_order == "asc" else "DESC"
    rows = session.conn.execute(
        f"SELECT {columns} FROM {table} WHERE {where}"
        f" ORDER BY {sort_column} {direction}, seq {direction} LIMIT ? OFFSET ?",
        (*params, query.limit, query.offset),
    ).fetchall()
    if not query.include_count:
        return rows
    total = session.conn.execute(
        f"SELECT COUNT(*) FROM {table} WHERE {where}", params
    ).fetchone()[0]
    return rows, int(total)


_SORTABLE = {
    "transactions": frozenset(
        [
            "transaction_id",
            "parent_transaction",
            "amount",
            "currency",
            "source",
            "destination",
            "reference",
            "status",
            "created_at",
            "effective_date",
            "description",
            "precision",
        ]
    ),
    "balances": frozenset(
        [
            "balance_id",
            "ledger_id",
            "identity_id",
            "indicator",
            "currency",
            "balance",
            "credit_balance",
            "debit_balance",
            "inflight_balance",
            "inflight_credit_balance",
            "inflight_debit_balance",
            "created_at",
        ]
    ),
    "ledgers": frozenset({"ledger_id", "name", "created_at"}),
}


def filter_balances(session: Session, request: Request) -> Reply:
    """``POST /balances/filter``."""
    result = filter_table(session, request, "balances", BALANCE_COLUMNS)
    if isinstance(result, tuple):
        rows, total = result
        return 200, {"data": [balance_json(row) for row in rows], "total_count": total}
    return 200, [balance_json(row) for row in result]


def filter_ledgers(session: Session, request: Request) -> Reply:
    """``POST /ledgers/filter``."""
    columns = "ledger_id, name, created_at, meta_data"
    result = filter_table(session, request, "ledgers", columns)
    if isinstance(result, tuple):
        rows, total = result
        return 200, {"data": [ledger_json(row) for row in rows], "total_count": total}
    return 200, [ledger_json(row) for row in result]


ROUTES = [
    Route("GET", (), root, False),
    Route("GET", ("health",), health, False),
    Route("POST", ("ledgers",), create_ledger, True),
    Route("GET", ("ledgers",), list_ledgers, False),
    Route("POST", ("ledgers", "filter"), filter_ledgers, False),
    Route("GET", ("ledgers", "{}"), get_ledger, False),
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
