from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from embedded_helpers import new_wallet, spend

from blnk_meter.errors import ConfigurationError
from blnk_meter.testing import EmbeddedLedger, LedgerServer


@pytest.fixture(params=["in-process", "http"])
def channel(
    request: pytest.FixtureRequest, ledger: EmbeddedLedger
) -> Iterator[httpx.Client]:
    """A client that reaches the ledger in-process or over real HTTP."""
    if request.param == "in-process":
        with httpx.Client(
            transport=ledger.transport(), base_url="http://blnk"
        ) as client:
            yield client
        return
    with (
        ledger.serve() as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client,
    ):
        yield client


@pytest.fixture
def server(ledger: EmbeddedLedger) -> Iterator[LedgerServer]:
    with ledger.serve() as running:
        yield running


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def reference_exists(ledger: EmbeddedLedger, reference: str) -> bool:
    return bool(ledger.transactions(reference_eq=reference))


def test_fail_next_skips_processing(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ledger.faults.fail_next(2, status=503, code="QUEUE_BACKPRESSURE", message="busy")

    first = channel.post("/transactions", json=spend(wallet, 10, "use-1"))
    second = channel.post("/transactions", json=spend(wallet, 10, "use-1"))
    third = channel.post("/transactions", json=spend(wallet, 10, "use-1"))

    assert first.status_code == 503
    assert first.json() == {
        "error": "busy",
        "error_detail": {"code": "QUEUE_BACKPRESSURE", "message": "busy"},
    }
    assert second.status_code == 503
    assert third.status_code == 201
    assert ledger.get_balance(wallet)["balance"] == 990


def test_reject_funds_next_writes_nothing(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ledger.faults.reject_funds_next(1)

    read = channel.get(f"/balances/{wallet}")
    rejected = channel.post("/transactions", json=spend(wallet, 10, "use-1"))
    retried = channel.post("/transactions", json=spend(wallet, 10, "use-1"))

    assert read.status_code == 200
    assert rejected.status_code == 400
    assert rejected.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
    assert retried.status_code == 201
    assert ledger.get_balance(wallet)["balance"] == 990


def test_drop_after_commit_keeps_posting(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ledger.faults.drop_after_commit(1)

    with pytest.raises(httpx.RemoteProtocolError):
        channel.post("/transactions", json=spend(wallet, 10, "use-1"))
    retried = channel.post("/transactions", json=spend(wallet, 10, "use-1"))

    assert retried.status_code == 409
    assert retried.json()["error_detail"]["code"] == "TXN_DUPLICATE_REFERENCE"
    assert ledger.get_balance(wallet)["balance"] == 990


def test_down_refuses_connections_until_up(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    before = channel.get(f"/balances/{wallet}")

    ledger.faults.down()
    with pytest.raises(httpx.ConnectError):
        channel.get(f"/balances/{wallet}")
    ledger.faults.up()
    after = channel.get(f"/balances/{wallet}")

    assert before.status_code == 200
    assert after.json()["balance"] == 1_000


def test_path_prefix_limits_fault(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ledger.faults.fail_next(1, path_prefix="/transactions")

    balance = channel.get(f"/balances/{wallet}")
    posting = channel.post("/transactions", json=spend(wallet, 10, "use-1"))

    assert balance.status_code == 200
    assert posting.status_code == 500
    assert posting.json()["error_detail"]["code"] == "GEN_INTERNAL"
    assert ledger.faults.pending() == []


def test_clear_removes_pending_faults(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    ledger.faults.fail_next(3)
    ledger.faults.down()

    ledger.faults.clear()
    response = channel.get("/ledgers")

    assert response.status_code == 200
    assert ledger.faults.pending() == []


def test_delayed_posting_lands_after_timeout(
    ledger: EmbeddedLedger, server: LedgerServer
) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ledger.faults.delay_next(1, 0.6)

    with (
        httpx.Client(base_url=server.url, trust_env=False, timeout=0.1) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/transactions", json=spend(wallet, 10, "use-1"))

    assert wait_until(lambda: reference_exists(ledger, "use-1"))
    assert ledger.get_balance(wallet)["balance"] == 990


async def test_delay_in_process_holds_request(ledger: EmbeddedLedger) -> None:
    wallet = new_wallet(ledger, funds=1_000)
    ledger.faults.delay_next(1, 0.5)
    transport = ledger.async_transport()

    async with httpx.AsyncClient(transport=transport, base_url="http://blnk") as client:
        posting = asyncio.create_task(
            client.post("/transactions", json=spend(wallet, 10, "use-1"))
        )
        await asyncio.sleep(0.05)
        during = reference_exists(ledger, "use-1")
        response = await posting

    assert during is False
    assert response.status_code == 201
    assert reference_exists(ledger, "use-1")


def test_admin_path_arms_faults_over_http(
    ledger: EmbeddedLedger, server: LedgerServer
) -> None:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
        armed = client.post(
            "/_embedded/faults", json={"fail_next": {"n": 1, "status": 502}}
        )
        listed = client.get("/_embedded/faults").json()
        failed = client.get("/ledgers")
        passed = client.get("/ledgers")
        invalid = client.post("/_embedded/faults", json={"fail_next": {"n": 0}})

    assert armed.status_code == 200
    assert listed["faults"][0]["kind"] == "fail"
    assert failed.status_code == 502
    assert passed.status_code == 200
    assert invalid.status_code == 400


def test_admin_path_rejects_unknown_fault(
    ledger: EmbeddedLedger, server: LedgerServer
) -> None:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
        typo = client.post("/_embedded/faults", json={"fail_nxt": {"n": 1}})
        listed = client.get("/_embedded/faults").json()

    assert typo.status_code == 400
    assert "'fail_nxt'" in typo.json()["error"]
    assert listed["faults"] == []


def test_down_for_over_http_comes_back(
    ledger: EmbeddedLedger, server: LedgerServer
) -> None:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
        response = client.post("/_embedded/faults", json={"down_for": 0.3})
        with pytest.raises(httpx.ConnectError):
            client.get("/ledgers")

        def reachable() -> bool:
            try:
                return client.get("/ledgers").status_code == 200
            except httpx.ConnectError:
                return False

        recovered = wait_until(reachable)

    assert response.status_code == 200
    assert recovered


def test_injected_fault_is_logged(
    ledger: EmbeddedLedger, channel: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.faults.fail_next(1)

    with caplog.at_level(logging.INFO, logger="blnk_meter.testing"):
        channel.get("/ledgers")

    assert "fault injected: fail on GET /ledgers" in caplog.messages


def test_handle_bypasses_faults(ledger: EmbeddedLedger) -> None:
    ledger.faults.fail_next(1)
    ledger.faults.down()

    created = ledger.create_ledger("setup")

    assert created["name"] == "setup"
    assert ledger.faults.pending()[0]["remaining"] == 1


@pytest.mark.parametrize(
    "arm",
    [
        pytest.param(lambda faults: faults.fail_next(0), id="zero-count"),
        pytest.param(
            lambda faults: faults.fail_next(1, status=200), id="success-status"
        ),
        pytest.param(lambda faults: faults.delay_next(1, -1), id="negative-delay"),
        pytest.param(lambda faults: faults.down(0), id="zero-outage"),
        pytest.param(lambda faults: faults.down(-1), id="negative-outage"),
        pytest.param(lambda faults: faults.down("1"), id="text-outage"),
        pytest.param(lambda faults: faults.delay_next(1, "2"), id="text-delay"),
        pytest.param(
            lambda faults: faults.delay_next(1, float("inf")), id="endless-delay"
        ),
        pytest.param(
            lambda faults: faults.fail_next(1, status="500"), id="text-status"
        ),
        pytest.param(lambda faults: faults.fail_next(1, code=5), id="number-code"),
        pytest.param(
            lambda faults: faults.drop_after_commit(1, path_prefix=5),
            id="number-prefix",
        ),
    ],
)
def test_invalid_fault_arguments_raise(
    ledger: EmbeddedLedger, arm: Callable[..., None]
) -> None:
    with pytest.raises(ConfigurationError):
        arm(ledger.faults)


def test_admin_path_requires_api_key() -> None:
    with EmbeddedLedger(api_key="test-master-key") as ledger, ledger.serve() as server:
        arm = {"fail_next": {"n": 1}}
        anonymous = httpx.post(f"{server.url}/_embedded/faults", json=arm)
        pending_after_anonymous = ledger.faults.pending()
        keyed = httpx.post(
            f"{server.url}/_embedded/faults",
            json=arm,
            headers={"X-Blnk-Key": "test-master-key"},
        )
        pending_after_keyed = ledger.faults.pending()

    assert anonymous.status_code == 401
    assert anonymous.json()["error_detail"]["code"] == "AUTH_MISSING_API_KEY"
    assert pending_after_anonymous == []
    assert keyed.status_code == 200
    assert pending_after_keyed[0]["kind"] == "fail"


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param({"down_for": 0}, id="zero-outage"),
        pytest.param({"down_for": -1}, id="negative-outage"),
        pytest.param({"down_for": "1"}, id="text-outage"),
        pytest.param({"down_for": True}, id="boolean-outage"),
        pytest.param({"delay_next": {"n": 1, "seconds": "2"}}, id="text-delay"),
        pytest.param({"delay_next": {"n": 1}}, id="missing-seconds"),
        pytest.param({"fail_next": {"count": 1}}, id="unknown-argument"),
        pytest.param({"fail_next": 1}, id="not-an-object"),
        pytest.param({"fail_next": {"n": 1, "status": "503"}}, id="text-status"),
        pytest.param({"reject_funds_next": {"n": True}}, id="boolean-count"),
        pytest.param({"clear": "yes"}, id="text-clear"),
        pytest.param([{"fail_next": {"n": 1}}], id="not-an-object-body"),
    ],
)
def test_admin_invalid_request_is_400(
    ledger: EmbeddedLedger, channel: httpx.Client, request_body: object
) -> None:
    response = channel.post("/_embedded/faults", json=request_body)
    after = channel.get("/ledgers")

    assert response.status_code == 400
    assert response.json()["error_detail"]["code"] == "GEN_BAD_REQUEST"
    assert ledger.faults.is_down is False
    assert ledger.faults.pending() == []
    assert after.status_code == 200


def test_admin_invalid_json_is_400(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    response = channel.post("/_embedded/faults", content=b"{fail_next")

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert ledger.faults.pending() == []


def test_admin_invalid_part_arms_nothing(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    ledger.faults.delay_next(1, 0.0)
    request_body = {
        "clear": True,
        "fail_next": {"n": 1},
        "delay_next": {"n": 1, "seconds": -1},
        "down_for": 5,
    }

    response = channel.post("/_embedded/faults", json=request_body)

    assert response.status_code == 400
    assert "delay_next" in response.json()["error"]
    assert [rule["kind"] for rule in ledger.faults.pending()] == ["delay"]
    assert ledger.faults.is_down is False


def test_admin_clear_then_arms_in_order(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    ledger.faults.delay_next(3, 0.0)
    request_body = {"clear": True, "reject_funds_next": {"n": 2}}

    response = channel.post("/_embedded/faults", json=request_body)

    assert response.status_code == 200
    assert response.json() == {
        "down": False,
        "faults": [{"kind": "reject_funds", "remaining": 2, "path_prefix": None}],
    }


def test_admin_down_for_reports_down(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    response = channel.post("/_embedded/faults", json={"down_for": 30})
    down_after = ledger.faults.is_down
    ledger.faults.up()

    assert response.status_code == 200
    assert response.json() == {"down": True, "faults": []}
    assert down_after is True


def test_admin_other_method_is_404(
    ledger: EmbeddedLedger, channel: httpx.Client
) -> None:
    response = channel.put("/_embedded/faults", json={"fail_next": {"n": 1}})

    assert response.status_code == 404
    assert response.text == "404 page not found"
    assert ledger.faults.pending() == []
