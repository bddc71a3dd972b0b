"""Typed helpers on the embedded ledger that call its HTTP API.

They go through :meth:`EmbeddedLedger.handle`, so they exercise the same
code as any client, and raise :mod:`blnk_meter.errors` exceptions when the
ledger returns an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import (
    DuplicateReferenceError,
    InsufficientFundsError,
    LedgerAuthError,
    LedgerError,
    LedgerRejectedError,
    LedgerUnavailableError,
)
from ._store import INT64_MAX

__all__ = ["ConvenienceMixin", "ledger_error"]


def ledger_error(
    method: str, target: str, status: int, response: bytes, body: Any
) -> LedgerError:
    """Return the exception for an error response of the ledger."""
    try:
        detail = json.loads(response).get("error_detail") or {}
    except (ValueError, AttributeError):
        detail = {}
    code = detail.get("code")
    message = detail.get("message") or response.decode("utf-8", "replace")
    path = target.split("?", 1)[0]
    text = f"{method} {path} failed with {status} {code or ''}: {message!r}"
    references: tuple[str, ...] = ()
    if isinstance(body, Mapping) and isinstance(body.get("reference"), str):
        references = (body["reference"],)
    kind: type[LedgerError] = LedgerRejectedError
    if status in (401, 403):
        kind = LedgerAuthError
    elif code == "TXN_INSUFFICIENT_FUNDS":
        kind = InsufficientFundsError
    elif code == "TXN_DUPLICATE_REFERENCE":
        kind = DuplicateReferenceError
    elif status >= 500 or status in (423, 429):
        kind = LedgerUnavailableError
    return kind(text, status=status, code=code, references=references)


class ConvenienceMixin:
    """Ledger, balance and transaction helpers for demos and test setup."""

    def _call(self, method: str, target: str, body: Any = None) -> Any:
        raise NotImplementedError

    @staticmethod
    def _decode(
        method: str, target: str, status: int, response: bytes, body: Any
    ) -> Any:
        if status >= 400:
            raise ledger_error(method, target, status, response, body)
        return json.loads(response)

    def create_ledger(
        self, name: str, meta_data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create a ledger (``POST /ledgers``) and return it.

        Raises:
            LedgerRejectedError: the name is empty.
        """
        body: dict[str, Any] = {"name": name}
        if meta_data is not None:
            body["meta_data"] = dict(meta_data)
        result: dict[str, Any] = self._call("POST", "/ledgers", body)
        return result

    def create_balance(
        self,
        ledger_id: str,
        currency: str,
        *,
        indicator: str | None = None,
        meta_data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a balance (``POST /balances``) and return it.

        Args:
            ledger_id: the ledger; ``general_ledger_id`` for an indicator.
            currency: any currency code, e.g. ``USD`` or ``TOKENS``.
            indicator: an ``@name`` for a general-ledger balance. Blnk's main
                branch accepts it, but Blnk v0.15.2 ignores it and creates a
                balance without one.
            meta_data: free-form data stored with the balance.

        Raises:
            LedgerRejectedError: the ledger is unknown, the indicator invalid
                or already used for this currency.
        """
        body: dict[str, Any] = {"ledger_id": ledger_id, "currency": currency}
        if indicator is not None:
            body["indicator"] = indicator
        if meta_data is not None:
            body["meta_data"] = dict(meta_data)
        result: dict[str, Any] = self._call("POST", "/balances", body)
        return result

    def get_balance(self, balance_id: str) -> dict[str, Any]:
        """Return a balance (``GET /balances/{id}``); amounts in minor units.

        Raises:
            LedgerRejectedError: no balance has this id (404).
        """
        result: dict[str, Any] = self._call("GET", f"/balances/{quote(balance_id)}")
        return result

    def get_balance_by_indicator(self, indicator: str, currency: str) -> dict[str, Any]:
        """Return the general-ledger balance of an indicator such as ``@World``.

        Raises:
            LedgerRejectedError: no transaction or request created it yet (404).
        """
        target = (
            f"/balances/indicator/{quote(indicator, safe='')}"
            f"/currency/{quote(currency, safe='')}"
        )
        result: dict[str, Any] = self._call("GET", target)
        return result

    def record_transaction(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Post a transaction body (``POST /transactions``) exactly as given.

        Pass ``skip_queue: True`` to have it applied before this returns;
        without it the transaction comes back QUEUED, as in Blnk.

        Raises:
            InsufficientFundsError: the source cannot pay (``skip_queue``).
            DuplicateReferenceError: the reference is used (``skip_queue``).
            LedgerRejectedError: the body is invalid.
        """
        result: dict[str, Any] = self._call("POST", "/transactions", dict(body))
        return result

    def transactions(self, **filters: Any) -> list[dict[str, Any]]:
        """Return transactions matching query-string filters, newest first.

        Keyword names are Blnk's ``<field>_<op>`` parameters, e.g.
        ``status_eq="APPLIED"`` or ``parent_transaction_eq=batch_id``. Every
        matching row is returned, read in one request and so from one
        consistent snapshot: rows written meanwhile neither shift nor repeat
        rows in the list. Passing ``limit`` or ``offset`` returns that one
        page instead.

        Raises:
            LedgerRejectedError: a filter is invalid.
        """
        params = {key: _query_value(value) for key, value in filters.items()}
        if "limit" not in params and "offset" not in params:
            # GET /transactions has no maximum limit, and the ledger runs each
            # request in one SQLite read transaction, so one page returns all
            # rows from one snapshot.
            params["limit"] = str(INT64_MAX)
        rows: list[dict[str, Any]] = self._call(
            "GET", f"/transactions?{urlencode(params)}"
        )
        return rows


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)
