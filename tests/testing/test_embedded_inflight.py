from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from embedded_helpers import Clock, new_wallet, spend

from blnk_meter.testing import EmbeddedLedger


def hold(
    client: httpx.Client, wallet: str, cents: int, reference: str, **fields: Any
) -> str:
    response = client.post(
        "/transactions", json=spend(wallet, cents, reference, inflight=True, **fields)
    )
    assert response.json()["status"] == "INFLIGHT"
    transaction_id: str = response.json()["transaction_id"]
    return transaction_id


def settle(client: httpx.Client, transaction_id: str, **body: Any) -> httpx.Response:
    return client.put(f"/transactions/inflight/{transaction_id}", json=body)


def test_partial_commits_until_nothing_remains(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    hold_id = hold(client, wallet, 300, "call-1")

    first = settle(
        client, hold_id, status="commit", precise_amount=100, skip_queue=True
    )
    second = settle(client, hold_id, status="commit", amount=1.5, skip_queue=True)
    too_much = settle(
        client, hold_id, status="commit", precise_amount=100, skip_queue=True
    )
    rest = settle(client, hold_id, status="commit", skip_queue=True)
    again = settle(client, hold_id, status="commit", skip_queue=True)

    assert first.status_code == 200
    assert first.json()["status"] == "APPLIED"
    assert first.json()["parent_transaction"] == hold_id
    assert first.json()["reference"].startswith("ref_")
    assert second.json()["precise_amount"] == 150
    assert too_much.status_code == 400
    assert too_much.json()["error_detail"]["code"] == "TXN_COMMIT_AMOUNT_EXCEEDED"
    assert "Available: USD0.50, Requested: USD1.00" in too_much.json()["error"]
    assert rest.json()["precise_amount"] == 50
    assert again.status_code == 409
    assert again.json()["error_detail"]["code"] == "TXN_ALREADY_COMMITTED"
    balance = ledger.get_balance(wallet)
    assert balance["balance"] == 700
    assert balance["inflight_debit_balance"] == 0
    assert client.get(f"/transactions/{hold_id}").json()["status"] == "INFLIGHT"


def test_void_releases_what_remains(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    hold_id = hold(client, wallet, 300, "call-1")
    settle(client, hold_id, status="commit", precise_amount=120, skip_queue=True)

    void = settle(client, hold_id, status="void", skip_queue=True)
    void_again = settle(client, hold_id, status="void", skip_queue=True)
    commit_after = settle(client, hold_id, status="commit", skip_queue=True)

    assert void.json()["status"] == "VOID"
    assert void.json()["precise_amount"] == 180
    assert void_again.status_code == 409
    assert void_again.json()["error_detail"]["code"] == "TXN_ALREADY_VOIDED"
    assert commit_after.json()["error_detail"]["code"] == "TXN_ALREADY_VOIDED"
    balance = ledger.get_balance(wallet)
    assert balance["balance"] == 880
    assert balance["inflight_balance"] == 0


def test_commit_is_queued_by_default(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    hold_id = hold(client, wallet, 300, "call-1")

    response = settle(client, hold_id, status="commit", precise_amount=200)

    body = response.json()
    settlements = ledger.transactions(parent_transaction_eq=hold_id)
    assert response.status_code == 200
    assert body["queued"] is True
    assert body["transaction_id"] == hold_id
    assert body["status"] == "INFLIGHT"
    assert len(settlements) == 1
    assert settlements[0]["reference"].startswith(f"{hold_id}_commit_act_")
    assert ledger.get_balance(wallet)["balance"] == 800


def test_second_queued_action_conflicts() -> None:
    with EmbeddedLedger(queue="manual") as ledger:
        wallet = new_wallet(ledger, funds=1_000)
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        hold_id = hold(client, wallet, 300, "call-1")

        first = settle(client, hold_id, status="commit")
        second = settle(client, hold_id, status="void")
        ledger.process_queue()
        balance = ledger.get_balance(wallet)

    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["error_detail"]["code"] == "GEN_CONFLICT"
    assert balance["balance"] == 700


def test_queued_hold_commits_through_parent_id(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    queued = client.post(
        "/transactions",
        json=spend(wallet, 300, "call-1", inflight=True, skip_queue=False),
    ).json()

    response = settle(
        client, queued["transaction_id"], status="commit", skip_queue=True
    )

    child = client.get("/transactions/reference/call-1_q").json()
    assert child["status"] == "INFLIGHT"
    assert response.json()["parent_transaction"] == child["transaction_id"]
    assert ledger.get_balance(wallet)["balance"] == 700


@pytest.mark.parametrize(
    ("target", "body", "status", "code"),
    [
        pytest.param(
            "hold", {"status": "COMMIT"}, 400, "TXN_INVALID_STATUS_ACTION", id="status"
        ),
        pytest.param(
            "hold",
            {"status": "commit", "precise_amount": 0},
            400,
            "TXN_INVALID_AMOUNT",
            id="zero",
        ),
        pytest.param(
            "applied", {"status": "commit"}, 400, "TXN_NOT_INFLIGHT", id="applied"
        ),
        pytest.param(
            "applied",
            {"status": "commit", "skip_queue": True},
            400,
            "TXN_NOT_INFLIGHT",
            id="applied-sync",
        ),
        pytest.param("unknown", {"status": "void"}, 404, "TXN_NOT_FOUND", id="unknown"),
        pytest.param(
            "hold", {"status": 1}, 400, "GEN_MALFORMED_REQUEST", id="malformed"
        ),
    ],
)
def test_inflight_update_errors(
    ledger: EmbeddedLedger,
    client: httpx.Client,
    target: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ids = {
        "hold": hold(client, wallet, 300, "call-1"),
        "applied": client.post("/transactions", json=spend(wallet, 5, "x")).json()[
            "transaction_id"
        ],
        "unknown": "txn_unknown",
    }

    response = settle(client, ids[target], **body)

    assert response.status_code == status
    assert response.json()["error_detail"]["code"] == code
    assert ledger.get_balance(wallet)["inflight_debit_balance"] == 300


def test_expired_hold_voided_on_next_request() -> None:
    clock = Clock()
    with EmbeddedLedger(clock=clock) as ledger:
        wallet = new_wallet(ledger, funds=1_000)
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        expiry = (clock.now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        hold_id = hold(client, wallet, 300, "call-1", inflight_expiry_date=expiry)

        before = ledger.get_balance(wallet)
        clock.now += timedelta(minutes=11)
        after = ledger.get_balance(wallet)
        settlements = ledger.transactions(parent_transaction_eq=hold_id)

    assert before["inflight_debit_balance"] == 300
    assert after["inflight_debit_balance"] == 0
    assert after["balance"] == 1_000
    assert [row["status"] for row in settlements] == ["VOID"]


def test_commit_date_commits_the_hold() -> None:
    clock = Clock()
    with EmbeddedLedger(clock=clock) as ledger:
        wallet = new_wallet(ledger, funds=1_000)
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        when = (clock.now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        hold(client, wallet, 300, "call-1", inflight_commit_date=when)

        clock.now += timedelta(hours=2)
        balance = ledger.get_balance(wallet)

    assert balance["balance"] == 700
    assert balance["inflight_debit_balance"] == 0


def test_bulk_void_reports_each_item(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    open_hold = hold(client, wallet, 100, "call-1")
    voided = hold(client, wallet, 100, "call-2")
    settle(client, voided, status="void", skip_queue=True)

    response = client.post(
        "/transactions/inflight/bulk/void",
        json={
            "transaction_ids": [open_hold, voided, "txn_unknown"],
            "skip_queue": True,
        },
    )

    body = response.json()
    assert response.status_code == 200
    assert body["succeeded"] == 1
    assert body["failed"] == 2
    assert [result.get("code") for result in body["results"]] == [
        None,
        "ALREADY_VOIDED",
        "NOT_FOUND",
    ]
    assert ledger.get_balance(wallet)["inflight_debit_balance"] == 0


def test_bulk_commit_queues_items(ledger: EmbeddedLedger, client: httpx.Client) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    first = hold(client, wallet, 100, "call-1")
    second = hold(client, wallet, 100, "call-2")
    items = [
        {"transaction_id": first, "precise_amount": 60},
        {"transaction_id": second},
    ]

    response = client.post(
        "/transactions/inflight/bulk/commit", json={"transactions": items}
    )

    body = response.json()
    assert body["succeeded"] == 2
    assert [result["code"] for result in body["results"]] == ["QUEUED", "QUEUED"]
    balance = ledger.get_balance(wallet)
    assert balance["debit_balance"] == 160
    assert balance["inflight_debit_balance"] == 40


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        pytest.param("void", {"transaction_ids": []}, "TXN_BULK_EMPTY", id="empty"),
        pytest.param(
            "void",
            {"transaction_ids": ["t"] * 101},
            "TXN_BULK_LIMIT_EXCEEDED",
            id="limit",
        ),
        pytest.param(
            "commit", {"transactions": "x"}, "GEN_MALFORMED_REQUEST", id="shape"
        ),
    ],
)
def test_bulk_inflight_shape_errors(
    client: httpx.Client, path: str, body: dict[str, Any], code: str
) -> None:
    response = client.post(f"/transactions/inflight/bulk/{path}", json=body)

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == code
