from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import httpx
import pytest
from embedded_helpers import new_wallet, spend

from blnk_meter.errors import ConfigurationError, LedgerRejectedError
from blnk_meter.testing import EmbeddedLedger


@pytest.fixture
def secured() -> Iterator[EmbeddedLedger]:
    with EmbeddedLedger(api_key="test-master-key") as ledger:
        yield ledger


@pytest.mark.parametrize(
    ("headers", "code", "message"),
    [
        pytest.param(
            {},
            "AUTH_MISSING_API_KEY",
            "Authentication required. Use X-Blnk-Key header",
            id="missing",
        ),
        pytest.param(
            {"X-Blnk-Key": "wrong"},
            "AUTH_INVALID_API_KEY",
            "Invalid API key",
            id="wrong",
        ),
    ],
)
def test_bad_api_key_is_unauthorized(
    secured: EmbeddedLedger, headers: dict[str, str], code: str, message: str
) -> None:
    with secured.serve() as server:
        response = httpx.get(f"{server.url}/ledgers", headers=headers)

    assert response.status_code == 401
    assert response.json()["error_detail"]["code"] == code
    assert response.json()["error"] == message


def test_master_key_and_open_paths_pass(secured: EmbeddedLedger) -> None:
    with secured.serve() as server:
        keyed = httpx.get(
            f"{server.url}/ledgers", headers={"x-blnk-key": "test-master-key"}
        )
        health = httpx.get(f"{server.url}/health")
        root = httpx.get(f"{server.url}/")

    assert keyed.status_code == 200
    assert keyed.json()[0]["ledger_id"] == "general_ledger_id"
    assert health.json() == {"status": "UP"}
    assert root.json() == "server running..."


def test_auth_off_accepts_any_key(ledger: EmbeddedLedger, client: httpx.Client) -> None:
    response = client.get("/ledgers", headers={"X-Blnk-Key": "anything"})

    assert response.status_code == 200


def test_api_key_absent_from_repr_and_errors(secured: EmbeddedLedger) -> None:
    client = httpx.Client(transport=secured.transport(), base_url="http://blnk")

    rejected = client.get("/ledgers", headers={"X-Blnk-Key": "test-master-key-x"})

    assert "test-master-key" not in repr(secured)
    assert "test-master-key" not in rejected.text
    assert secured.create_ledger("ok")["name"] == "ok"


def test_unknown_route_is_plain_404(client: httpx.Client) -> None:
    response = client.get("/search/transactions")

    assert response.status_code == 404
    assert response.text == "404 page not found"


def test_ledger_names_are_not_unique(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    first = ledger.create_ledger("customers", {"tier": "pro"})
    second = ledger.create_ledger("customers")

    listed = client.get("/ledgers").json()
    fetched = client.get(f"/ledgers/{first['ledger_id']}").json()
    missing = client.get("/ledgers/ldg_missing")
    blank = client.post("/ledgers", json={"name": ""})

    assert first["ledger_id"] != second["ledger_id"]
    assert [row["name"] for row in listed].count("customers") == 2
    assert "general_ledger_id" in [row["ledger_id"] for row in listed]
    assert fetched["meta_data"] == {"tier": "pro"}
    assert missing.json()["error_detail"]["code"] == "LGR_NOT_FOUND"
    assert blank.json()["errors"] == "name: cannot be blank."


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(
            {"ledger_id": "CUSTOMERS", "currency": "USD", "indicator": "@cash"},
            400,
            "GEN_VALIDATION_ERROR",
            id="indicator-outside-general-ledger",
        ),
        pytest.param(
            {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": "cash"},
            400,
            "GEN_VALIDATION_ERROR",
            id="indicator-pattern",
        ),
        pytest.param(
            {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": "@Cash"},
            409,
            "GEN_CONFLICT",
            id="indicator-taken",
        ),
        pytest.param(
            {"ledger_id": "ldg_missing", "currency": "USD"},
            400,
            "GEN_BAD_REQUEST",
            id="unknown-ledger",
        ),
        pytest.param(
            {"ledger_id": "CUSTOMERS"}, 400, "GEN_VALIDATION_ERROR", id="currency"
        ),
    ],
)
def test_create_balance_errors(
    ledger: EmbeddedLedger,
    client: httpx.Client,
    body: dict[str, str],
    status: int,
    code: str,
) -> None:
    customers = ledger.create_ledger("customers")["ledger_id"]
    ledger.create_balance("general_ledger_id", "USD", indicator="@Cash")
    if body["ledger_id"] == "CUSTOMERS":
        body = {**body, "ledger_id": customers}

    response = client.post("/balances", json=body)

    assert response.status_code == status
    assert response.json()["error_detail"]["code"] == code


def test_balance_lookups(ledger: EmbeddedLedger, client: httpx.Client) -> None:
    cash = ledger.create_balance("general_ledger_id", "USD", indicator="@Cash")

    by_id = client.get(f"/balances/{cash['balance_id']}", params={"include": "ledger"})
    encoded = client.get("/balances/indicator/%40Cash/currency/USD")
    never_used = client.get("/balances/indicator/@World/currency/USD")
    unknown = client.get("/balances/bln_missing")

    assert cash["version"] == 0
    assert by_id.json()["version"] == 1
    assert by_id.json()["ledger"]["name"] == "General Ledger"
    assert encoded.json()["balance_id"] == cash["balance_id"]
    assert never_used.json()["error_detail"]["code"] == "BAL_NOT_FOUND"
    assert unknown.status_code == 404
    assert unknown.json()["error_detail"]["code"] == "BAL_NOT_FOUND"


def test_convenience_raises_rejected_error(ledger: EmbeddedLedger) -> None:
    with pytest.raises(LedgerRejectedError) as raised:
        ledger.create_balance("ldg_missing", "USD")

    assert raised.value.status == 400
    assert raised.value.code == "GEN_BAD_REQUEST"
    assert "'Invalid ledger ID'" in str(raised.value)


class InterleavingLedger(EmbeddedLedger):
    """A ledger that takes a posting from another client after each list read."""

    wallet = ""
    extra_postings = 0

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        response = super().handle(method, target, headers, body)
        if self.wallet and method == "GET" and target.startswith("/transactions?"):
            self.extra_postings += 1
            posting = spend(
                "@World",
                1,
                f"concurrent-{self.extra_postings}",
                destination=self.wallet,
                allow_overdraft=True,
            )
            super().handle("POST", "/transactions", {}, json.dumps(posting).encode())
        return response


def test_transactions_helper_lists_each_row_once() -> None:
    with InterleavingLedger() as ledger:
        wallet = new_wallet(ledger)
        for index in range(250):
            posting = spend(
                "@World", 1, f"before-{index}", destination=wallet, allow_overdraft=True
            )
            ledger.record_transaction(posting)
        ledger.wallet = wallet

        rows = ledger.transactions(destination_eq=wallet)

    ids = [row["transaction_id"] for row in rows]
    references = {row["reference"] for row in rows}
    assert len(ids) == len(set(ids))
    assert {f"before-{index}" for index in range(250)} <= references
    assert ledger.extra_postings >= 1


def test_refund_is_queued_by_default(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    usage = client.post("/transactions", json=spend(wallet, 300, "use-1")).json()

    refund = client.post(f"/refund-transaction/{usage['transaction_id']}")
    again = client.post(f"/refund-transaction/{usage['transaction_id']}")

    applied = client.get(f"/transactions/reference/{usage['transaction_id']}_refund_q")
    assert refund.status_code == 201
    assert refund.json()["status"] == "QUEUED"
    assert refund.json()["reference"] == f"{usage['transaction_id']}_refund"
    assert refund.json()["parent_transaction"] == usage["transaction_id"]
    assert applied.json()["status"] == "APPLIED"
    assert again.status_code == 409
    assert again.json()["error_detail"]["code"] == "GEN_CONFLICT"
    assert ledger.get_balance(wallet)["balance"] == 1_000


def test_refund_of_queued_id_reverses_child(
    ledger: EmbeddedLedger, client: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    queued = client.post(
        "/transactions", json=spend(wallet, 300, "use-1", skip_queue=False)
    ).json()

    refund = client.post(
        f"/refund-transaction/{queued['transaction_id']}",
        json={"skip_queue": True, "description": "goodwill", "meta_data": {"k": "v"}},
    )

    body = refund.json()
    assert body["status"] == "APPLIED"
    assert body["description"] == "goodwill"
    assert body["meta_data"]["k"] == "v"
    assert ledger.get_balance(wallet)["balance"] == 1_000


def test_refund_of_unknown_id_not_found(client: httpx.Client) -> None:
    response = client.post("/refund-transaction/txn_missing")

    assert response.status_code == 404
    assert response.json()["error"] == "no transaction to refund"
    assert response.json()["error_detail"]["code"] == "TXN_NOT_FOUND"


async def test_async_transport_posts_and_reads(ledger: EmbeddedLedger) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    transport = ledger.async_transport()

    async with httpx.AsyncClient(transport=transport, base_url="http://blnk") as client:
        created = await client.post("/transactions", json=spend(wallet, 10, "use-1"))
        balance = await client.get(f"/balances/{wallet}")

    assert created.status_code == 201
    assert balance.json()["balance"] == 990


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"queue": "later"}, id="queue"),
        pytest.param({"api_key": ""}, id="empty-key"),
    ],
)
def test_invalid_settings_raise(arguments: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        EmbeddedLedger(**arguments)  # type: ignore[arg-type]
