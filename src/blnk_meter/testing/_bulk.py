"""``POST /transactions/bulk``: many transactions, processed in order.

Blnk processes the items one after another through the single-transaction
path and stops at the first failure. ``atomic`` is compensation, not a
database transaction: the legs already applied stay APPLIED and are then
refunded through the queue, and the holds of an inflight batch are voided at
once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from ._apierror import ApiError, LedgerFailure, classify_message, status_for_code
from ._inflight import inflight_legs, settle_leg
from ._postings import enqueue, queue_transaction, record
from ._preview import project
from ._records import Txn
from ._refunds import refund_all
from ._requests import (
    BULK_ITEM_LIMIT,
    BindError,
    TxnRequest,
    bind,
    build_txn,
    read_txn_request,
    validate_txn_request,
)
from ._store import Session, new_id

__all__ = [
    "BulkRequest",
    "bulk_failure",
    "read_bulk_request",
    "rollback_batch",
    "run_bulk",
    "run_queued_bulk",
    "start_bulk",
]

logger = logging.getLogger(__name__)

_BULK_SPEC = {
    "transactions": "list",
    "inflight": "bool",
    "atomic": "bool",
    "run_async": "bool",
    "skip_queue": "bool",
    "dry_run": "bool",
}


@dataclass
class BulkRequest:
    """A bound and validated bulk body."""

    items: list[TxnRequest]
    inflight: bool
    atomic: bool
    run_async: bool
    skip_queue: bool
    dry_run: bool


def read_bulk_request(body: Any) -> BulkRequest:
    """Bind and validate a bulk body the way Blnk's handler does.

    Raises:
        ApiError: the body is malformed, empty, too large, or an item is
            invalid (with its index in the details); nothing is written.
    """
    try:
        raw = bind(body, _BULK_SPEC, "BulkTransactionRequest")
        entries = raw["transactions"] or []
        items = [None if item is None else read_txn_request(item) for item in entries]
    except BindError as exc:
        raise ApiError(
            "GEN_MALFORMED_REQUEST", f"Invalid request body: {exc}"
        ) from None
    if not items:
        raise ApiError("TXN_BULK_EMPTY", "transactions cannot be empty")
    if len(items) > BULK_ITEM_LIMIT:
        raise ApiError(
            "TXN_BULK_LIMIT_EXCEEDED",
            f"too many transactions; max is {BULK_ITEM_LIMIT}",
        )
    checked: list[TxnRequest] = []
    for index, item in enumerate(items):
        if item is None:
            raise _item_error(index, f"transactions[{index}] is required")
        error = validate_txn_request(item, prefix=f"transactions[{index}]: ")
        if error is not None:
            raise _item_error(index, error.message, error.code)
        checked.append(item)
    return BulkRequest(
        items=checked,
        inflight=bool(raw["inflight"]),
        atomic=bool(raw["atomic"]),
        run_async=bool(raw["run_async"]),
        skip_queue=bool(raw["skip_queue"]),
        dry_run=bool(raw["dry_run"]),
    )


def _item_error(
    index: int, message: str, code: str = "TXN_VALIDATION_ERROR"
) -> ApiError:
    return ApiError(code, message, {"index": index}, legacy_key="errors")


def rollback_batch(session: Session, batch_id: str, inflight: bool) -> str:
    """Compensate the legs of a failed atomic batch and describe the outcome.

    Returns:
        The sentence Blnk appends to the batch error.
    """
    errors: list[str] = []
    if inflight:
        action = "voided"
        for leg in inflight_legs(session, batch_id):
            try:
                settle_leg(session, leg, "void")
            except LedgerFailure as exc:
                errors.append(exc.message)
    else:
        action = "refunded"
        try:
            refund_all(session, batch_id, skip_queue=False)
        except LedgerFailure as exc:
            errors.append(exc.message)
    if errors:
        joined = " ".join(errors)
        logger.error("rollback of batch %s failed: %s", batch_id, joined)
        return (
            ". Failed to roll back all transactions: error occurred during"
            f" processing: [{joined}]"
        )
    logger.info("atomic batch %s rolled back: legs %s", batch_id, action)
    return f". All transactions in this batch have been {action}."


def _item_txn(session: Session, request: BulkRequest, index: int, batch_id: str) -> Txn:
    item = replace(
        request.items[index], inflight=request.inflight, skip_queue=request.skip_queue
    )
    txn = build_txn(item, session.now())
    txn.parent_transaction = batch_id
    txn.meta_data["sequence"] = index + 1
    return txn


def run_bulk(session: Session, request: BulkRequest, batch_id: str) -> str | None:
    """Process the items in order and stop at the first failure.

    Returns:
        ``None`` on success, otherwise Blnk's error text for the batch.
    """
    for index in range(len(request.items)):
        txn = _item_txn(session, request, index, batch_id)
        try:
            queue_transaction(session, txn)
        except LedgerFailure as exc:
            text = (
                f"failed to queue transaction {index + 1} (Reference:"
                f" {txn.reference}, Source: {txn.source}, Destination:"
                f" {txn.destination}, Amount: {float(txn.amount):.2f}): {exc.message}"
            )
            if request.atomic:
                return text + rollback_batch(session, batch_id, request.inflight)
            return text + ". Previous transactions were not rolled back."
    return None


def bulk_failure(batch_id: str, text: str) -> tuple[int, dict[str, Any]]:
    """Return the status and body Blnk sends for a failed batch."""
    code = classify_message(text) or "GEN_BAD_REQUEST"
    body = {
        "error": text,
        "batch_id": batch_id,
        "error_detail": {
            "code": code,
            "message": text,
            "details": {"batch_id": batch_id},
        },
    }
    return status_for_code(code), body


def _project_item(session: Session, txn: Txn, keep: bool) -> dict[str, Any]:
    return project(session, txn, lambda: record(session, txn.copy()), keep=keep)


class _DiscardBatch(Exception):
    """Raised to roll back a batch that was only projected."""


def _preview_bulk(session: Session, request: BulkRequest) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    cumulative = request.skip_queue
    try:
        with session.savepoint():
            for index in range(len(request.items)):
                txn = _item_txn(session, request, index, "bulk_dry_run")
                results.append(_project_item(session, txn, cumulative))
            raise _DiscardBatch
    except _DiscardBatch:
        pass
    preview: dict[str, Any] = {
        "dry_run": True,
        "would_apply": all(result["would_apply"] for result in results),
        "cumulative": cumulative,
        "atomic": request.atomic,
        "results": results,
    }
    if not cumulative:
        preview["notes"] = [
            "skip_queue is false: legs are queued for independent async processing"
            " with no ordering guarantee, so each is projected on its own"
        ]
    return preview


def start_bulk(session: Session, body: Any) -> tuple[int, dict[str, Any]]:
    """Run, queue or preview a bulk request and return the status and body.

    Raises:
        ApiError: the request is invalid; nothing is written.
    """
    request = read_bulk_request(body)
    if request.dry_run:
        return 200, _preview_bulk(session, request)
    batch_id = new_id("bulk")
    if request.run_async:
        payload = json.dumps({"batch_id": batch_id, "body": body})
        enqueue(session, "bulk", batch_id, payload)
        return 202, {
            "message": "Bulk transaction processing started",
            "batch_id": batch_id,
            "status": "processing",
        }
    error = run_bulk(session, request, batch_id)
    if error is not None:
        return bulk_failure(batch_id, error)
    status = "inflight" if request.inflight else "applied"
    return 201, {
        "batch_id": batch_id,
        "status": status,
        "transaction_count": len(request.items),
    }


def run_queued_bulk(session: Session, payload: str) -> None:
    """Process a ``run_async`` batch taken from the queue and log its outcome."""
    data = json.loads(payload)
    batch_id = data["batch_id"]
    error = run_bulk(session, read_bulk_request(data["body"]), batch_id)
    if error is None:
        logger.info("async batch %s applied", batch_id)
    else:
        logger.warning("async batch %s failed: %s", batch_id, error)
