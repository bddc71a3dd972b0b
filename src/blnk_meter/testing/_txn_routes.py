"""The transaction endpoints: create, read, list, bulk, inflight and refund."""

from __future__ import annotations

from typing import Any

from ._apierror import ApiError, LedgerFailure
from ._bulk import start_bulk
from ._inflight import (
    Action,
    classify_inflight_error,
    commit_or_void,
    inflight_legs,
    queue_action,
    requested_amount,
    settle_legs,
)
from ._postings import find_txn, queue_transaction, record
from ._preview import project
from ._records import TXN_COLUMNS, Txn, txn_from_row, txn_json
from ._refunds import refund_all, refundable_rows
from ._requests import (
    BindError,
    bind,
    build_txn,
    read_txn_request,
    validate_txn_request,
)
from ._routes import Reply, Request, Route, filter_table, list_page
from ._store import Session

__all__ = ["TXN_ROUTES"]

_NOT_FOUND_UPGRADE = {"GEN_NOT_FOUND": "TXN_NOT_FOUND"}
_BULK_INFLIGHT_LIMIT = 100


def _fail(exc: LedgerFailure, default: str) -> ApiError:
    return exc.to_api_error(default=default, upgrades=_NOT_FOUND_UPGRADE)


def create_transaction(session: Session, request: Request) -> Reply:
    """``POST /transactions``: queued by default, synchronous with ``skip_queue``."""
    try:
        txn_request = read_txn_request(request.json())
    except BindError:
        raise ApiError("GEN_MALFORMED_REQUEST", "Invalid input") from None
    error = validate_txn_request(txn_request)
    if error is not None:
        raise error
    txn = build_txn(txn_request, session.now())
    if txn_request.dry_run:
        return 200, project(session, txn, lambda: record(session, txn.copy()))
    try:
        created = queue_transaction(session, txn)
    except LedgerFailure as exc:
        raise _fail(exc, "TXN_VALIDATION_ERROR") from None
    return 201, txn_json(created, "created")


def get_transaction(session: Session, request: Request, transaction_id: str) -> Reply:
    """``GET /transactions/{id}``."""
    txn = find_txn(session, "transaction_id", transaction_id)
    if txn is None:
        raise ApiError(
            "TXN_NOT_FOUND", f"Transaction with ID '{transaction_id}' not found"
        )
    return 200, txn_json(txn, "by_id")


def get_by_reference(session: Session, request: Request, reference: str) -> Reply:
    """``GET /transactions/reference/{reference}``: precision comes back 0."""
    txn = find_txn(session, "reference", reference)
    if txn is None:
        raise ApiError(
            "TXN_NOT_FOUND", f"Transaction with reference '{reference}' not found"
        )
    return 200, txn_json(txn, "by_reference")


def list_transactions(session: Session, request: Request) -> Reply:
    """``GET /transactions``: newest first, limit 20, query-string filters."""
    rows = list_page(
        session, request, "transactions", TXN_COLUMNS, default_limit=20, strict=False
    )
    return 200, [txn_json(txn_from_row(row), "list") for row in rows]


def filter_transactions(session: Session, request: Request) -> Reply:
    """``POST /transactions/filter``: the body DSL, at most 100 rows a page."""
    result = filter_table(session, request, "transactions", TXN_COLUMNS)
    if isinstance(result, tuple):
        rows, total = result
        data = [txn_json(txn_from_row(row), "list") for row in rows]
        return 200, {"data": data, "total_count": total}
    return 200, [txn_json(txn_from_row(row), "list") for row in result]


def bulk_transactions(session: Session, request: Request) -> Reply:
    """``POST /transactions/bulk``."""
    try:
        body = request.json()
    except BindError as exc:
        raise ApiError(
            "GEN_MALFORMED_REQUEST", f"Invalid request body: {exc}"
        ) from None
    return start_bulk(session, body)


_INFLIGHT_SPEC = {
    "status": "str",
    "amount": "float",
    "precise_amount": "bigint",
    "skip_queue": "bool",
    "dry_run": "bool",
}


def _action(status: Any) -> Action:
    if status == "commit":
        return "commit"
    if status == "void":
        return "void"
    raise ApiError(
        "TXN_INVALID_STATUS_ACTION", "status not supported. use either commit or void"
    )


def _preview_settlement(
    session: Session, transaction_id: str, action: Action, amount: int
) -> dict[str, Any]:
    legs = inflight_legs(session, transaction_id)
    subject = legs[0] if legs else find_txn(session, "transaction_id", transaction_id)
    if subject is None:
        raise ApiError(
            "TXN_NOT_FOUND", f"Transaction with ID '{transaction_id}' not found"
        )

    def settle() -> Txn:
        try:
            return settle_legs(session, transaction_id, action, amount)[0]
        except ApiError as exc:
            raise LedgerFailure(exc.message, code=exc.code) from None

    return project(session, subject, settle, operation=action)


def update_inflight(session: Session, request: Request, transaction_id: str) -> Reply:
    """``PUT /transactions/inflight/{id}``: commit or void, queued by default."""
    try:
        raw = bind(request.json(), _INFLIGHT_SPEC, "InflightUpdate")
    except BindError as exc:
        raise ApiError("GEN_MALFORMED_REQUEST", str(exc)) from None
    action = _action(raw["status"])
    amount = requested_amount(
        session, transaction_id, raw["amount"], raw["precise_amount"]
    )
    if raw["dry_run"]:
        return 200, _preview_settlement(session, transaction_id, action, amount)
    try:
        if not raw["skip_queue"]:
            hold = queue_action(session, transaction_id, action, amount)
            return 200, {**txn_json(hold, "by_id"), "queued": True}
        settled = settle_legs(session, transaction_id, action, amount)
    except LedgerFailure as exc:
        raise _fail(exc, "GEN_BAD_REQUEST") from None
    return 200, txn_json(settled[0], "created")


def _bulk_items(request: Request, key: str, spec: str) -> tuple[list[Any], bool, bool]:
    try:
        raw = bind(
            request.json(),
            {key: "list", "skip_queue": "bool", "dry_run": "bool"},
            "BulkInflightRequest",
        )
        items = raw[key] or []
        if spec == "commit":
            commit_spec = {
                "transaction_id": "str",
                "amount": "float",
                "precise_amount": "bigint",
            }
            items = [
                bind(item, commit_spec, "BulkInflightCommitItem") for item in items
            ]
        elif not all(isinstance(item, str) for item in items):
            raise BindError("json: cannot unmarshal into Go value of type []string")
    except BindError as exc:
        raise ApiError("GEN_MALFORMED_REQUEST", str(exc)) from None
    if not items:
        raise ApiError("TXN_BULK_EMPTY", f"{key} cannot be empty")
    if len(items) > _BULK_INFLIGHT_LIMIT:
        raise ApiError(
            "TXN_BULK_LIMIT_EXCEEDED", f"too many {key}; max is {_BULK_INFLIGHT_LIMIT}"
        )
    return items, bool(raw["skip_queue"]), bool(raw["dry_run"])


def _settle_one(
    session: Session, transaction_id: str, action: Action, amount: int, queued: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"transaction_id": transaction_id}
    try:
        with session.savepoint():
            if queued:
                queue_action(session, transaction_id, action, amount)
                return {**result, "status": "queued", "code": "QUEUED"}
            commit_or_void(session, transaction_id, action, amount)
            return {**result, "status": "succeeded"}
    except ApiError as exc:
        return {
            **result,
            "status": "queued",
            "code": "ALREADY_QUEUED",
            "message": exc.message,
        }
    except LedgerFailure as exc:
        code = classify_inflight_error(exc.message)
        return {**result, "status": "failed", "code": code, "message": exc.message}


def _bulk_settle(session: Session, request: Request, action: Action) -> Reply:
    key = "transactions" if action == "commit" else "transaction_ids"
    items, skip_queue, dry_run = _bulk_items(request, key, action)
    targets: list[tuple[str, int]] = []
    for item in items:
        if action == "void":
            targets.append((item, 0))
            continue
        transaction_id = item["transaction_id"] or ""
        amount = item["precise_amount"]
        if amount is None:
            amount = requested_amount(session, transaction_id, item["amount"], None)
        targets.append((transaction_id, amount))
    if dry_run:
        results = [
            _preview_settlement(session, target, action, amount)
            for target, amount in targets
        ]
        return 200, {
            "dry_run": True,
            "would_apply": all(result["would_apply"] for result in results),
            "cumulative": False,
            "results": results,
        }
    results = [_settle_one(session, t, action, a, not skip_queue) for t, a in targets]
    failed = sum(1 for result in results if result["status"] == "failed")
    return 200, {
        "succeeded": len(results) - failed,
        "failed": failed,
        "results": results,
    }


def bulk_commit(session: Session, request: Request) -> Reply:
    """``POST /transactions/inflight/bulk/commit``: items are independent."""
    return _bulk_settle(session, request, "commit")


def bulk_void(session: Session, request: Request) -> Reply:
    """``POST /transactions/inflight/bulk/void``: items are independent."""
    return _bulk_settle(session, request, "void")


_REFUND_SPEC = {
    "skip_queue": "bool",
    "dry_run": "bool",
    "meta_data": "object",
    "description": "str",
}


def refund_transaction(
    session: Session, request: Request, transaction_id: str
) -> Reply:
    """``POST /refund-transaction/{id}``: the body is optional."""
    raw: dict[str, Any] = dict.fromkeys(_REFUND_SPEC)
    if request.body.strip():
        try:
            raw = bind(request.json(), _REFUND_SPEC, "refundTransactionRequest")
        except BindError as exc:
            raise ApiError("GEN_MALFORMED_REQUEST", str(exc)) from None

    def refund(skip_queue: bool) -> list[Txn]:
        return refund_all(
            session,
            transaction_id,
            skip_queue=skip_queue,
            description=raw["description"] or "",
            meta_data=raw["meta_data"] or {},
        )

    if raw["dry_run"]:
        rows = refundable_rows(session, transaction_id)
        if not rows:
            raise ApiError("TXN_NOT_FOUND", "no transaction to refund")
        subject = rows[0].copy(source=rows[0].destination, destination=rows[0].source)
        return 200, project(session, subject, lambda: refund(True)[0])
    try:
        refunds = refund(bool(raw["skip_queue"]))
    except LedgerFailure as exc:
        raise _fail(exc, "GEN_BAD_REQUEST") from None
    if not refunds:
        raise ApiError("TXN_NOT_FOUND", "no transaction to refund")
    return 201, txn_json(refunds[0], "created")


TXN_ROUTES = [
    Route("POST", ("transactions",), create_transaction, True),
    Route("GET", ("transactions",), list_transactions, False),
    Route("POST", ("transactions", "filter"), filter_transactions, False),
    Route("POST", ("transactions", "bulk"), bulk_transactions, True),
    Route("GET", ("transactions", "{}"), get_transaction, False),
    Route("GET", ("transactions", "reference", "{}"), get_by_reference, False),
    Route("PUT", ("transactions", "inflight", "{}"), update_inflight, True),
    Route("POST", ("transactions", "inflight", "bulk", "commit"), bulk_commit, True),
    Route("POST", ("transactions", "inflight", "bulk", "void"), bulk_void, True),
    Route("POST", ("refund-transaction", "{}"), refund_transaction, True),
]
