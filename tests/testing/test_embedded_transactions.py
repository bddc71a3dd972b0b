from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from embedded_helpers import Clock, new_wallet, spend

from blnk_meter.errors import InsufficientFundsError
from blnk_meter.testing import EmbeddedLedger


def test_skip_queue_applies_and_resolves_indicators(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)

    response = client.post("/transactions", json=spend(wallet, 250, "use-1"))

    body = response.json()
    revenue = ledger.get_balance_by_indicator("@Revenue", "USD")
    assert response.status_code == 201
    assert body["status"] == "APPLIED"
    assert body["source"] == wallet
    assert body["destination"] == revenue["balance_id"]
    assert body["transaction_id"].startswith("txn_")
    assert revenue["credit_balance"] == 250
    balance = ledger.get_balance(wallet)
    assert balance["balance"] == 750
    assert balance["balance"] == balance["credit_balance"] - balance["debit_balance"]


def test_insufficient_funds_writes_nothing(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)

    rejected = client.post("/transactions", json=spend(wallet, 101, "use-1"))
    retried = client.post("/transactions", json=spend(wallet, 100, "use-1"))

    assert rejected.status_code == 400
    assert rejected.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert retried.status_code == 201
    assert ledger.get_balance(wallet)["balance"] == 0


def test_convenience_call_raises_insufficient_funds(ledger: EmbeddedLedger) -> None:
    wallet = new_wallet(ledger, funds=100)

    with pytest.raises(InsufficientFundsError) as raised:
        ledger.record_transaction(spend(wallet, 500, "use-1"))

    assert raised.value.status == 400
    assert raised.value.code == "TXN_INSUFFICIENT_FUNDS"
    assert raised.value.references == ("use-1",)


def test_available_funds_exclude_inflight_holds(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)
    client.post("/transactions", json=spend(wallet, 80, "hold", inflight=True))

    rejected = client.post("/transactions", json=spend(wallet, 30, "use-1"))

    assert rejected.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert ledger.get_balance(wallet)["inflight_debit_balance"] == 80


def test_duplicate_reference_conflicts_without_original(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    first = client.post("/transactions", json=spend(wallet, 10, "use-1")).json()

    second = client.post("/transactions", json=spend(wallet, 10, "use-1"))

    detail = second.json()["error_detail"]
    assert second.status_code == 409
    assert detail["code"] == "TXN_DUPLICATE_REFERENCE"
    assert "has already been used" in detail["message"]
    assert "transaction_id" not in second.json()
    stored = client.get("/transactions/reference/use-1").json()
    assert stored["transaction_id"] == first["transaction_id"]
    assert ledger.get_balance(wallet)["balance"] == 990


def test_queued_duplicate_returns_phantom_id(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    client.post("/transactions", json=spend(wallet, 10, "use-1"))

    phantom = client.post(
        "/transactions", json=spend(wallet, 10, "use-1", skip_queue=False)
    )

    assert phantom.status_code == 201
    assert phantom.json()["status"] == "QUEUED"
    lookup = client.get(f"/transactions/{phantom.json()['transaction_id']}")
    assert lookup.status_code == 404
    assert lookup.json()["error_detail"]["code"] == "TXN_NOT_FOUND"
    assert ledger.get_balance(wallet)["balance"] == 990


def test_queued_transaction_gets_applied_child(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)

    queued = client.post(
        "/transactions", json=spend(wallet, 40, "use-1", skip_queue=False)
    )

    body = queued.json()
    child = client.get("/transactions/reference/use-1_q").json()
    parent = client.get(f"/transactions/{body['transaction_id']}").json()
    assert queued.status_code == 201
    assert body["status"] == "QUEUED"
    assert body["destination"] == "@Revenue"
    assert body["meta_data"]["QUEUED_PARENT_TRANSACTION"] == body["transaction_id"]
    assert parent["status"] == "QUEUED"
    assert child["status"] == "APPLIED"
    assert child["parent_transaction"] == body["transaction_id"]
    assert ledger.get_balance(wallet)["balance"] == 960


def test_queued_transaction_without_funds_is_rejected(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=10)

    queued = client.post(
        "/transactions", json=spend(wallet, 40, "use-1", skip_queue=False)
    )

    child = client.get("/transactions/reference/use-1_q").json()
    assert queued.status_code == 201
    assert child["status"] == "REJECTED"
    assert "insufficient funds" in child["meta_data"]["blnk_rejection_reason"]
    assert ledger.get_balance(wallet)["balance"] == 10


def test_manual_queue_waits_for_process_queue() -> None:
    with EmbeddedLedger(queue="manual") as ledger:
        wallet = new_wallet(ledger, funds=1_000)
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        client.post("/transactions", json=spend(wallet, 40, "use-1", skip_queue=False))

        pending = client.get("/transactions/reference/use-1_q")
        queued = client.get(
            f"/balances/{wallet}", params={"with_queued": "true"}
        ).json()
        processed = ledger.process_queue()
        child = client.get("/transactions/reference/use-1_q")

    assert pending.status_code == 404
    assert queued["queued_debit_balance"] == 40
    assert queued["balance"] == 1_000
    assert processed == 1
    assert child.json()["status"] == "APPLIED"


def test_quoted_precise_amount_is_malformed(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)

    response = client.post("/transactions", json=spend(wallet, "10", "use-1"))  # type: ignore[arg-type]

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
    assert client.get("/transactions/reference/use-1").status_code == 404


@pytest.mark.parametrize(
    ("fields", "precise", "precision"),
    [
        pytest.param(
            {"amount": 0.1, "precision": 100}, 10, 100, id="decimal-not-float"
        ),
        pytest.param({"amount": 1.005, "precision": 100}, 101, 100, id="half-away"),
        pytest.param({"amount": 7}, 7, 1, id="precision-absent"),
        pytest.param({"amount": 7, "precision": 0}, 7, 1, id="precision-zero"),
        pytest.param(
            {"precise_amount": 12345, "precision": 1000}, 12345, 1000, id="precise"
        ),
    ],
)
def test_amount_scales_by_precision(
    ledger: EmbeddedLedger,
    client: httpx.Client,
    fields: dict[str, object],
    precise: int,
    precision: int,
) -> None:
    body = {
        "currency": "USD",
        "reference": "fund",
        "description": "top-up",
        "source": "@World",
        "destination": "@Cash",
        "allow_overdraft": True,
        "skip_queue": True,
        **fields,
    }

    response = client.post("/transactions", json=body).json()

    assert response["precise_amount"] == precise
    assert response["precision"] == precision
    assert ledger.get_balance_by_indicator("@Cash", "USD")["balance"] == precise


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"precision": 1.5}, "TXN_PRECISION_NOT_INTEGER", id="fraction"),
        pytest.param({"precision": -100}, "TXN_VALIDATION_ERROR", id="negative"),
        pytest.param({"amount": 1.0}, "TXN_VALIDATION_ERROR", id="both-amounts"),
        pytest.param(
            {"precise_amount": -5}, "TXN_VALIDATION_ERROR", id="negative-amount"
        ),
        pytest.param({"description": ""}, "TXN_VALIDATION_ERROR", id="no-description"),
        pytest.param(
            {"destination": "@World"}, "TXN_VALIDATION_ERROR", id="same-balance"
        ),
    ],
)
def test_invalid_transaction_is_rejected(
    client: httpx.Client, fields: dict[str, object], code: str
) -> None:
    body = {
        "precise_amount": 100,
        "currency": "USD",
        "reference": "r-1",
        "description": "d",
        "source": "@World",
        "destination": "@Cash",
        "allow_overdraft": True,
        "skip_queue": True,
        **fields,
    }

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == code
    assert client.get("/transactions/reference/r-1").status_code == 404


def test_validation_errors_use_legacy_errors_key(client: httpx.Client) -> None:
    response = client.post("/transactions", json={"precise_amount": 5, "source": "@A"})

    body = response.json()
    assert body["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
    assert body["errors"].startswith("currency: cannot be blank; description:")
    assert "error" not in body


def test_zero_minor_units_are_rejected(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)

    response = client.post(
        "/transactions",
        json=spend(wallet, 0, "use-1", precise_amount=None, amount=0.001),
    )

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
    assert "must be positive" in response.json()["error"]
    assert client.get("/transactions/reference/use-1").status_code == 404


def test_amount_beyond_int64_is_rejected(client: httpx.Client) -> None:
    body = {
        "precise_amount": 2**63,
        "currency": "USD",
        "reference": "big",
        "description": "d",
        "source": "@World",
        "destination": "@Cash",
        "allow_overdraft": True,
        "skip_queue": True,
    }

    response = client.post("/transactions", json=body)

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "TXN_INVALID_AMOUNT"
    assert "64-bit" in response.json()["error"]


def test_world_needs_allow_overdraft(client: httpx.Client) -> None:
    body = {
        "precise_amount": 100,
        "currency": "USD",
        "reference": "fund",
        "description": "top-up",
        "source": "@World",
        "destination": "@Cash",
        "skip_queue": True,
    }

    response = client.post("/transactions", json=body)

    assert response.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"


def test_indicator_balances_exist_per_currency(ledger: EmbeddedLedger) -> None:
    for currency in ("USD", "TOKENS"):
        ledger.record_transaction(
            {
                "precise_amount": 5,
                "currency": currency,
                "reference": f"fund-{currency}",
                "description": "top-up",
                "source": "@World",
                "destination": "@Cash",
                "allow_overdraft": True,
                "skip_queue": True,
            }
        )

    usd = ledger.get_balance_by_indicator("@World", "USD")
    tokens = ledger.get_balance_by_indicator("@World", "TOKENS")
    assert usd["balance_id"] != tokens["balance_id"]
    assert usd["ledger_id"] == "general_ledger_id"
    assert usd["balance"] == -5
    assert tokens["balance"] == -5


def test_overdraft_limit_caps_negative_balance(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)
    limit = {"allow_overdraft": True, "overdraft_limit": 0.5}

    within = client.post("/transactions", json=spend(wallet, 150, "use-1", **limit))
    beyond = client.post("/transactions", json=spend(wallet, 1, "use-2", **limit))

    assert within.status_code == 201
    assert beyond.status_code == 400
    assert beyond.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
    assert "exceeds overdraft limit" in beyond.json()["error"]
    assert ledger.get_balance(wallet)["balance"] == -50


def test_dry_run_projects_without_writing(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=100)

    preview = client.post(
        "/transactions", json=spend(wallet, 60, "use-1", dry_run=True)
    )
    rejection = client.post(
        "/transactions", json=spend(wallet, 160, "use-2", dry_run=True)
    )

    body = preview.json()
    assert preview.status_code == 200
    assert body["would_apply"] is True
    assert body["balances"][0]["resulting_balance"] == "40"
    assert body["balances"][1]["virtual"] is True
    assert rejection.json()["rejection"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert client.get("/transactions/reference/use-1").status_code == 404
    assert ledger.get_balance(wallet)["balance"] == 100


def test_reads_return_blnk_columns(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    created = client.post("/transactions", json=spend(wallet, 10, "use-1")).json()

    by_id = client.get(f"/transactions/{created['transaction_id']}").json()
    by_reference = client.get("/transactions/reference/use-1").json()

    assert created["precision"] == 100
    assert "effective_date" in created
    assert "effective_date" not in by_id
    assert by_id["precision"] == 100
    assert by_id["hash"] == created["hash"]
    assert by_reference["precision"] == 0
    assert by_reference["hash"] == ""


def test_balance_at_counts_effective_dates(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    last_year = datetime.now(timezone.utc) - timedelta(days=365)
    backdated = spend(wallet, 300, "use-1", effective_date=last_year.isoformat())
    client.post("/transactions", json=backdated)
    client.post("/transactions", json=spend(wallet, 200, "use-2"))
    cutoff = (last_year + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    then = client.get(f"/balances/{wallet}/at", params={"timestamp": cutoff})
    invalid = client.get(f"/balances/{wallet}/at", params={"timestamp": "yesterday"})

    assert then.json()["balance"] == {
        "balance": -300,
        "debit_balance": 300,
        "credit_balance": 0,
        "currency": "USD",
        "balance_id": wallet,
    }
    assert invalid.json()["error_detail"]["code"] == "BAL_INVALID_TIMESTAMP"
    assert ledger.get_balance(wallet)["balance"] == 500


def test_scheduled_transaction_waits_for_its_time() -> None:
    clock = Clock()
    with EmbeddedLedger(clock=clock) as ledger:
        wallet = new_wallet(ledger, funds=1_000)
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        when = (clock.now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = spend(wallet, 100, "use-1", skip_queue=False, scheduled_for=when)

        scheduled = client.post("/transactions", json=body).json()
        before = client.get("/transactions/reference/use-1_q")
        clock.now += timedelta(hours=2)
        after = client.get("/transactions/reference/use-1_q")

    assert scheduled["status"] == "SCHEDULED"
    assert before.status_code == 404
    assert after.json()["status"] == "APPLIED"
    assert after.json()["parent_transaction"] == scheduled["transaction_id"]
