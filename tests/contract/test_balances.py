"""Balances: the object, its invariants, indicator balances and history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk

AMOUNT_FIELDS = [
    "balance",
    "credit_balance",
    "debit_balance",
    "inflight_balance",
    "inflight_credit_balance",
    "inflight_debit_balance",
]
UNKNOWN_BALANCE = "bln_00000000-0000-4000-8000-000000000000"


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def test_balance_create_returns_zeroed_balance(
    client: httpx.Client, blnk: Blnk
) -> None:
    body = {"ledger_id": blnk.ledger_id, "currency": "TOKENS"}

    response = client.post("/balances", json=body)
    balance = response.json()

    assert response.status_code == 201
    assert balance["balance_id"].startswith("bln_")
    assert balance["ledger_id"] == blnk.ledger_id
    assert balance["currency"] == "TOKENS"
    for field in AMOUNT_FIELDS:
        assert _is_integer(balance[field]), field
        assert balance[field] == 0, field


def test_balance_get_returns_integer_amounts(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    blnk.fund(balance_id, 12345)

    balance = blnk.balance(balance_id)

    assert balance["balance_id"] == balance_id
    for field in AMOUNT_FIELDS:
        assert _is_integer(balance[field]), field
    assert balance["balance"] == 12345


def test_balance_has_no_precision_field(client: httpx.Client, blnk: Blnk) -> None:
    body = {"ledger_id": blnk.ledger_id, "currency": "USD", "precision": 100}

    created = client.post("/balances", json=body)
    fetched = blnk.balance(created.json()["balance_id"])

    assert created.status_code == 201
    assert "precision" not in created.json()
    assert "precision" not in fetched


def test_balance_invariants_hold_after_postings(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    other_id = blnk.new_balance()
    blnk.fund(balance_id, 10_000)
    blnk.post_transaction(blnk.transaction(balance_id, other_id, 2_500))
    blnk.post_transaction(blnk.transaction(balance_id, other_id, 1_000, inflight=True))

    balance = blnk.balance(balance_id)

    assert balance["credit_balance"] == 10_000
    assert balance["debit_balance"] == 2_500
    assert balance["balance"] == balance["credit_balance"] - balance["debit_balance"]
    assert balance["inflight_debit_balance"] == 1_000
    assert balance["inflight_balance"] == (
        balance["inflight_credit_balance"] - balance["inflight_debit_balance"]
    )


def test_balances_are_not_unique(client: httpx.Client, blnk: Blnk) -> None:
    body = {"ledger_id": blnk.ledger_id, "currency": "USD"}

    first = client.post("/balances", json=body)
    second = client.post("/balances", json=body)

    assert first.status_code == 201
    assert second.status_code == 201
    assert first.json()["balance_id"] != second.json()["balance_id"]


def test_balance_get_unknown_is_404(client: httpx.Client) -> None:
    response = client.get(f"/balances/{UNKNOWN_BALANCE}")

    assert response.status_code == 404
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "BAL_NOT_FOUND"


def test_balance_unknown_ledger_rejected(client: httpx.Client) -> None:
    body = {"ledger_id": "ldg_00000000-0000-4000-8000-000000000000", "currency": "USD"}

    response = client.post("/balances", json=body)

    assert response.status_code == 400


@pytest.mark.parametrize("missing", ["ledger_id", "currency"])
def test_balance_missing_field_rejected(
    client: httpx.Client, blnk: Blnk, missing: str
) -> None:
    body = {"ledger_id": blnk.ledger_id, "currency": "USD"}
    del body[missing]

    response = client.post("/balances", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "GEN_VALIDATION_ERROR"


@pytest.mark.usefixtures("main_branch_only")
def test_indicator_balance_found_by_lookup(client: httpx.Client, blnk: Blnk) -> None:
    indicator = blnk.indicator("Revenue")
    body = {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": indicator}

    created = client.post("/balances", json=body)
    found = blnk.indicator_balance(indicator, "USD")

    assert created.status_code == 201
    assert created.json()["indicator"] == indicator
    assert found["balance_id"] == created.json()["balance_id"]
    assert found["indicator"] == indicator
    assert found["ledger_id"] == "general_ledger_id"


@pytest.mark.usefixtures("main_branch_only")
def test_indicator_lookup_accepts_encoded_at(client: httpx.Client, blnk: Blnk) -> None:
    indicator = blnk.indicator("Revenue")
    body = {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": indicator}
    created = client.post("/balances", json=body).json()
    encoded = "%40" + indicator[1:]

    response = client.get(f"/balances/indicator/{encoded}/currency/USD")

    assert response.status_code == 200
    assert response.json()["balance_id"] == created["balance_id"]


def test_indicator_lookup_does_not_create(client: httpx.Client, blnk: Blnk) -> None:
    path = f"/balances/indicator/{blnk.indicator('Nowhere')}/currency/USD"

    first = client.get(path)
    second = client.get(path)

    assert first.status_code == 404
    # The code is new in Blnk v0.15.
    assert first.json()["error_detail"]["code"] == "BAL_NOT_FOUND"
    assert second.status_code == 404


@pytest.mark.usefixtures("main_branch_only")
def test_indicator_outside_general_ledger_rejected(
    client: httpx.Client, blnk: Blnk
) -> None:
    body = {
        "ledger_id": blnk.ledger_id,
        "currency": "USD",
        "indicator": blnk.indicator("Revenue"),
    }

    response = client.post("/balances", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "GEN_VALIDATION_ERROR"


@pytest.mark.usefixtures("main_branch_only")
def test_indicator_without_at_sign_rejected(client: httpx.Client, blnk: Blnk) -> None:
    indicator = blnk.indicator("Revenue")[1:]
    body = {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": indicator}

    response = client.post("/balances", json=body)

    assert response.status_code == 400


@pytest.mark.usefixtures("main_branch_only")
def test_indicator_duplicate_is_409(client: httpx.Client, blnk: Blnk) -> None:
    indicator = blnk.indicator("Revenue")
    body = {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": indicator}
    first = client.post("/balances", json=body)

    second = client.post("/balances", json=body)

    assert first.status_code == 201
    assert second.status_code == 409
    # The code is new in Blnk v0.15.
    assert second.json()["error_detail"]["code"] == "GEN_CONFLICT"


@pytest.mark.usefixtures("main_branch_only")
def test_indicator_reused_in_other_currency(client: httpx.Client, blnk: Blnk) -> None:
    indicator = blnk.indicator("Revenue")
    usd = {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": indicator}
    tokens = {**usd, "currency": "TOKENS"}

    first = client.post("/balances", json=usd)
    second = client.post("/balances", json=tokens)

    assert first.status_code == 201
    assert second.status_code == 201
    assert first.json()["balance_id"] != second.json()["balance_id"]


def test_indicator_created_per_currency(blnk: Blnk) -> None:
    balance_usd = blnk.new_balance("USD")
    balance_tokens = blnk.new_balance("TOKENS")

    usd_txn = blnk.fund(balance_usd, 500, "USD")
    tokens_txn = blnk.fund(balance_tokens, 700, "TOKENS")
    world_usd = blnk.indicator_balance(blnk.world, "USD")
    world_tokens = blnk.indicator_balance(blnk.world, "TOKENS")

    assert world_usd["balance_id"] != world_tokens["balance_id"]
    assert world_usd["ledger_id"] == "general_ledger_id"
    assert world_tokens["ledger_id"] == "general_ledger_id"
    assert usd_txn["source"] == world_usd["balance_id"]
    assert tokens_txn["source"] == world_tokens["balance_id"]
    assert world_usd["balance"] == -500
    assert world_tokens["balance"] == -700


def test_indicator_source_needs_overdraft(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.indicator("World"), balance_id, 100)

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"


def test_balance_at_counts_effective_date(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    january = blnk.transaction(
        blnk.world,
        balance_id,
        300,
        allow_overdraft=True,
        effective_date="2020-01-10T00:00:00Z",
    )
    march = {**january, "reference": blnk.reference("txn"), "precise_amount": 40}
    march["effective_date"] = "2020-03-10T00:00:00Z"
    blnk.post_transaction(january)
    blnk.post_transaction(march)

    params = {"timestamp": "2020-02-01T00:00:00Z", "from_source": "true"}
    response = client.get(f"/balances/{balance_id}/at", params=params)
    body = response.json()

    assert response.status_code == 200
    assert body["balance"]["balance_id"] == balance_id
    assert body["balance"]["currency"] == "USD"
    assert body["balance"]["balance"] == 300
    assert body["balance"]["credit_balance"] == 300
    assert body["balance"]["debit_balance"] == 0
    assert body["from_source"] is True
    assert isinstance(body["timestamp"], str)


def test_balance_at_now_counts_everything(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    other_id = blnk.new_balance()
    blnk.fund(balance_id, 1_000)
    blnk.post_transaction(blnk.transaction(balance_id, other_id, 250))

    response = client.get(f"/balances/{balance_id}/at", params={"from_source": "true"})
    history = response.json()["balance"]

    assert response.status_code == 200
    assert history["balance"] == 750
    assert history["credit_balance"] == 1_000
    assert history["debit_balance"] == 250


def test_balance_at_skips_inflight_holds(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    other_id = blnk.new_balance()
    blnk.fund(balance_id, 1_000)
    blnk.post_transaction(blnk.transaction(balance_id, other_id, 250, inflight=True))

    response = client.get(f"/balances/{balance_id}/at", params={"from_source": "true"})

    assert response.status_code == 200
    assert response.json()["balance"]["balance"] == 1_000


def test_balance_at_invalid_timestamp_rejected(
    client: httpx.Client, blnk: Blnk
) -> None:
    balance_id = blnk.new_balance()

    response = client.get(
        f"/balances/{balance_id}/at", params={"timestamp": "2020-02-01"}
    )

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "BAL_INVALID_TIMESTAMP"
