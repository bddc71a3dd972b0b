"""SQL functions that give the filters PostgreSQL's semantics on SQLite.

Blnk filters ``meta_data`` with PostgreSQL's JSON operators and text with
``LIKE``/``ILIKE``. SQLite has neither with the same meaning, so these Python
functions are registered on the ledger's connection and called from the
``WHERE`` clauses that ``_filters`` builds.
"""

from __future__ import annotations

import json
import re
import sqlite3
from decimal import Decimal, InvalidOperation
from typing import Any

from ._filters import parse_time
from ._store import format_time

__all__ = ["register_functions"]


def _like(value: Any, pattern: str, ignore_case: int) -> int:
    if value is None:
        return 0
    wildcards = {"%": ".*", "_": "."}
    regex = "".join(wildcards.get(char) or re.escape(char) for char in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return int(re.fullmatch(regex, str(value), flags) is not None)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _as_number(value: Any) -> Decimal | None:
    try:
        return Decimal(_as_text(value))
    except InvalidOperation:
        return None


def _contains(value: Any, expected: Any) -> bool:
    """Return whether JSON ``value`` contains ``expected``, as PostgreSQL ``@>``."""
    if isinstance(expected, dict):
        return isinstance(value, dict) and all(
            key in value and _contains(value[key], item)
            for key, item in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(value, list) and all(
            any(_contains(have, item) for have in value) for item in expected
        )
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return bool(value == expected)
    return type(value) is type(expected) and bool(value == expected)


def _meta_match(meta_text: str, key: str, operator: str, argument_text: str) -> int:
    meta = json.loads(meta_text or "{}")
    value = meta.get(key)
    argument = json.loads(argument_text)
    if operator in ("isnull", "isnotnull"):
        return int((value is None) == (operator == "isnull"))
    if value is None:
        return 0
    if operator == "eq":
        if isinstance(argument, dict) and "$range" in argument:
            moment = parse_time(_as_text(value))
            low, high = argument["$range"]
            return int(moment is not None and low <= format_time(moment) < high)
        return int(_contains(value, argument))
    if operator == "ne":
        return int(_as_text(value) != _as_text(argument))
    if operator == "in":
        return int(_as_text(value) in [_as_text(item) for item in argument])
    if operator in ("like", "ilike"):
        return _like(_as_text(value), _as_text(argument), operator == "ilike")
    number = _as_number(value)
    bounds = [
        _as_number(item) for item in (argument if operator == "between" else [argument])
    ]
    if number is None or any(bound is None for bound in bounds):
        return 0
    if operator == "between":
        return int(bounds[0] <= number <= bounds[1])  # type: ignore[operator]
    return int(_COMPARE[operator](number, bounds[0]))


_COMPARE = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def register_functions(conn: sqlite3.Connection) -> None:
    """Register ``blnk_like`` and ``blnk_meta`` on a connection."""
    conn.create_function("blnk_like", 3, _like, deterministic=True)
    conn.create_function("blnk_meta", 4, _meta_match, deterministic=True)
