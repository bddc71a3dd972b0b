from __future__ import annotations

from typing import Any

import httpx
import pytest
from embedded_helpers import new_wallet, spend

from blnk_meter.testing import EmbeddedLedger


def tokens_leg(reference: str, tokens: int = 500) -> dict[str, Any]:
    return {
        "precise_amount": tokens,
        "currency": "TOKENS",
        "reference": reference,
        "description": "tokens",
        "source": "@World",
        "destination": "@Tokens",
        "allow_overdraft": True,
    }


def usage_batch(wallet: str, cents: int, name: str, **batch: Any) -> dict[str, Any]:
    """Return a synchronous two-leg usage posting: tokens, then the dollars."""
    usd = spend(wallet, cents, f"{name}-usd")
    legs = [tokens_leg(f"{name}-tok"), usd]
    return {"transactions": legs, "skip_queue": True, **batch}


def test_bulk_success_links_legs_to_batch(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)

    response = client.post("/transactions/bulk", json=usage_batch(wallet, 100, "u1"))

    body = response.json()
    legs = ledger.transactions(parent_transaction_eq=body["batch_id"])
    assert response.status_code == 201
    assert body["status"] == "applied"
    assert body["transaction_count"] == 2
    assert body["batch_id"].startswith("bulk_")
    assert sorted(leg["meta_data"]["sequence"] for leg in legs) == [1, 2]
    assert {leg["status"] for leg in legs} == {"APPLIED"}
    assert ledger.get_balance(wallet)["balance"] == 900


def test_atomic_failure_refunds_applied_legs(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=50)
    batch = usage_batch(wallet, 100, "u1", atomic=True)

    response = client.post("/transactions/bulk", json=batch)

    body = response.json()
    assert response.status_code == 400
    assert body["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert body["error_detail"]["details"] == {"batch_id": body["batch_id"]}
    assert body["error"].startswith("failed to queue transaction 2 (Reference: u1-usd,")
    assert body["error"].endswith("All transactions in this batch have been refunded.")
    leg = client.get("/transactions/reference/u1-tok").json()
    assert leg["status"] == "APPLIED"
    assert leg["parent_transaction"] == body["batch_id"]
    refund = client.get(f"/transactions/reference/{leg['transaction_id']}_refund")
    applied = client.get(f"/transactions/reference/{leg['transaction_id']}_refund_q")
    assert refund.json()["status"] == "QUEUED"
    assert refund.json()["source"] == leg["destination"]
    assert applied.json()["status"] == "APPLIED"
    assert client.get("/transactions/reference/u1-usd").status_code == 404
    assert ledger.get_balance_by_indicator("@Tokens", "TOKENS")["balance"] == 0
    assert ledger.get_balance(wallet)["balance"] == 50


def test_failed_first_leg_writes_nothing(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=50)
    usd_first = usage_batch(wallet, 100, "u1", atomic=True)
    usd_first["transactions"].reverse()

    response = client.post("/transactions/bulk", json=usd_first)

    assert response.status_code == 400
    assert "failed to queue transaction 1 " in response.json()["error"]
    assert ledger.transactions(parent_transaction_eq=response.json()["batch_id"]) == []
    assert client.get("/transactions/reference/u1-tok").status_code == 404


def test_non_atomic_failure_keeps_earlier_legs(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=50)

    response = client.post("/transactions/bulk", json=usage_batch(wallet, 100, "u1"))

    assert response.json()["error"].endswith(
        ". Previous transactions were not rolled back."
    )
    assert client.get("/transactions/reference/u1-tok").json()["status"] == "APPLIED"
    assert ledger.get_balance_by_indicator("@Tokens", "TOKENS")["balance"] == 500


def test_duplicate_leg_conflicts_and_refunds(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    client.post("/transactions", json=spend(wallet, 100, "u1-usd"))

    response = client.post(
        "/transactions/bulk", json=usage_batch(wallet, 100, "u1", atomic=True)
    )

    assert response.status_code == 409
    assert response.json()["error_detail"]["code"] == "TXN_DUPLICATE_REFERENCE"
    assert ledger.get_balance_by_indicator("@Tokens", "TOKENS")["balance"] == 0
    assert ledger.get_balance(wallet)["balance"] == 900


def test_inflight_atomic_failure_voids_holds(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=50)
    batch = usage_batch(wallet, 100, "u1", atomic=True, inflight=True)

    response = client.post("/transactions/bulk", json=batch)

    hold = client.get("/transactions/reference/u1-tok").json()
    settlements = ledger.transactions(parent_transaction_eq=hold["transaction_id"])
    tokens = ledger.get_balance_by_indicator("@Tokens", "TOKENS")
    assert response.json()["error"].endswith("have been voided.")
    assert hold["status"] == "INFLIGHT"
    assert [row["status"] for row in settlements] == ["VOID"]
    assert tokens["inflight_credit_balance"] == 0
    assert tokens["balance"] == 0


def test_batch_flags_override_items(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    batch = usage_batch(wallet, 100, "u1", inflight=True)
    for item in batch["transactions"]:
        item.update(inflight=False, skip_queue=False)

    response = client.post("/transactions/bulk", json=batch)

    legs = ledger.transactions(parent_transaction_eq=response.json()["batch_id"])
    assert response.json()["status"] == "inflight"
    assert {leg["status"] for leg in legs} == {"INFLIGHT"}
    assert ledger.get_balance(wallet)["inflight_debit_balance"] == 100


def test_queued_batch_children_carry_batch_id(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    batch = usage_batch(wallet, 100, "u1", skip_queue=False)

    response = client.post("/transactions/bulk", json=batch)
    batch_id = response.json()["batch_id"]
    children = client.post(
        "/transactions/filter",
        json={
            "filters": [
                {
                    "field": "meta_data.QUEUED_PARENT_TRANSACTION",
                    "operator": "eq",
                    "value": batch_id,
                },
                {"field": "status", "operator": "eq", "value": "APPLIED"},
            ]
        },
    ).json()

    queued = ledger.transactions(parent_transaction_eq=batch_id)
    assert response.status_code == 201
    assert {row["status"] for row in queued} == {"QUEUED"}
    assert sorted(row["reference"] for row in children) == ["u1-tok_q", "u1-usd_q"]


def test_queued_atomic_rejection_refunds_batch(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=50)
    batch = usage_batch(wallet, 100, "u1", skip_queue=False)
    for item in batch["transactions"]:
        item["atomic"] = True

    response = client.post("/transactions/bulk", json=batch)

    rejected = client.get("/transactions/reference/u1-usd_q").json()
    assert response.status_code == 201
    assert rejected["status"] == "REJECTED"
    assert ledger.get_balance_by_indicator("@Tokens", "TOKENS")["balance"] == 0
    assert ledger.get_balance(wallet)["balance"] == 50


def test_run_async_accepts_then_processes() -> None:
    with EmbeddedLedger(queue="manual") as ledger:
        wallet = new_wallet(ledger, funds=1_000)
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        batch = usage_batch(wallet, 100, "u1", run_async=True)

        response = client.post("/transactions/bulk", json=batch)
        before = ledger.transactions(parent_transaction_eq=response.json()["batch_id"])
        ledger.process_queue()
        after = ledger.transactions(parent_transaction_eq=response.json()["batch_id"])

    assert response.status_code == 202
    assert response.json()["status"] == "processing"
    assert before == []
    assert len(after) == 2


def test_invalid_item_names_its_index(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    batch = usage_batch(wallet, 100, "u1")
    del batch["transactions"][1]["currency"]

    response = client.post("/transactions/bulk", json=batch)

    body = response.json()
    assert response.status_code == 400
    assert body["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
    assert body["error_detail"]["details"] == {"index": 1}
    assert body["errors"] == "transactions[1]: currency: cannot be blank."
    assert client.get("/transactions/reference/u1-tok").status_code == 404


@pytest.mark.parametrize(
    ("items", "code"),
    [
        pytest.param([], "TXN_BULK_EMPTY", id="empty"),
        pytest.param([None], "TXN_VALIDATION_ERROR", id="null-item"),
        pytest.param([{}] * 10_001, "TXN_BULK_LIMIT_EXCEEDED", id="over-limit"),
        pytest.param("none", "GEN_MALFORMED_REQUEST", id="not-a-list"),
    ],
)
def test_bulk_shape_errors(client: httpx.Client, items: Any, code: str) -> None:
    response = client.post("/transactions/bulk", json={"transactions": items})

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == code


def test_bulk_dry_run_writes_nothing(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=150)
    batch = usage_batch(wallet, 100, "u1", dry_run=True)
    batch["transactions"].append(spend(wallet, 100, "u2-usd"))

    response = client.post("/transactions/bulk", json=batch)

    body = response.json()
    assert response.status_code == 200
    assert body["cumulative"] is True
    assert [result["would_apply"] for result in body["results"]] == [True, True, False]
    assert body["would_apply"] is False
    assert ledger.transactions() == ledger.transactions(reference_eq=f"fund-{wallet}")
