"""Hostile request bodies: each gets a Blnk-shaped response, never a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from embedded_helpers import new_wallet, spend

from blnk_meter.testing import EmbeddedLedger


def post_raw(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        # Blnk counts the digits of the float written out in full, so these
        # fail its 15-significant-digit rule.
        pytest.param({"amount": 1e28}, "TXN_VALIDATION_ERROR", id="amount-1e28"),
        pytest.param({"amount": 1e300}, "TXN_VALIDATION_ERROR", id="amount-1e300"),
        pytest.param(
            {"precise_amount": 10**30}, "TXN_INVALID_AMOUNT", id="precise-30-digits"
        ),
        pytest.param({"precision": 1e300}, "TXN_INVALID_AMOUNT", id="precision-1e300"),
    ],
)
def test_huge_numbers_rejected_not_crashed(
    ledger: EmbeddedLedger, client: httpx.Client, fields: dict[str, Any], code: str
) -> None:
    wallet = new_wallet(ledger, funds=100)
    body = spend(wallet, 1, "huge")
    if "amount" in fields:
        del body["precise_amount"]
    body.update(fields)

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == code
    assert len(response.text) < 1000


def test_precise_amount_of_5000_digits_rejected(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)
    body = httpx.Request("POST", "/", json=spend(wallet, 1, "huge")).content
    body = body.replace(
        b'"precise_amount":1,', b'"precise_amount":' + b"9" * 5000 + b","
    )
    assert b"9" * 5000 in body

    response = post_raw(client, "/transactions", body)

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "TXN_INVALID_AMOUNT"
    assert len(response.text) < 1000


def test_huge_overdraft_limit_allows_spend(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger)
    body = {**spend(wallet, 500, "overdraft"), "overdraft_limit": 1e300}

    response = client.post("/transactions", json=body)

    assert response.status_code == 201
    assert ledger.get_balance(wallet)["balance"] == -500


def test_huge_inflight_commit_amount_rejected(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1000)
    hold = client.post(
        "/transactions", json={**spend(wallet, 100, "hold"), "inflight": True}
    )
    transaction_id = hold.json()["transaction_id"]

    response = client.put(
        f"/transactions/inflight/{transaction_id}",
        json={"status": "commit", "amount": 1e300},
    )

    assert response.status_code == 400
    assert "error" in response.json()


def test_deeply_nested_body_is_malformed(client: httpx.Client) -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    response = post_raw(client, "/transactions", body)

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"


def test_body_over_five_mib_is_rejected(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)
    body = {**spend(wallet, 1, "large"), "meta_data": {"blob": "x" * (5 * 2**20)}}

    response = client.post("/transactions", json=body)
    listed = client.get("/transactions").json()

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
    assert [txn for txn in listed if txn["reference"] == "large"] == []


def test_lone_surrogate_becomes_replacement(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)
    body = httpx.Request("POST", "/", json=spend(wallet, 1, "REF")).content
    body = body.replace(b'"REF"', b'"a\\ud800"')

    response = post_raw(client, "/transactions", body)

    assert response.status_code == 201
    assert response.json()["reference"] == "a\ufffd"


@pytest.mark.parametrize(
    "query",
    ["limit=99999999999999999999999", "offset=99999999999999999999999"],
    ids=["limit", "offset"],
)
def test_out_of_range_page_falls_back(
    ledger: EmbeddedLedger, client: httpx.Client, query: str
) -> None:
    wallet = new_wallet(ledger, funds=100)

    response = client.get(f"/transactions?{query}")

    assert response.status_code == 200
    assert [txn["destination"] for txn in response.json()] == [wallet]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested"),
        pytest.param(b'{"down_for": null}', id="null-down-for"),
    ],
)
def test_bad_fault_request_is_rejected(client: httpx.Client, body: bytes) -> None:
    response = post_raw(client, "/_embedded/faults", body)
    listed = client.get("/_embedded/faults").json()

    assert response.status_code == 400
    assert "invalid fault request" in response.json()["error"]
    assert listed["down"] is False


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        pytest.param("balance_gt=" + "9" * 40, False, id="gt-40-digits"),
        pytest.param("balance_lt=" + "9" * 400, True, id="lt-400-digits"),
        pytest.param("balance_gt=-" + "9" * 40, True, id="gt-negative-40-digits"),
    ],
)
def test_filter_beyond_64_bits_compares(
    ledger: EmbeddedLedger, client: httpx.Client, query: str, matches: bool
) -> None:
    wallet = new_wallet(ledger, funds=100)

    response = client.get(f"/balances?{query}")

    assert response.status_code == 200
    assert (wallet in [row["balance_id"] for row in response.json()]) is matches


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_server_rejects_large_body(ledger: EmbeddedLedger, chunked: bool) -> None:
    wallet = new_wallet(ledger, funds=100)
    body = json.dumps(
        {**spend(wallet, 1, "large"), "meta_data": {"blob": "x" * (6 * 2**20)}}
    ).encode()
    content: Any = iter([body[: 2**20], body[2**20 :]]) if chunked else body

    with ledger.serve() as server, httpx.Client(base_url=server.url) as http:
        response = http.post(
            "/transactions",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        after = http.post("/transactions", json=spend(wallet, 1, "small"))

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
    assert after.status_code == 201
    assert ledger.get_balance(wallet)["balance"] == 99
