"""Routing of Blnk's HTTP paths, list helpers, and the ledger endpoints.

A handler receives the open database session and the request, and returns a
status with a JSON-ready body. Raising :class:`ApiError` returns an error
response and rolls back everything the request wrote. Returning an error
status instead keeps the writes, which Blnk's bulk endpoint needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._apierror import ApiError
from ._filters import build_where, filters_from_body, filters_from_query
from ._records import ledger_json
from ._requests import BindError, bind, parse_json
from ._store import INT64_MAX, Session, new_id

__all__ = [
    "LEDGER_SELECT",
    "ROUTES",
    "Reply",
    "Request",
    "Route",
    "filter_table",
    "list_page",
    "malformed",
    "parse_target",
    "validation_error",
]

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


def malformed(exc: BindError, legacy_key: str = "error") -> ApiError:
    return ApiError("GEN_MALFORMED_REQUEST", str(exc), legacy_key=legacy_key)


def validation_error(
    errors: dict[str, str], code: str = "GEN_VALIDATION_ERROR"
) -> ApiError:
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
    # Go's strconv.Atoi rejects what does not fit in 64 bits.
    value = int(text) if re.fullmatch(r"[+-]?\d{1,19}", text) else None
    if value is not None and minimum <= value <= INT64_MAX:
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


LEDGER_SELECT = "SELECT ledger_id, name, created_at, meta_data FROM ledgers"


def create_ledger(session: Session, request: Request) -> Reply:
    """``POST /ledgers``: names are not unique, as in Blnk."""
    try:
        raw = bind(
            request.json(), {"name": "str", "meta_data": "object"}, "CreateLedger"
        )
    except BindError as exc:
        raise malformed(exc, "errors") from None
    if not raw["name"]:
        raise validation_error({"name": "cannot be blank"})
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
    row = session.conn.execute(f"{LEDGER_SELECT} WHERE ledger_id = ?", (ledger_id,))
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
]
