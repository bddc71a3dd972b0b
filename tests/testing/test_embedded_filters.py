from __future__ import annotations

from typing import Any

import httpx
import pytest
from embedded_helpers import new_wallet, spend

from blnk_meter.testing import EmbeddedLedger


@pytest.fixture
def wallet(ledger: EmbeddedLedger, client: httpx.Client) -> str:
    """A wallet with three January usages, one in February and a refund."""
    balance_id = new_wallet(ledger, funds=10_000)
    postings = [
        ("jan-1", 100, "2026-01-05T10:00:00Z", {"customer_id": "c1", "tokens": 10}),
        ("jan-2", 200, "2026-01-20T10:00:00Z", {"customer_id": "c2", "tokens": 20}),
        ("jan-3", 300, "2026-01-31T23:00:00Z", {"customer_id": "c1", "tokens": 30}),
        ("feb-1", 400, "2026-02-01T00:00:00Z", {"customer_id": "c1"}),
    ]
    for reference, cents, effective, meta in postings:
        body = spend(
            balance_id, cents, reference, effective_date=effective, meta_data=meta
        )
        client.post("/transactions", json=body)
    refunded = client.get("/transactions/reference/jan-2").json()["transaction_id"]
    client.post(f"/refund-transaction/{refunded}", json={"skip_queue": True})
    return balance_id


def run_filter(client: httpx.Client, *filters: dict[str, Any], **options: Any) -> Any:
    response = client.post(
        "/transactions/filter", json={"filters": list(filters), **options}
    )
    assert response.status_code == 200, response.text
    return response.json()


def references(rows: list[dict[str, Any]]) -> list[str]:
    return [row["reference"] for row in rows]


def test_invoice_query_matches_both_directions(
    client: httpx.Client, wallet: str
) -> None:
    january = ["2026-01-01T00:00:00Z", "2026-01-31T23:59:59Z"]

    rows = run_filter(
        client,
        {"field": "balance_id", "operator": "eq", "value": wallet},
        {"field": "status", "operator": "eq", "value": "APPLIED"},
        {"field": "effective_date", "operator": "between", "values": january},
        sort_by="effective_date",
        sort_order="asc",
        include_count=True,
    )

    assert rows["total_count"] == 3
    assert references(rows["data"]) == ["jan-1", "jan-2", "jan-3"]


def test_balance_id_includes_incoming_refund(client: httpx.Client, wallet: str) -> None:
    rows = run_filter(
        client,
        {"field": "balance_id", "operator": "eq", "value": wallet},
        {"field": "status", "operator": "eq", "value": "APPLIED"},
    )

    incoming = [row for row in rows if row["destination"] == wallet]
    assert len(rows) == 6
    assert len(incoming) == 2
    assert any(row["reference"].endswith("_refund") for row in incoming)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        pytest.param(
            {"field": "meta_data.customer_id", "operator": "eq", "value": "c2"},
            ["jan-2"],
            id="eq",
        ),
        pytest.param(
            {"field": "meta_data.customer_id", "operator": "in", "values": ["c2", "x"]},
            ["jan-2"],
            id="in",
        ),
        pytest.param(
            {"field": "meta_data.tokens", "operator": "gte", "value": 20},
            ["jan-2", "jan-3"],
            id="numeric",
        ),
        pytest.param(
            {"field": "meta_data.tokens", "operator": "isnull"},
            ["feb-1"],
            id="isnull",
        ),
        pytest.param(
            {"field": "reference", "operator": "like", "value": "jan-%"},
            ["jan-1", "jan-2", "jan-3"],
            id="like",
        ),
        pytest.param(
            {"field": "reference", "operator": "in", "values": ["feb-1", "jan-1"]},
            ["jan-1", "feb-1"],
            id="in-column",
        ),
    ],
)
def test_filter_operators_select_rows(
    client: httpx.Client, wallet: str, condition: dict[str, Any], expected: list[str]
) -> None:
    rows = run_filter(
        client,
        condition,
        {"field": "source", "operator": "eq", "value": wallet},
        sort_by="effective_date",
        sort_order="asc",
    )

    assert references(rows) == expected


def test_logical_or_combines_conditions(client: httpx.Client, wallet: str) -> None:
    rows = run_filter(
        client,
        {"field": "reference", "operator": "eq", "value": "jan-1"},
        {"field": "reference", "operator": "eq", "value": "feb-1"},
        logical_operator="or",
    )

    assert sorted(references(rows)) == ["feb-1", "jan-1"]


def test_limit_over_100_becomes_20(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100_000)
    for index in range(25):
        client.post("/transactions", json=spend(wallet, 1, f"use-{index}"))

    capped = run_filter(client, limit=101)
    full = run_filter(client, limit=100)
    second_page = run_filter(client, limit=10, offset=20, sort_order="asc")

    assert len(capped) == 20
    assert len(full) == 26
    assert references(second_page) == [f"use-{index}" for index in range(19, 25)]


def test_query_string_filters(client: httpx.Client, wallet: str) -> None:
    params = {
        "meta_data.customer_id_eq": "c1",
        "effective_date_between": "2026-01-01|2026-01-31T23:59:59Z",
    }

    rows = client.get("/transactions", params=params).json()
    day = client.get("/transactions", params={"effective_date_eq": "2026-01-20"}).json()
    several = client.get("/transactions", params={"reference_in": "jan-1,feb-1"}).json()

    assert sorted(references(rows)) == ["jan-1", "jan-3"]
    assert references(day) == ["jan-2"]
    assert sorted(references(several)) == ["feb-1", "jan-1"]


def test_query_string_parse_errors_list_params(client: httpx.Client) -> None:
    response = client.get("/transactions", params={"created_at_between": "2026-01-01"})

    body = response.json()
    assert response.status_code == 400
    assert body["error_detail"]["code"] == "GEN_VALIDATION_ERROR"
    assert body["errors"][0]["Param"] == "created_at_between"


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param({"field": "colour", "operator": "eq", "value": "x"}, id="field"),
        pytest.param(
            {"field": "status", "operator": "has", "value": "x"}, id="operator"
        ),
        pytest.param(
            {"field": "status", "operator": "between", "values": ["a"]}, id="pair"
        ),
        pytest.param(
            {"field": "balance_id", "operator": "gt", "value": "x"}, id="balance"
        ),
        pytest.param(
            {"field": "meta_data.1x", "operator": "eq", "value": 1}, id="json-key"
        ),
        pytest.param(
            {"field": "status", "operator": "in", "values": []}, id="empty-in"
        ),
    ],
)
def test_invalid_filter_is_bad_request(
    client: httpx.Client, condition: dict[str, Any]
) -> None:
    response = client.post("/transactions/filter", json={"filters": [condition]})

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "GEN_BAD_REQUEST"
    assert response.json()["error"].startswith("Invalid filter: ")


def test_transactions_helper_reads_all_pages(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100_000)
    for index in range(105):
        client.post("/transactions", json=spend(wallet, 1, f"use-{index}"))

    everything = ledger.transactions(source_eq=wallet)
    one_page = ledger.transactions(source_eq=wallet, limit=5)

    assert len(everything) == 105
    assert len({row["reference"] for row in everything}) == 105
    assert len(one_page) == 5
