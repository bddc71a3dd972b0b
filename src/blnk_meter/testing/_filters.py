"""Blnk's list filters: ``<field>_<op>=value`` query strings and the body DSL.

Filters become a SQLite ``WHERE`` clause. ``meta_data.<key>`` conditions and
``like``/``ilike`` call the functions of ``_sqlfunctions``, because their JSON
and pattern semantics follow PostgreSQL's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ._apierror import ApiError
from ._requests import BindError, bind
from ._store import INT64_MAX, format_time, parse_rfc3339

__all__ = [
    "Filter",
    "FilterQuery",
    "build_where",
    "filters_from_body",
    "filters_from_query",
]

_OPERATOR_ALIASES = {
    "eq": "eq",
    "ne": "ne",
    "neq": "ne",
    "gt": "gt",
    "gte": "gte",
    "gteq": "gte",
    "lt": "lt",
    "lte": "lte",
    "lteq": "lte",
    "in": "in",
    "between": "between",
    "like": "like",
    "ilike": "ilike",
    "isnull": "isnull",
    "isnotnull": "isnotnull",
}
_OPERATORS = frozenset(_OPERATOR_ALIASES.values())
_COMPARISONS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_RESERVED = frozenset(
    [
        "page",
        "pagesize",
        "per_page",
        "limit",
        "offset",
        "sort",
        "order",
        "order_by",
        "order_dir",
        "logical_operator",
        "instance_id",
        "org_id",
    ]
)

FIELDS = {
    "transactions": frozenset(
        [
            "transaction_id",
            "parent_transaction",
            "amount",
            "currency",
            "source",
            "destination",
            "balance_id",
            "reference",
            "status",
            "created_at",
            "effective_date",
            "indicator",
            "description",
            "precision",
            "meta_data",
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
            "meta_data",
        ]
    ),
    "ledgers": frozenset(["ledger_id", "name", "created_at", "meta_data"]),
}
_TIMESTAMP_FIELDS = frozenset({"created_at", "effective_date"})
_JSON_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
_NANOSECONDS = re.compile(r"(\.\d{6})\d+$")
_DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
)


@dataclass(frozen=True)
class Stamp:
    """A query-string value that parsed as a time, with its precision."""

    moment: datetime
    original: str
    step: timedelta


@dataclass
class Filter:
    """One condition: field, canonical operator, and a value or values."""

    field: str
    operator: str
    value: Any = None
    values: list[Any] | None = None


@dataclass
class FilterQuery:
    """A parsed ``POST .../filter`` body."""

    filters: list[Filter]
    logical: str
    limit: int
    offset: int
    sort_by: str
    sort_order: str
    include_count: bool


def parse_time(text: str) -> datetime | None:
    """Parse the timestamp forms Blnk's filters accept; zone-less means UTC."""
    moment = parse_rfc3339(text)
    if moment is not None:
        return moment
    text = _NANOSECONDS.sub(r"\1", text)
    for layout in _DATE_FORMATS:
        try:
            return datetime.strptime(text, layout).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def _step(text: str) -> timedelta:
    if "." in text:
        return timedelta(microseconds=1 if len(text.split(".")[1]) >= 6 else 1000)
    colons = text.count(":")
    if colons >= 2:
        return timedelta(seconds=1)
    if colons == 1:
        return timedelta(minutes=1)
    return timedelta(hours=1) if ("T" in text or " " in text) else timedelta(days=1)


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    moment = parse_time(text)
    if moment is not None:
        return Stamp(moment, text, _step(text))
    return text


def filters_from_query(
    pairs: list[tuple[str, str]],
) -> tuple[list[Filter], str, list[dict[str, str]]]:
    """Parse ``<field>_<op>=value`` query parameters.

    Returns:
        The filters, the logical operator and Blnk's parse errors
        (``{"Param", "Message"}``); parameters without a known operator are
        ignored.
    """
    filters: list[Filter] = []
    errors: list[dict[str, str]] = []
    logical = "and"
    first: dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    raw_logical = first.get("logical_operator", "").strip().lower()
    if raw_logical in ("and", "or"):
        logical = raw_logical
    elif raw_logical:
        message = "invalid logical_operator: must be 'and' or 'or'"
        errors.append({"Param": "logical_operator", "Message": message})
    for key, value in first.items():
        field, _, op_text = key.rpartition("_")
        operator = _OPERATOR_ALIASES.get(op_text)
        if key.lower() in _RESERVED or not field or operator is None:
            continue
        error = _query_filter(filters, field, operator, value)
        if error:
            errors.append({"Param": key, "Message": error})
    return filters, logical, errors


def _query_filter(filters: list[Filter], field: str, operator: str, value: str) -> str:
    if len(filters) >= 20:
        return "exceeded maximum number of filters (20)"
    if len(value) > 1000:
        return "value exceeds maximum length (1000 chars)"
    if operator == "between":
        parts = value.split("|")
        if len(parts) != 2:
            return (
                "between operator requires exactly 2 pipe-separated values"
                " (value1|value2)"
            )
        filters.append(Filter(field, operator, values=[_parse_value(p) for p in parts]))
    elif operator == "in":
        parts = value.split(",")
        if len(parts) > 100:
            return "IN operator exceeds maximum values (100)"
        values = [_parse_value(part.strip()) for part in parts]
        filters.append(Filter(field, operator, values=values))
    elif operator in ("isnull", "isnotnull"):
        filters.append(Filter(field, operator))
    else:
        filters.append(Filter(field, operator, value=_parse_value(value)))
    return ""


_BODY_SPEC = {
    "filters": "list",
    "logical_operator": "str",
    "limit": "int",
    "offset": "int",
    "sort_by": "str",
    "sort_order": "str",
    "include_count": "bool",
}
_FILTER_SPEC = {"field": "str", "operator": "str", "value": "any", "values": "list"}


def filters_from_body(body: Any, table: str) -> FilterQuery:
    """Parse a filter body; ``limit`` outside 1..100 becomes 20, as in Blnk.

    Raises:
        ApiError: the body does not bind or names an invalid logical operator.
    """
    try:
        raw = bind(body, _BODY_SPEC, "FilterRequest")
        entries = [
            bind(item, _FILTER_SPEC, "QueryFilter") for item in raw["filters"] or []
        ]
    except BindError as exc:
        raise ApiError("GEN_VALIDATION_ERROR", str(exc)) from None
    logical = (raw["logical_operator"] or "").strip().lower() or "and"
    if logical not in ("and", "or"):
        raise ApiError(
            "GEN_VALIDATION_ERROR", "invalid logical_operator: must be 'and' or 'or'"
        )
    limit = raw["limit"] or 0
    sort_by = (raw["sort_by"] or "").strip().lower()
    sort_order = (raw["sort_order"] or "").strip().lower()
    return FilterQuery(
        filters=[
            Filter(e["field"] or "", e["operator"] or "", e["value"], e["values"])
            for e in entries
        ],
        logical=logical,
        limit=limit if 0 < limit <= 100 else 20,
        offset=max(raw["offset"] or 0, 0),
        sort_by=sort_by if sort_by in FIELDS[table] else "",
        sort_order=sort_order if sort_order in ("asc", "desc") else "desc",
        include_count=bool(raw["include_count"]),
    )


def _invalid(message: str) -> ApiError:
    return ApiError("GEN_BAD_REQUEST", f"Invalid filter: {message}")


def _validate(item: Filter, table: str) -> None:
    if item.operator not in _OPERATORS:
        raise _invalid(
            f"invalid operator '{item.operator}' for field '{item.field}': must be one"
            " of eq, ne, gt, gte, lt, lte, in, between, like, ilike, isnull, isnotnull"
        )
    if item.operator == "in" and not item.values:
        raise _invalid(
            f"operator 'in' for field '{item.field}' requires at least one value in"
            " 'values'"
        )
    if item.operator == "between" and len(item.values or []) != 2:
        raise _invalid(
            f"operator 'between' for field '{item.field}' requires exactly two values"
            f" in 'values', got {len(item.values or [])}"
        )
    if (
        table == "transactions"
        and item.field == "balance_id"
        and item.operator not in ("eq", "ne", "in", "isnull", "isnotnull")
    ):
        raise _invalid(
            f"operator '{item.operator}' is not supported for field 'balance_id'"
            " on transactions: must be one of eq, ne, in, isnull, isnotnull"
        )
    if item.field.startswith("meta_data."):
        key = item.field.removeprefix("meta_data.")
        if not _JSON_KEY.match(key):
            raise _invalid(
                f"invalid JSON key '{key}' in field '{item.field}': must match"
                " pattern ^[a-zA-Z][a-zA-Z0-9_]*$"
            )
    elif item.field not in FIELDS[table]:
        raise _invalid(f"invalid field '{item.field}' for table '{table}'")


def _column_value(field: str, value: Any) -> Any:
    if field in _TIMESTAMP_FIELDS:
        moment = value.moment if isinstance(value, Stamp) else None
        if isinstance(value, str):
            moment = parse_time(value)
        if moment is None:
            raise _invalid(f"value {value!r} for field '{field}' is not a timestamp")
        return format_time(moment)
    if isinstance(value, Stamp):
        return value.original
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _condition(item: Filter, column: str) -> tuple[str, list[Any]]:
    op = item.operator
    if op in ("isnull", "isnotnull"):
        return f"{column} IS {'NOT ' if op == 'isnotnull' else ''}NULL", []
    if op == "in":
        values = [_column_value(item.field, v) for v in item.values or []]
        return f"{column} IN ({', '.join('?' * len(values))})", values
    if op == "between":
        low, high = (_column_value(item.field, v) for v in item.values or [])
        return f"{column} BETWEEN ? AND ?", [low, high]
    if op in ("like", "ilike"):
        return f"blnk_like({column}, ?, ?)", [str(item.value), op == "ilike"]
    if op == "eq" and isinstance(item.value, Stamp) and item.field in _TIMESTAMP_FIELDS:
        low, high = _stamp_range(item.value)
        return f"{column} >= ? AND {column} < ?", [format_time(low), format_time(high)]
    return f"{column} {_COMPARISONS[op]} ?", [_column_value(item.field, item.value)]


def _stamp_range(stamp: Stamp) -> tuple[datetime, datetime]:
    moment = stamp.moment.astimezone(timezone.utc)
    if stamp.step >= timedelta(days=1):
        floor = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        floor = epoch + ((moment - epoch) // stamp.step) * stamp.step
    return floor, floor + stamp.step


def _virtual(item: Filter, table: str) -> tuple[str, list[Any]] | None:
    if table != "transactions" or item.field not in ("balance_id", "indicator"):
        return None
    if item.field == "indicator":
        inner, params = _condition(item, "indicator")
        subquery = f"SELECT balance_id FROM balances WHERE {inner}"
        return f"(source IN ({subquery}) OR destination IN ({subquery}))", params * 2
    if item.operator == "ne":
        return "(source != ? AND destination != ?)", [item.value] * 2
    if item.operator == "isnotnull":
        return "(source IS NOT NULL OR destination IS NOT NULL)", []
    if item.operator == "isnull":
        return "(source IS NULL AND destination IS NULL)", []
    source, params = _condition(item, "source")
    destination, _ = _condition(item, "destination")
    return f"({source} OR {destination})", params * 2


def _meta(item: Filter) -> tuple[str, list[Any]]:
    key = item.field.removeprefix("meta_data.")
    argument: Any = item.values if item.operator in ("in", "between") else item.value
    return "blnk_meta(meta_data, ?, ?, ?)", [key, item.operator, _encode(argument)]


def _encode(argument: Any) -> str:
    if isinstance(argument, Stamp):
        low, high = _stamp_range(argument)
        return json.dumps({"$range": [format_time(low), format_time(high)]})
    if isinstance(argument, list):
        return json.dumps([a.original if isinstance(a, Stamp) else a for a in argument])
    return json.dumps(argument)


def build_where(
    filters: list[Filter], logical: str, table: str
) -> tuple[str, list[Any]]:
    """Return a SQL condition and its parameters; ``1`` when there are no filters.

    Raises:
        ApiError: a field, operator or value is invalid (``GEN_BAD_REQUEST``).
    """
    parts: list[str] = []
    params: list[Any] = []
    for item in filters:
        _validate(item, table)
        if item.field.startswith("meta_data."):
            sql, values = _meta(item)
        else:
            sql, values = _virtual(item, table) or _condition(item, item.field)
        parts.append(f"({sql})")
        params.extend(_sqlite_number(value) for value in values)
    if not parts:
        return "1", []
    return f" {'OR' if logical == 'or' else 'AND'} ".join(parts), params


def _sqlite_number(value: Any) -> Any:
    """Return ``value``, as a float when it is an int too large for SQLite.

    PostgreSQL compares such numbers with its numeric columns. Every stored
    amount fits in 64 bits, so an infinity of the same sign compares the same
    way with each of them.
    """
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    if is_integer and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return float("inf") if value > 0 else float("-inf")
    return value
