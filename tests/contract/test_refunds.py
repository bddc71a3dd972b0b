"""``POST /refund-transaction/{id}``: full reversals with a ``<id>_refund`` row."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk


def test_refund_swaps_source_and_destination(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    revenue_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    txn = blnk.post_transaction(blnk.transaction(wallet_id, revenue_id, 300))

    response = client.post(
        f"/refund-transaction/{txn['transaction_id']}", json={"skip_queue": True}
    )
    refund = response.json()

    assert response.status_code == 201
    assert refund["reference"] == f"{txn['transaction_id']}_refund"
    assert refund["parent_transaction"] == txn["transaction_id"]
    assert refund["source"] == revenue_id
    assert refund["destination"] == wallet_id
    assert refund["precise_amount"] == 300
    assert refund["currency"] == "USD"
    assert refund["status"] == "APPLIED"
    assert blnk.balance(wallet_id)["balance"] == 1_000
    assert blnk.balance(revenue_id)["balance"] == 0


def test_refund_ignores_funds(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    revenue_id = blnk.new_balance()
    other_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    txn = blnk.post_transaction(blnk.transaction(wallet_id, revenue_id, 300))
    blnk.post_transaction(blnk.transaction(revenue_id, other_id, 300))

    response = client.post(
        f"/refund-transaction/{txn['transaction_id']}", json={"skip_queue": True}
    )

    assert response.status_code == 201
    assert blnk.balance(revenue_id)["balance"] == -300


def test_refund_queued_by_default(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    revenue_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    txn = blnk.post_transaction(blnk.transaction(wallet_id, revenue_id, 300))

    response = client.post(f"/refund-transaction/{txn['transaction_id']}")
    blnk.wait_for_balance(wallet_id, 1_000)

    assert response.status_code == 201
    assert response.json()["status"] == "QUEUED"
    assert response.json()["reference"] == f"{txn['transaction_id']}_refund"
    assert blnk.balance(revenue_id)["balance"] == 0


def test_refund_twice_is_409(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    revenue_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    txn = blnk.post_transaction(blnk.transaction(wallet_id, revenue_id, 300))
    path = f"/refund-transaction/{txn['transaction_id']}"
    first = client.post(path, json={"skip_queue": True})

    second = client.post(path, json={"skip_queue": True})

    assert first.status_code == 201
    assert second.status_code == 409
    # The code is new in Blnk v0.15.
    assert second.json()["error_detail"]["code"] == "GEN_CONFLICT"
    assert blnk.balance(wallet_id)["balance"] == 1_000


def test_refund_unknown_is_404(client: httpx.Client) -> None:
    response = client.post(
        "/refund-transaction/txn_00000000-0000-4000-8000-000000000000",
        json={"skip_queue": True},
    )

    assert response.status_code == 404
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_NOT_FOUND"


def test_refund_of_hold_is_404(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance()
    revenue_id = blnk.new_balance()
    blnk.fund(wallet_id, 1_000)
    hold = blnk.post_transaction(
        blnk.transaction(wallet_id, revenue_id, 300, inflight=True)
    )

    response = client.post(
        f"/refund-transaction/{hold['transaction_id']}", json={"skip_queue": True}
    )

    # Only APPLIED rows and APPLIED or VOID children are refundable.
    assert response.status_code == 404
    assert blnk.balance(wallet_id)["inflight_debit_balance"] == 300


def test_refund_of_batch_reverses_legs(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    revenue_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    usage_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = [
        blnk.transaction(wallet_id, revenue_id, 250),
        blnk.transaction(
            tokens_id, usage_id, 1_200, "TOKENS", precision=1, allow_overdraft=True
        ),
    ]
    batch = client.post(
        "/transactions/bulk",
        json={"transactions": legs, "atomic": True, "skip_queue": True},
    ).json()

    response = client.post(
        f"/refund-transaction/{batch['batch_id']}", json={"skip_queue": True}
    )
    blnk.wait_for_balance(wallet_id, 1_000)
    blnk.wait_for_balance(tokens_id, 0)
    usd_leg = blnk.find_reference(legs[0]["reference"])
    tokens_leg = blnk.find_reference(legs[1]["reference"])
    assert usd_leg is not None
    assert tokens_leg is not None

    assert response.status_code == 201
    assert blnk.find_reference(f"{usd_leg['transaction_id']}_refund") is not None
    assert blnk.find_reference(f"{tokens_leg['transaction_id']}_refund") is not None
    assert blnk.balance(revenue_id)["balance"] == 0
    assert blnk.balance(usage_id)["balance"] == 0
