"""``POST /transactions/bulk``: the two-leg posting blnk_meter sends.

A usage posting is a USD leg that can fail on funds followed by a TOKENS leg that
allows overdraft, sent with ``atomic`` and ``skip_queue``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk


def _usage_legs(
    blnk: Blnk, wallet_id: str, tokens_id: str, cost: int, tokens: int
) -> list[dict[str, Any]]:
    revenue = blnk.new_balance("USD")
    usage = blnk.new_balance("TOKENS")
    return [
        blnk.transaction(wallet_id, revenue, cost, "USD"),
        blnk.transaction(
            tokens_id, usage, tokens, "TOKENS", precision=1, allow_overdraft=True
        ),
    ]


def _bulk(legs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"transactions": legs, "atomic": True, "skip_queue": True}
    body.update(fields)
    return body


def test_bulk_atomic_success_returns_batch(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)

    response = client.post("/transactions/bulk", json=_bulk(legs))
    body = response.json()

    assert response.status_code == 201
    assert body["batch_id"].startswith("bulk_")
    assert body["status"] == "applied"
    assert body["transaction_count"] == 2


def test_bulk_atomic_success_writes_legs(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)

    batch_id = client.post("/transactions/bulk", json=_bulk(legs)).json()["batch_id"]
    usd_leg = blnk.find_reference(legs[0]["reference"])
    tokens_leg = blnk.find_reference(legs[1]["reference"])

    assert usd_leg is not None
    assert tokens_leg is not None
    assert usd_leg["status"] == "APPLIED"
    assert tokens_leg["status"] == "APPLIED"
    assert usd_leg["parent_transaction"] == batch_id
    assert tokens_leg["parent_transaction"] == batch_id
    assert usd_leg["meta_data"]["sequence"] == 1
    assert tokens_leg["meta_data"]["sequence"] == 2
    assert tokens_leg["precise_amount"] == 1_200
    assert blnk.balance(wallet_id)["balance"] == 750
    assert blnk.balance(tokens_id)["balance"] == -1_200


def test_bulk_first_leg_failure_writes_nothing(
    client: httpx.Client, blnk: Blnk
) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 100)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)

    response = client.post("/transactions/bulk", json=_bulk(legs))
    body = response.json()

    assert response.status_code == 400
    assert body["batch_id"].startswith("bulk_")
    # The code and "details" are new in Blnk v0.15.
    assert body["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert body["error_detail"]["details"]["batch_id"] == body["batch_id"]
    assert "insufficient funds" in body["error"]
    assert blnk.find_reference(legs[0]["reference"]) is None
    assert blnk.find_reference(legs[1]["reference"]) is None
    assert blnk.balance(wallet_id)["balance"] == 100
    assert blnk.balance(tokens_id)["balance"] == 0


def test_bulk_first_leg_failure_frees_references(
    client: httpx.Client, blnk: Blnk
) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)
    rejected = client.post("/transactions/bulk", json=_bulk(legs))
    blnk.fund(wallet_id, 250)

    retried = client.post("/transactions/bulk", json=_bulk(legs))

    assert rejected.status_code == 400
    assert retried.status_code == 201
    assert blnk.balance(wallet_id)["balance"] == 0
    assert blnk.balance(tokens_id)["balance"] == -1_200


def test_bulk_later_leg_failure_refunds_earlier(
    client: httpx.Client, blnk: Blnk
) -> None:
    tokens_id = blnk.new_balance("TOKENS")
    usage_id = blnk.new_balance("TOKENS")
    wallet_id = blnk.new_balance("USD")
    revenue_id = blnk.new_balance("USD")
    blnk.fund(wallet_id, 100)
    legs = [
        blnk.transaction(
            tokens_id, usage_id, 1_200, "TOKENS", precision=1, allow_overdraft=True
        ),
        blnk.transaction(wallet_id, revenue_id, 250, "USD"),
    ]

    response = client.post("/transactions/bulk", json=_bulk(legs))
    first_leg = blnk.find_reference(legs[0]["reference"])
    assert first_leg is not None
    # Blnk queues the refunds of an atomic batch, so they apply after the response.
    refund = blnk.wait_for_reference(f"{first_leg['transaction_id']}_refund")
    blnk.wait_for_balance(tokens_id, 0)
    blnk.wait_for_balance(usage_id, 0)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert first_leg["status"] == "APPLIED"
    assert first_leg["parent_transaction"] == response.json()["batch_id"]
    assert blnk.find_reference(legs[1]["reference"]) is None
    assert refund["parent_transaction"] == first_leg["transaction_id"]
    assert refund["source"] == usage_id
    assert refund["destination"] == tokens_id
    assert refund["precise_amount"] == 1_200
    assert blnk.balance(wallet_id)["balance"] == 100


def test_bulk_inflight_failure_voids_holds(client: httpx.Client, blnk: Blnk) -> None:
    tokens_id = blnk.new_balance("TOKENS")
    usage_id = blnk.new_balance("TOKENS")
    wallet_id = blnk.new_balance("USD")
    revenue_id = blnk.new_balance("USD")
    legs = [
        blnk.transaction(
            tokens_id, usage_id, 1_200, "TOKENS", precision=1, allow_overdraft=True
        ),
        blnk.transaction(wallet_id, revenue_id, 250, "USD"),
    ]

    response = client.post("/transactions/bulk", json=_bulk(legs, inflight=True))
    tokens = blnk.balance(tokens_id)
    hold = blnk.find_reference(legs[0]["reference"])
    assert hold is not None
    by_parent = {"field": "parent_transaction", "operator": "eq"}
    children = blnk.filter_transactions(
        {"filters": [{**by_parent, "value": hold["transaction_id"]}]}
    )

    assert response.status_code == 400
    # Blnk voids the holds of an atomic inflight batch before it responds.
    assert hold["status"] == "INFLIGHT"
    assert [child["status"] for child in children] == ["VOID"]
    assert tokens["inflight_debit_balance"] == 0
    assert tokens["balance"] == 0
    assert blnk.balance(usage_id)["inflight_credit_balance"] == 0


def test_bulk_inflight_returns_inflight_status(
    client: httpx.Client, blnk: Blnk
) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)

    response = client.post("/transactions/bulk", json=_bulk(legs, inflight=True))
    usd_leg = blnk.find_reference(legs[0]["reference"])
    wallet = blnk.balance(wallet_id)

    assert response.status_code == 201
    assert response.json()["status"] == "inflight"
    assert usd_leg is not None
    assert usd_leg["status"] == "INFLIGHT"
    assert wallet["balance"] == 1_000
    assert wallet["inflight_debit_balance"] == 250


def test_bulk_duplicate_reference_is_409(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)
    first = client.post("/transactions/bulk", json=_bulk(legs))

    second = client.post("/transactions/bulk", json=_bulk(legs))

    assert first.status_code == 201
    assert second.status_code == 409
    # The code is new in Blnk v0.15.
    assert second.json()["error_detail"]["code"] == "TXN_DUPLICATE_REFERENCE"
    assert blnk.balance(wallet_id)["balance"] == 750


def test_bulk_empty_rejected(client: httpx.Client) -> None:
    response = client.post("/transactions/bulk", json=_bulk([]))

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_BULK_EMPTY"


def test_bulk_invalid_item_rejected(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)
    del legs[1]["description"]

    response = client.post("/transactions/bulk", json=_bulk(legs))
    detail = response.json()["error_detail"]

    assert response.status_code == 400
    # The code and "details" are new in Blnk v0.15.
    assert detail["code"] == "TXN_VALIDATION_ERROR"
    assert detail["details"]["index"] == 1
    assert blnk.find_reference(legs[0]["reference"]) is None
    assert blnk.balance(wallet_id)["balance"] == 1_000


def test_bulk_quoted_amount_rejected(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)
    legs[1]["precise_amount"] = "1200"

    response = client.post("/transactions/bulk", json=_bulk(legs))

    assert response.status_code == 400
    assert blnk.find_reference(legs[0]["reference"]) is None
    assert blnk.balance(wallet_id)["balance"] == 1_000


def test_bulk_run_async_returns_202(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    blnk.fund(wallet_id, 1_000)
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)

    response = client.post("/transactions/bulk", json=_bulk(legs, run_async=True))
    body = response.json()
    tokens_leg = blnk.wait_for_reference(legs[1]["reference"])

    assert response.status_code == 202
    assert body["batch_id"].startswith("bulk_")
    assert body["status"] == "processing"
    assert isinstance(body["message"], str)
    assert tokens_leg["parent_transaction"] == body["batch_id"]
    assert tokens_leg["status"] == "APPLIED"


def test_bulk_queued_reports_applied(client: httpx.Client, blnk: Blnk) -> None:
    wallet_id = blnk.new_balance("USD")
    tokens_id = blnk.new_balance("TOKENS")
    legs = _usage_legs(blnk, wallet_id, tokens_id, cost=250, tokens=1_200)

    response = client.post("/transactions/bulk", json=_bulk(legs, skip_queue=False))
    batch_id = response.json()["batch_id"]
    usd_child = blnk.wait_for_reference(f"{legs[0]['reference']}_q")

    # A queued batch reports success although its unfunded USD leg is rejected.
    assert response.status_code == 201
    assert response.json()["status"] == "applied"
    assert usd_child["status"] == "REJECTED"
    assert usd_child["meta_data"]["QUEUED_PARENT_TRANSACTION"] == batch_id
    assert blnk.balance(wallet_id)["balance"] == 0
