"""Reading transactions for invoices: ``POST /transactions/filter`` and
``GET /transactions`` with query-string filters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk


def _balance_filter(balance_id: str, *extra: dict[str, Any]) -> dict[str, Any]:
    filters = [{"field": "balance_id", "operator": "eq", "value": balance_id}]
    return {"filters": [*filters, *extra]}


def _references(rows: list[dict[str, Any]]) -> set[str]:
    return {row["reference"] for row in rows}


def _post_many(blnk: Blnk, balance_id: str, count: int) -> None:
    legs = [
        blnk.transaction(blnk.world, balance_id, 1, allow_overdraft=True)
        for _ in range(count)
    ]
    body = {"transactions": legs, "skip_queue": True}
    response = blnk.client.post("/transactions/bulk", json=body)
    assert response.status_code == 201, response.text


def test_filter_balance_id_matches_both_sides(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    other_id = blnk.new_balance()
    credit = blnk.fund(balance_id, 1_000)
    debit = blnk.post_transaction(blnk.transaction(balance_id, other_id, 300))
    unrelated = blnk.fund(other_id, 50)

    rows = blnk.filter_transactions(_balance_filter(balance_id))

    assert credit["reference"] in _references(rows)
    assert debit["reference"] in _references(rows)
    assert unrelated["reference"] not in _references(rows)
    assert len(rows) == 2


def test_filter_status_excludes_holds(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    other_id = blnk.new_balance()
    credit = blnk.fund(balance_id, 1_000)
    hold = blnk.post_transaction(
        blnk.transaction(balance_id, other_id, 300, inflight=True)
    )
    applied = {"field": "status", "operator": "eq", "value": "APPLIED"}

    rows = blnk.filter_transactions(_balance_filter(balance_id, applied))

    assert _references(rows) == {credit["reference"]}
    assert hold["reference"] not in _references(rows)


def test_filter_effective_date_between(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    inside = blnk.transaction(
        blnk.world,
        balance_id,
        100,
        allow_overdraft=True,
        effective_date="2020-01-15T12:00:00Z",
    )
    outside = {
        **inside,
        "reference": blnk.reference("txn"),
        "effective_date": "2020-02-15T12:00:00Z",
    }
    blnk.post_transaction(inside)
    blnk.post_transaction(outside)
    january = {
        "field": "effective_date",
        "operator": "between",
        "values": ["2020-01-01T00:00:00Z", "2020-01-31T23:59:59Z"],
    }

    rows = blnk.filter_transactions(_balance_filter(balance_id, january))

    assert _references(rows) == {inside["reference"]}


def test_filter_created_at_between(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    txn = blnk.fund(balance_id, 100)
    recent = {
        "field": "created_at",
        "operator": "between",
        "values": ["2000-01-01T00:00:00Z", "2999-12-31T23:59:59Z"],
    }
    ancient = {**recent, "values": ["1990-01-01T00:00:00Z", "1999-12-31T23:59:59Z"]}

    found = blnk.filter_transactions(_balance_filter(balance_id, recent))
    missed = blnk.filter_transactions(_balance_filter(balance_id, ancient))

    assert _references(found) == {txn["reference"]}
    assert missed == []


def test_filter_limit_over_100_becomes_20(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    _post_many(blnk, balance_id, 25)

    capped = blnk.filter_transactions({**_balance_filter(balance_id), "limit": 101})
    full = blnk.filter_transactions({**_balance_filter(balance_id), "limit": 100})

    assert len(capped) == 20
    assert len(full) == 25


def test_filter_default_limit_is_20(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    _post_many(blnk, balance_id, 21)

    rows = blnk.filter_transactions(_balance_filter(balance_id))

    assert len(rows) == 20


def test_filter_include_count_wraps_rows(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    _post_many(blnk, balance_id, 3)
    body = {**_balance_filter(balance_id), "limit": 2, "include_count": True}

    result = blnk.filter_transactions(body)

    assert len(result["data"]) == 2
    assert result["total_count"] == 3


def test_filter_offset_pages_rows(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    references = {blnk.fund(balance_id, 10)["reference"] for _ in range(3)}
    body = {
        **_balance_filter(balance_id),
        "sort_by": "created_at",
        "sort_order": "asc",
        "limit": 2,
    }

    first = blnk.filter_transactions({**body, "offset": 0})
    second = blnk.filter_transactions({**body, "offset": 2})

    assert len(first) == 2
    assert len(second) == 1
    assert _references(first) | _references(second) == references


def test_filter_meta_data_key_matches(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    customer = blnk.reference("customer")
    body = blnk.transaction(
        blnk.world,
        balance_id,
        10,
        allow_overdraft=True,
        meta_data={"customer_id": customer},
    )
    txn = blnk.post_transaction(body)
    blnk.fund(balance_id, 20)
    by_customer = {
        "field": "meta_data.customer_id",
        "operator": "eq",
        "value": customer,
    }

    rows = blnk.filter_transactions({"filters": [by_customer]})

    assert _references(rows) == {txn["reference"]}


def test_filter_in_matches_references(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    first = blnk.fund(balance_id, 10)
    second = blnk.fund(balance_id, 20)
    blnk.fund(balance_id, 30)
    wanted = [first["reference"], second["reference"]]

    rows = blnk.filter_transactions(
        {"filters": [{"field": "reference", "operator": "in", "values": wanted}]}
    )

    assert _references(rows) == set(wanted)


def test_filter_unknown_field_rejected(client: httpx.Client) -> None:
    body = {"filters": [{"field": "colour", "operator": "eq", "value": "red"}]}

    response = client.post("/transactions/filter", json=body)

    assert response.status_code == 400


def test_filter_between_needs_two_values(client: httpx.Client) -> None:
    between = {
        "field": "created_at",
        "operator": "between",
        "values": ["2020-01-01T00:00:00Z"],
    }

    response = client.post("/transactions/filter", json={"filters": [between]})

    assert response.status_code == 400


def test_list_filters_by_parent_transaction(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    legs = [
        blnk.transaction(blnk.world, balance_id, amount, allow_overdraft=True)
        for amount in (10, 20)
    ]
    batch = client.post(
        "/transactions/bulk", json={"transactions": legs, "skip_queue": True}
    ).json()

    response = client.get(
        "/transactions", params={"parent_transaction_eq": batch["batch_id"]}
    )

    assert response.status_code == 200
    assert _references(response.json()) == {leg["reference"] for leg in legs}


def test_list_filters_by_meta_data(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    customer = blnk.reference("customer")
    body = blnk.transaction(
        blnk.world,
        balance_id,
        10,
        allow_overdraft=True,
        meta_data={"customer_id": customer},
    )
    txn = blnk.post_transaction(body)

    response = client.get(
        "/transactions", params={"meta_data.customer_id_eq": customer}
    )

    assert response.status_code == 200
    assert _references(response.json()) == {txn["reference"]}


def test_list_filters_with_in_operator(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    first = blnk.fund(balance_id, 10)
    second = blnk.fund(balance_id, 20)
    blnk.fund(balance_id, 30)

    response = client.get(
        "/transactions",
        params={"reference_in": f"{first['reference']},{second['reference']}"},
    )

    assert response.status_code == 200
    assert _references(response.json()) == {first["reference"], second["reference"]}


def test_list_applies_limit(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    _post_many(blnk, balance_id, 3)
    references = ",".join(
        row["reference"]
        for row in blnk.filter_transactions(_balance_filter(balance_id))
    )

    response = client.get(
        "/transactions", params={"reference_in": references, "limit": 2}
    )

    assert response.status_code == 200
    assert len(response.json()) == 2
