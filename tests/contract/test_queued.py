"""Transactions posted without ``skip_queue``, whose outcome is a ``<ref>_q`` row.

Real Blnk responds 201 before its workers apply the transaction, so each test polls
for the child row instead of expecting it at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk


def test_queued_post_returns_queued(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world, balance_id, 800, allow_overdraft=True, skip_queue=False
    )

    response = client.post("/transactions", json=body)
    txn = response.json()

    assert response.status_code == 201
    assert txn["status"] == "QUEUED"
    assert txn["transaction_id"].startswith("txn_")
    assert txn["reference"] == body["reference"]
    assert txn["precise_amount"] == 800


def test_queued_child_is_applied(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world, balance_id, 800, allow_overdraft=True, skip_queue=False
    )
    queued = client.post("/transactions", json=body).json()

    child = blnk.wait_for_reference(f"{body['reference']}_q")

    assert child["status"] == "APPLIED"
    assert child["parent_transaction"] == queued["transaction_id"]
    assert child["transaction_id"] != queued["transaction_id"]
    assert child["precise_amount"] == 800
    assert child["destination"] == balance_id
    assert blnk.balance(balance_id)["balance"] == 800


def test_queued_parent_stays_queued(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world, balance_id, 800, allow_overdraft=True, skip_queue=False
    )
    queued = client.post("/transactions", json=body).json()
    blnk.wait_for_reference(f"{body['reference']}_q")

    response = client.get(f"/transactions/{queued['transaction_id']}")

    assert response.status_code == 200
    assert response.json()["status"] == "QUEUED"


def test_queued_insufficient_funds_rejected(client: httpx.Client, blnk: Blnk) -> None:
    source_id = blnk.new_balance()
    destination_id = blnk.new_balance()
    blnk.fund(source_id, 100)
    body = blnk.transaction(source_id, destination_id, 101, skip_queue=False)

    response = client.post("/transactions", json=body)
    child = blnk.wait_for_reference(f"{body['reference']}_q")

    assert response.status_code == 201
    assert response.json()["status"] == "QUEUED"
    assert child["status"] == "REJECTED"
    assert child["parent_transaction"] == response.json()["transaction_id"]
    assert "insufficient funds" in child["meta_data"]["blnk_rejection_reason"]
    assert blnk.balance(source_id)["balance"] == 100
    assert blnk.balance(destination_id)["balance"] == 0


def test_queued_duplicate_reference_is_phantom(
    client: httpx.Client, blnk: Blnk
) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, 300, allow_overdraft=True)
    original = blnk.post_transaction(body)

    response = client.post("/transactions", json={**body, "skip_queue": False})
    phantom_id = response.json()["transaction_id"]
    # Blnk stores a QUEUED row just after responding. Once a transaction
    # queued later on the same balance is applied, and a grace period has
    # passed, a server that stored the phantom would show it.
    marker = blnk.transaction(
        blnk.world, balance_id, 50, allow_overdraft=True, skip_queue=False
    )
    client.post("/transactions", json=marker)
    blnk.wait_for_reference(f"{marker['reference']}_q")
    phantom_seen = blnk.appears_within(f"/transactions/{phantom_id}")

    assert response.status_code == 201
    assert response.json()["status"] == "QUEUED"
    assert phantom_id != original["transaction_id"]
    assert phantom_seen is False
    assert blnk.find_reference(f"{body['reference']}_q") is None
    assert blnk.balance(balance_id)["balance"] == 350
