"""Single transactions posted with ``skip_queue``: amounts, validation, references."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk

UNKNOWN_TRANSACTION = "txn_00000000-0000-4000-8000-000000000000"


def test_precise_amount_moves_minor_units(client: httpx.Client, blnk: Blnk) -> None:
    source_id = blnk.new_balance()
    destination_id = blnk.new_balance()
    blnk.fund(source_id, 50_000)
    body = blnk.transaction(source_id, destination_id, 12_345)

    response = client.post("/transactions", json=body)
    txn = response.json()

    assert response.status_code == 201
    assert txn["transaction_id"].startswith("txn_")
    assert txn["status"] == "APPLIED"
    assert txn["reference"] == body["reference"]
    assert txn["source"] == source_id
    assert txn["destination"] == destination_id
    assert txn["currency"] == "USD"
    assert txn["precise_amount"] == 12_345
    assert isinstance(txn["precise_amount"], int)
    assert txn["precision"] == 100
    assert txn["amount"] == 123.45
    assert blnk.balance(source_id)["balance"] == 50_000 - 12_345
    assert blnk.balance(destination_id)["balance"] == 12_345


def test_transaction_keeps_own_meta_data(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world,
        balance_id,
        10,
        allow_overdraft=True,
        meta_data={"customer_id": "cus-1", "model": "gpt-4o-mini"},
    )

    txn = blnk.post_transaction(body)
    fetched = blnk.find_reference(body["reference"])

    assert txn["meta_data"]["customer_id"] == "cus-1"
    assert txn["meta_data"]["model"] == "gpt-4o-mini"
    assert fetched is not None
    assert fetched["meta_data"]["customer_id"] == "cus-1"


def test_precise_amount_string_rejected(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, 0, allow_overdraft=True)
    body["precise_amount"] = "500"

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
    assert blnk.find_reference(body["reference"]) is None
    assert blnk.balance(balance_id)["balance"] == 0


def test_precision_fraction_rejected(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world, balance_id, 500, allow_overdraft=True, precision=2.5
    )

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_PRECISION_NOT_INTEGER"
    assert blnk.balance(balance_id)["balance"] == 0


def test_precision_absent_means_one(blnk: Blnk) -> None:
    balance_id = blnk.new_balance("TOKENS")
    body = blnk.transaction(blnk.world, balance_id, 7, "TOKENS", allow_overdraft=True)
    del body["precision"]

    txn = blnk.post_transaction(body)

    assert txn["precision"] == 1
    assert txn["precise_amount"] == 7
    assert txn["amount"] == 7
    assert blnk.balance(balance_id)["balance"] == 7


def test_precision_zero_means_one(blnk: Blnk) -> None:
    balance_id = blnk.new_balance("TOKENS")
    body = blnk.transaction(
        blnk.world, balance_id, 7, "TOKENS", allow_overdraft=True, precision=0
    )

    txn = blnk.post_transaction(body)

    assert txn["precision"] == 1
    assert blnk.balance(balance_id)["balance"] == 7


def test_large_precision_keeps_exact_amount(blnk: Blnk) -> None:
    balance_id = blnk.new_balance("USD-MICRO")
    body = blnk.transaction(
        blnk.world,
        balance_id,
        123_456_789_012,
        "USD-MICRO",
        allow_overdraft=True,
        precision=100_000_000,
    )

    txn = blnk.post_transaction(body)

    assert txn["precise_amount"] == 123_456_789_012
    assert txn["precision"] == 100_000_000
    assert blnk.balance(balance_id)["balance"] == 123_456_789_012


def test_amount_converted_with_precision(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, 0, allow_overdraft=True)
    del body["precise_amount"]
    body["amount"] = 0.1

    txn = blnk.post_transaction(body)

    assert txn["precise_amount"] == 10
    assert blnk.balance(balance_id)["balance"] == 10


def test_amount_with_precise_amount_rejected(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world, balance_id, 500, allow_overdraft=True, amount=5.0
    )

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    assert blnk.find_reference(body["reference"]) is None


def test_negative_precise_amount_rejected(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, -500, allow_overdraft=True)

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    assert blnk.find_reference(body["reference"]) is None


@pytest.mark.parametrize("field", ["description", "reference", "currency"])
def test_transaction_missing_field_rejected(
    client: httpx.Client, blnk: Blnk, field: str
) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, 500, allow_overdraft=True)
    del body[field]

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15, which still names the message key "errors"
    # for field validation, where other errors use "error".
    assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
    assert isinstance(response.json()["errors"], str)
    assert blnk.balance(balance_id)["balance"] == 0


def test_transaction_empty_description_rejected(
    client: httpx.Client, blnk: Blnk
) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(
        blnk.world, balance_id, 500, allow_overdraft=True, description=""
    )

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
    assert blnk.find_reference(body["reference"]) is None


@pytest.mark.usefixtures("main_branch_only")
def test_source_equal_to_destination_rejected(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    blnk.fund(balance_id, 1_000)
    body = blnk.transaction(balance_id, balance_id, 100)

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    assert blnk.find_reference(body["reference"]) is None
    assert blnk.balance(balance_id)["balance"] == 1_000


def test_unknown_source_balance_is_404(client: httpx.Client, blnk: Blnk) -> None:
    destination_id = blnk.new_balance()
    unknown = "bln_00000000-0000-4000-8000-000000000000"
    body = blnk.transaction(unknown, destination_id, 100, allow_overdraft=True)

    response = client.post("/transactions", json=body)

    assert response.status_code == 404
    assert blnk.find_reference(body["reference"]) is None


def test_insufficient_funds_writes_nothing(client: httpx.Client, blnk: Blnk) -> None:
    source_id = blnk.new_balance()
    destination_id = blnk.new_balance()
    blnk.fund(source_id, 1_000)
    body = blnk.transaction(source_id, destination_id, 1_001)

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    # The code is new in Blnk v0.15, and the message text is older.
    assert response.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert "insufficient funds" in response.json()["error"]
    assert blnk.find_reference(body["reference"]) is None
    assert blnk.balance(source_id)["balance"] == 1_000
    assert blnk.balance(destination_id)["balance"] == 0


def test_insufficient_funds_leaves_reference_reusable(
    client: httpx.Client, blnk: Blnk
) -> None:
    source_id = blnk.new_balance()
    destination_id = blnk.new_balance()
    body = blnk.transaction(source_id, destination_id, 1_000)
    rejected = client.post("/transactions", json=body)
    blnk.fund(source_id, 1_000)

    retried = client.post("/transactions", json=body)

    assert rejected.status_code == 400
    assert retried.status_code == 201
    assert retried.json()["reference"] == body["reference"]
    assert blnk.balance(destination_id)["balance"] == 1_000


def test_overdraft_allows_negative_balance(blnk: Blnk) -> None:
    source_id = blnk.new_balance()
    destination_id = blnk.new_balance()
    body = blnk.transaction(source_id, destination_id, 2_500, allow_overdraft=True)

    txn = blnk.post_transaction(body)

    assert txn["status"] == "APPLIED"
    assert blnk.balance(source_id)["balance"] == -2_500
    assert blnk.balance(destination_id)["balance"] == 2_500


def test_duplicate_reference_is_409(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, 300, allow_overdraft=True)
    first = client.post("/transactions", json=body)

    second = client.post("/transactions", json=body)

    assert first.status_code == 201
    assert second.status_code == 409
    # The code and the 409 are new in Blnk v0.15. v0.14 and older respond 400.
    assert second.json()["error_detail"]["code"] == "TXN_DUPLICATE_REFERENCE"
    assert "transaction_id" not in second.json()
    assert blnk.balance(balance_id)["balance"] == 300


def test_reference_lookup_returns_transaction(blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    body = blnk.transaction(blnk.world, balance_id, 300, allow_overdraft=True)
    txn = blnk.post_transaction(body)

    found = blnk.find_reference(body["reference"])

    assert found is not None
    assert found["transaction_id"] == txn["transaction_id"]
    assert found["reference"] == body["reference"]
    assert found["status"] == "APPLIED"
    assert found["precise_amount"] == 300
    assert found["currency"] == "USD"
    assert found["source"] == txn["source"]
    assert found["destination"] == balance_id
    # Blnk v0.15 does not read the precision column on this endpoint.
    assert found["precision"] == 0


def test_reference_lookup_unknown_is_404(client: httpx.Client, blnk: Blnk) -> None:
    response = client.get(f"/transactions/reference/{blnk.reference('missing')}")

    assert response.status_code == 404
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_NOT_FOUND"


def test_transaction_get_by_id(client: httpx.Client, blnk: Blnk) -> None:
    balance_id = blnk.new_balance()
    txn = blnk.fund(balance_id, 400)

    response = client.get(f"/transactions/{txn['transaction_id']}")

    assert response.status_code == 200
    assert response.json()["transaction_id"] == txn["transaction_id"]
    assert response.json()["precise_amount"] == 400
    assert response.json()["precision"] == 100
    assert response.json()["status"] == "APPLIED"


def test_transaction_get_unknown_is_404(client: httpx.Client) -> None:
    response = client.get(f"/transactions/{UNKNOWN_TRANSACTION}")

    assert response.status_code == 404
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "TXN_NOT_FOUND"
