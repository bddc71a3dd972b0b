"""Inflight holds and ``PUT /transactions/inflight/{id}`` commits and voids."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk


def _hold(blnk: Blnk, source_id: str, amount: int, **fields: Any) -> dict[str, Any]:
    destination_id = blnk.new_balance()
    body = blnk.transaction(source_id, destination_id, amount, inflight=True)
    body.update(fields)
    return blnk.post_transaction(body)


def _settle(
    client: httpx.Client, txn_id: str, status: str, **fields: Any
) -> httpx.Response:
    body = {"status": status, "skip_queue": True, **fields}
    return client.put(f"/transactions/inflight/{txn_id}", json=body)


def test_hold_is_inflight(blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)

    hold = _hold(blnk, wallet_id, 600)
    wallet = blnk.balance(wallet_id)
    destination = blnk.balance(hold["destination"])

    assert hold["status"] == "INFLIGHT"
    assert hold["inflight"] is True
    assert wallet["balance"] == 1_000
    assert wallet["debit_balance"] == 0
    assert wallet["inflight_debit_balance"] == 600
    assert destination["balance"] == 0
    assert destination["inflight_credit_balance"] == 600


def test_hold_reduces_available_funds(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    other_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    _hold(blnk, wallet_id, 600)

    over = client.post("/transactions", json=blnk.transaction(wallet_id, other_id, 401))
    within = client.post(
        "/transactions", json=blnk.transaction(wallet_id, other_id, 400)
    )

    assert over.status_code == 400
    # The code is new in Blnk v0.15.
    assert over.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert within.status_code == 201


def test_hold_keeps_expiry_date(blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    expiry = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)

    hold = _hold(blnk, wallet_id, 600, inflight_expiry_date=expiry.isoformat())

    assert datetime.fromisoformat(hold["inflight_expiry_date"]) == expiry


def test_commit_full_moves_hold_to_posted(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    response = _settle(client, hold["transaction_id"], "commit")
    settlement = response.json()
    wallet = blnk.balance(wallet_id)
    destination = blnk.balance(hold["destination"])

    assert response.status_code == 200
    assert settlement["transaction_id"] != hold["transaction_id"]
    assert settlement["parent_transaction"] == hold["transaction_id"]
    assert settlement["status"] == "APPLIED"
    assert settlement["precise_amount"] == 600
    assert wallet["balance"] == 400
    assert wallet["inflight_debit_balance"] == 0
    assert destination["balance"] == 600
    assert destination["inflight_credit_balance"] == 0


def test_commit_partial_leaves_remainder(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    first = _settle(client, hold["transaction_id"], "commit", precise_amount=250)
    wallet_after_first = blnk.balance(wallet_id)
    rest = _settle(client, hold["transaction_id"], "commit")
    wallet_after_rest = blnk.balance(wallet_id)

    assert first.status_code == 200
    assert first.json()["precise_amount"] == 250
    assert wallet_after_first["balance"] == 750
    assert wallet_after_first["inflight_debit_balance"] == 350
    assert rest.status_code == 200
    assert rest.json()["precise_amount"] == 350
    assert wallet_after_rest["balance"] == 400
    assert wallet_after_rest["inflight_debit_balance"] == 0


def test_commit_after_full_commit_is_409(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)
    _settle(client, hold["transaction_id"], "commit")

    response = _settle(client, hold["transaction_id"], "commit")

    assert response.status_code == 409
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_ALREADY_COMMITTED"
    assert blnk.balance(wallet_id)["balance"] == 400


def test_void_releases_hold(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    response = _settle(client, hold["transaction_id"], "void")
    wallet = blnk.balance(wallet_id)

    assert response.status_code == 200
    assert response.json()["status"] == "VOID"
    assert response.json()["parent_transaction"] == hold["transaction_id"]
    assert wallet["balance"] == 1_000
    assert wallet["inflight_debit_balance"] == 0
    assert blnk.balance(hold["destination"])["inflight_credit_balance"] == 0


def test_void_after_partial_commit_releases_rest(
    client: httpx.Client, blnk: Blnk
) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)
    _settle(client, hold["transaction_id"], "commit", precise_amount=100)

    response = _settle(client, hold["transaction_id"], "void")
    wallet = blnk.balance(wallet_id)

    assert response.status_code == 200
    assert wallet["balance"] == 900
    assert wallet["inflight_debit_balance"] == 0


def test_commit_after_void_is_409(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)
    _settle(client, hold["transaction_id"], "void")

    response = _settle(client, hold["transaction_id"], "commit")

    assert response.status_code == 409
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_ALREADY_VOIDED"
    assert blnk.balance(wallet_id)["balance"] == 1_000


def test_commit_over_remainder_rejected(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    response = _settle(client, hold["transaction_id"], "commit", precise_amount=601)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_COMMIT_AMOUNT_EXCEEDED"
    assert blnk.balance(wallet_id)["inflight_debit_balance"] == 600


def test_commit_negative_amount_rejected(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    response = _settle(client, hold["transaction_id"], "commit", precise_amount=-5)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_INVALID_AMOUNT"


@pytest.mark.parametrize("status", ["COMMIT", "settle"])
def test_inflight_unknown_action_rejected(
    client: httpx.Client, blnk: Blnk, status: str
) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    response = _settle(client, hold["transaction_id"], status)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_INVALID_STATUS_ACTION"


def test_commit_applied_transaction_rejected(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    txn = blnk.fund(wallet_id, 1_000)

    response = _settle(client, txn["transaction_id"], "commit")

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_NOT_INFLIGHT"


def test_queued_commit_returns_hold(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = _hold(blnk, wallet_id, 600)

    # Blnk v0.15 queues the action by default. v0.14 returned the settlement row.
    response = client.put(
        f"/transactions/inflight/{hold['transaction_id']}", json={"status": "commit"}
    )
    wallet = blnk.wait_for_balance(wallet_id, 400)
    by_parent = {"field": "parent_transaction", "operator": "eq"}
    settlements = blnk.filter_transactions(
        {"filters": [{**by_parent, "value": hold["transaction_id"]}]}
    )

    assert response.status_code == 200
    assert response.json()["queued"] is True
    assert response.json()["transaction_id"] == hold["transaction_id"]
    assert response.json()["status"] == "INFLIGHT"
    assert wallet["inflight_debit_balance"] == 0
    assert [row["status"] for row in settlements] == ["APPLIED"]
    assert settlements[0]["precise_amount"] == 600


def test_queued_hold_commits_by_parent_id(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    destination_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    body = blnk.transaction(
        wallet_id, destination_id, 600, inflight=True, skip_queue=False
    )
    queued = blnk.post_transaction(body)
    child = blnk.wait_for_reference(f"{body['reference']}_q")

    response = _settle(client, queued["transaction_id"], "commit")

    assert child["status"] == "INFLIGHT"
    assert response.status_code == 200
    assert blnk.balance(wallet_id)["balance"] == 400
    assert blnk.balance(destination_id)["balance"] == 600
