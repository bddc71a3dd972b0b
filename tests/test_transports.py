"""Transports against the embedded ledger over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import socket
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from blnk_meter import (
    AsyncHttpxTransport,
    BlnkClient,
    HttpxTransport,
    Leg,
    Posting,
    RetryPolicy,
    Wallet,
    errors,
)
from blnk_meter._blnk import error_from_response
from blnk_meter.testing import EmbeddedLedger, LedgerServer
from ledger_fixtures import (
    USD,
    balance_of,
    indicator_balance,
    open_wallet,
    top_up,
    usage_posting,
)

FAST = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.05, jitter=False)
SECRET = "blnk-secret-key-do-not-log"


@pytest.fixture
def ledger() -> Iterator[EmbeddedLedger]:
    with EmbeddedLedger() as embedded:
        yield embedded


@pytest.fixture
def server(ledger: EmbeddedLedger) -> Iterator[LedgerServer]:
    with ledger.serve() as running:
        yield running


@pytest.fixture
def client(server: LedgerServer) -> Iterator[BlnkClient]:
    blnk = BlnkClient(server.url)
    yield blnk
    blnk.close()


@pytest.fixture
def transport(server: LedgerServer) -> Iterator[HttpxTransport]:
    sender = HttpxTransport(server.url, retry=FAST)
    yield sender
    sender.close()


def stored(client: BlnkClient, posting: Posting) -> list[dict[str, object] | None]:
    return [client.get_transaction_by_reference(ref) for ref in posting.references]


def test_posting_delivered_with_exact_amounts(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))

    delivery = transport.send(posting)

    assert delivery.outcome == "posted"
    assert delivery.attempts == 1
    assert delivery.batch_id is not None and delivery.batch_id.startswith("bulk_")
    charge, tokens = stored(client, posting)
    assert charge is not None and tokens is not None
    # 1,000,000 input at $0.15 and 100,000 output at $0.60 per 1M tokens
    assert charge["precise_amount"] == 21_000_000
    assert tokens["precise_amount"] == 1_100_000
    assert charge["status"] == tokens["status"] == "APPLIED"
    assert balance_of(client, wallet) == 10 * USD - 21_000_000
    assert indicator_balance(client, "@Revenue", "USD") == 21_000_000
    assert indicator_balance(client, "@System-Tokens", "TOKENS") == 1_100_000


def test_resend_counts_as_duplicate(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))

    first = transport.send(posting)
    second = transport.send(posting)

    assert (first.outcome, second.outcome) == ("posted", "duplicate")
    assert balance_of(client, wallet) == 10 * USD - 21_000_000


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(500, "GEN_INTERNAL", id="500"),
        pytest.param(503, "QUEUE_BACKPRESSURE", id="503"),
        pytest.param(423, "GEN_RESOURCE_LOCKED", id="423"),
        pytest.param(429, "GEN_RATE_LIMITED", id="429"),
    ],
)
def test_retryable_errors_retried_same_references(
    ledger: EmbeddedLedger,
    client: BlnkClient,
    transport: HttpxTransport,
    status: int,
    code: str,
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    ledger.faults.fail_next(
        2, status=status, code=code, path_prefix="/transactions/bulk"
    )

    delivery = transport.send(posting)

    assert delivery.outcome == "posted"
    assert delivery.attempts == 3
    assert delivery.posting.references == posting.references
    assert balance_of(client, wallet) == 10 * USD - 21_000_000


def test_dropped_answer_after_commit_not_posted_twice(
    ledger: EmbeddedLedger, client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    ledger.faults.drop_after_commit(1, path_prefix="/transactions/bulk")

    delivery = transport.send(posting)

    # The lost first attempt wrote the legs, so this send counts as posting them.
    assert delivery.outcome == "posted"
    assert delivery.attempts == 2
    assert transport.send(posting).outcome == "duplicate"
    assert balance_of(client, wallet) == 10 * USD - 21_000_000
    assert indicator_balance(client, "@System-Tokens", "TOKENS") == 1_100_000


def test_ledger_down_then_up_delivers(
    ledger: EmbeddedLedger, client: BlnkClient, server: LedgerServer
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    patient = RetryPolicy(attempts=30, initial_delay=0.02, max_delay=0.05, jitter=False)
    ledger.faults.down(for_seconds=0.2)

    with HttpxTransport(server.url, retry=patient) as transport:
        delivery = transport.send(posting)

    assert delivery.outcome == "posted"
    assert delivery.attempts > 1
    assert balance_of(client, wallet) == 10 * USD - 21_000_000


def test_retries_exhausted_raise_unavailable(
    ledger: EmbeddedLedger, client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    ledger.faults.fail_next(4, path_prefix="/transactions/bulk")

    with pytest.raises(errors.LedgerUnavailableError) as caught:
        transport.send(posting)

    assert caught.value.status == 500
    assert caught.value.code == "GEN_INTERNAL"
    assert caught.value.references == posting.references
    assert stored(client, posting) == [None, None]


def test_connection_refused_raises_unavailable() -> None:
    with EmbeddedLedger() as ledger, ledger.serve() as server:
        url = server.url
    posting = usage_posting(Wallet("bln_nowhere", "postpaid"))

    with (
        HttpxTransport(url, retry=FAST) as transport,
        pytest.raises(errors.LedgerUnavailableError, match="ConnectError"),
    ):
        transport.send(posting)


def test_insufficient_funds_not_retried_nothing_written(
    ledger: EmbeddedLedger, client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal("0.01"))
    posting = usage_posting(Wallet(wallet, "prepaid"))

    with pytest.raises(errors.InsufficientFundsError) as caught:
        transport.send(posting)

    assert caught.value.code == "TXN_INSUFFICIENT_FUNDS"
    assert caught.value.status == 400
    assert stored(client, posting) == [None, None]
    assert balance_of(client, wallet) == USD // 100
    assert indicator_balance(client, "@System-Tokens", "TOKENS") == 0

    top_up(client, wallet, Decimal(1))
    assert transport.send(posting).outcome == "posted"


def test_prepaid_wallet_never_overdrawn(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal("0.50"))
    accepted = 0
    for _ in range(5):
        try:
            transport.send(usage_posting(Wallet(wallet, "prepaid")))
            accepted += 1
        except errors.InsufficientFundsError:
            pass

    assert accepted == 2
    assert balance_of(client, wallet) == USD // 2 - 2 * 21_000_000


def test_postpaid_wallet_runs_into_overdraft(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client)

    transport.send(usage_posting(Wallet(wallet, "postpaid")))

    assert balance_of(client, wallet) == -21_000_000


def test_duplicate_reference_with_other_amount_conflicts(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    charge = posting.legs[0]
    client.record_transaction(
        {**charge.to_json(), "precise_amount": 1, "skip_queue": True}
    )

    with pytest.raises(
        errors.PostingConflictError, match="amount 1 instead of 21000000"
    ):
        transport.send(posting)


def test_duplicate_reference_at_other_precision_conflicts(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    charge = posting.legs[0]
    # Same integer, but at precision 100 it means dollars, not 10^-8 dollars.
    client.record_transaction(
        {
            **charge.to_json(),
            "precision": 100,
            "allow_overdraft": True,
            "skip_queue": True,
        }
    )

    with pytest.raises(errors.PostingConflictError, match="another precision"):
        transport.send(posting)


def test_partly_recorded_posting_not_counted_delivered(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    client.record_transaction({**posting.legs[0].to_json(), "skip_queue": True})

    with pytest.raises(errors.LedgerUnavailableError, match="partly recorded"):
        transport.send(posting)

    charge, tokens = stored(client, posting)
    assert charge is not None
    assert tokens is None


def test_refunded_legs_resent_as_next_generation(
    client: BlnkClient, transport: HttpxTransport
) -> None:
    wallet = open_wallet(client)
    token_pool = open_wallet(client)
    posting = usage_posting(Wallet(wallet, "postpaid"))
    charge, tokens = posting.legs
    # Tokens leave a pool without overdraft, so the second leg fails for lack
    # of tokens after the first leg was applied; Blnk then refunds the first.
    strict_tokens = replace(
        tokens, source=token_pool, currency="USD", allow_overdraft=False
    )
    failing = Posting(posting.event_id, posting.customer, (charge, strict_tokens))

    with pytest.raises(errors.InsufficientFundsError):
        transport.send(failing)
    first_charge = client.get_transaction_by_reference(charge.reference)
    assert first_charge is not None
    refund = client.get_transaction_by_reference(
        f"{first_charge['transaction_id']}_refund"
    )
    assert refund is not None

    top_up(client, token_pool, Decimal(1))
    delivery = transport.send(failing)

    assert delivery.outcome == "posted"
    assert delivery.posting.generation == 2
    assert delivery.posting.references[0] == charge.reference.replace(
        ":charge", ":g2:charge"
    )
    assert balance_of(client, wallet) == -21_000_000
    assert balance_of(client, token_pool) == USD - 1_100_000


def test_api_key_sent_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedLedger(api_key=SECRET) as ledger, ledger.serve() as server:
        with BlnkClient(server.url, api_key=SECRET) as setup:
            wallet = open_wallet(setup, funds=Decimal(1))
        posting = usage_posting(Wallet(wallet, "prepaid"))
        good = HttpxTransport(server.url, api_key=SECRET, retry=FAST)
        wrong = HttpxTransport(server.url, api_key="wrong-key", retry=FAST)

        with caplog.at_level(logging.DEBUG):
            with pytest.raises(errors.LedgerAuthError) as caught:
                wrong.send(posting)
            delivery = good.send(posting)

        assert delivery.outcome == "posted"
        assert caught.value.status == 401
        for text in (str(caught.value), repr(good), repr(wrong), caplog.text):
            assert SECRET not in text
            assert "wrong-key" not in text
        good.close()
        wrong.close()


def closed_port_url() -> str:
    """Return a 127.0.0.1 URL on which nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def exception_chain(error: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def test_unreachable_ledger_error_drops_key() -> None:
    transport = HttpxTransport(closed_port_url(), api_key=SECRET, retry=FAST)
    posting = usage_posting(Wallet("bln_x", "prepaid"))

    with pytest.raises(errors.LedgerUnavailableError) as caught:
        transport.send(posting)
    transport.close()

    chain = exception_chain(caught.value)
    assert [type(error) for error in chain] == [errors.LedgerUnavailableError]
    assert "ConnectError" in str(caught.value)
    assert SECRET not in "".join(traceback.format_exception(caught.value))


async def test_async_unreachable_ledger_error_drops_key() -> None:
    transport = AsyncHttpxTransport(closed_port_url(), api_key=SECRET, retry=FAST)
    posting = usage_posting(Wallet("bln_x", "prepaid"))

    with pytest.raises(errors.LedgerUnavailableError) as caught:
        await transport.asend(posting)
    await transport.aclose()

    chain = exception_chain(caught.value)
    assert [type(error) for error in chain] == [errors.LedgerUnavailableError]
    assert SECRET not in "".join(traceback.format_exception(caught.value))


async def test_async_transport_retries_and_dedupes(
    ledger: EmbeddedLedger, client: BlnkClient, server: LedgerServer
) -> None:
    wallet = open_wallet(client, funds=Decimal(10))
    posting = usage_posting(Wallet(wallet, "prepaid"))
    other = usage_posting(Wallet(wallet, "prepaid"))
    transport = AsyncHttpxTransport(server.url, retry=FAST)
    ledger.faults.fail_next(1, path_prefix="/transactions/bulk")
    ledger.faults.drop_after_commit(1, path_prefix="/transactions/bulk")

    try:
        first = await transport.asend(posting)
        second = await transport.asend(other)
    finally:
        await transport.aclose()

    assert (first.outcome, first.attempts) == ("posted", 3)
    assert (second.outcome, second.attempts) == ("posted", 1)
    assert balance_of(client, wallet) == 10 * USD - 2 * 21_000_000


async def test_async_transport_insufficient_funds(
    client: BlnkClient, server: LedgerServer
) -> None:
    wallet = open_wallet(client)
    transport = AsyncHttpxTransport(server.url, retry=FAST)

    try:
        with pytest.raises(errors.InsufficientFundsError):
            await transport.asend(usage_posting(Wallet(wallet, "prepaid")))
    finally:
        await transport.aclose()

    assert balance_of(client, wallet) == 0


def test_in_process_transport_matches_http(ledger: EmbeddedLedger) -> None:
    with HttpxTransport(
        "http://ledger.invalid", http_transport=ledger.transport()
    ) as sender:
        client = sender.client
        wallet = open_wallet(client, funds=Decimal(1))
        delivery = sender.send(usage_posting(Wallet(wallet, "prepaid")))

    assert delivery.outcome == "posted"


def test_retry_policy_backoff_doubles_to_cap() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=0.1, max_delay=0.5, jitter=False)

    assert [policy.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_retry_policy_jitter_within_half_and_full() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=8.0, jitter=True)

    for attempt in range(1, 5):
        delay = policy.delay(attempt)
        full = min(8.0, 2 ** (attempt - 1))
        assert full / 2 <= delay <= full


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(
            400,
            {"error": "insufficient funds in source balance"},
            errors.InsufficientFundsError,
            id="legacy-funds",
        ),
        pytest.param(
            400,
            {"error": "reference ref-1 has already been used"},
            errors.DuplicateReferenceError,
            id="legacy-duplicate",
        ),
        pytest.param(
            409,
            {"error": "x", "error_detail": {"code": "TXN_DUPLICATE_REFERENCE"}},
            errors.DuplicateReferenceError,
            id="v015-duplicate",
        ),
        pytest.param(
            403,
            {"error": "no", "error_detail": {"code": "AUTH_INSUFFICIENT_PERMISSIONS"}},
            errors.LedgerAuthError,
            id="scope",
        ),
        pytest.param(
            423,
            {"error": "failed to acquire lock"},
            errors.LedgerUnavailableError,
            id="locked",
        ),
        pytest.param(
            400,
            {"errors": "description: cannot be blank."},
            errors.LedgerRejectedError,
            id="legacy-errors-key",
        ),
        pytest.param(
            502, "<html>bad gateway</html>", errors.LedgerUnavailableError, id="html"
        ),
    ],
)
def test_error_bodies_map_to_exceptions(
    status: int, body: object, expected: type[errors.LedgerError]
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()

    error = error_from_response(status, content, references=("ref-1",))

    assert type(error) is expected
    assert error.status == status
    assert error.references == ("ref-1",)


def test_client_returns_none_for_missing_reference(client: BlnkClient) -> None:
    assert client.get_transaction_by_reference(f"missing-{uuid.uuid4()}") is None


def test_leg_json_never_sends_float() -> None:
    leg = usage_posting(Wallet("bln_x", "postpaid")).legs[0]

    body = json.loads(json.dumps(Leg.to_json(leg)))

    assert isinstance(body["precise_amount"], int)
    assert "amount" not in body


def test_url_password_kept_from_logs(
    server: LedgerServer, caplog: pytest.LogCaptureFixture
) -> None:
    host = server.url.removeprefix("http://")
    url = f"http://admin:pa%24%24word@{host}"

    with caplog.at_level(logging.DEBUG), BlnkClient(url) as client:
        wallet = open_wallet(client, funds=Decimal(1))
        with HttpxTransport(url, retry=FAST) as transport:
            delivery = transport.send(usage_posting(Wallet(wallet, "prepaid")))

    assert delivery.outcome == "posted"
    assert "HTTP Request" in caplog.text
    assert "pa$$word" not in caplog.text
    assert "pa%24%24word" not in caplog.text
    assert "admin" not in caplog.text


def test_url_password_sent_as_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"error": "not found"})

    url = "http://admin:pa%24%24word@ledger.invalid:5001"
    with BlnkClient(url, http_transport=httpx.MockTransport(handler)) as client:
        client.get_transaction_by_reference("ref-1")

    [request] = seen
    expected = base64.b64encode(b"admin:pa$$word").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert str(request.url) == "http://ledger.invalid:5001/transactions/reference/ref-1"


def test_async_transport_releases_closed_loops(
    client: BlnkClient, server: LedgerServer
) -> None:
    wallet = open_wallet(client)
    transport = AsyncHttpxTransport(server.url, retry=FAST)
    fds = Path("/proc/self/fd")

    def open_fds() -> int:
        gc.collect()
        return len(list(fds.iterdir()))

    asyncio.run(transport.asend(usage_posting(Wallet(wallet, "postpaid"))))
    before = open_fds()
    for _ in range(20):
        asyncio.run(transport.asend(usage_posting(Wallet(wallet, "postpaid"))))
    after = open_fds()

    assert len(transport._client._by_loop) <= 1
    assert after - before < 5
    assert balance_of(client, wallet) == -21 * 21_000_000


def test_api_key_whitespace_stripped(server: LedgerServer) -> None:
    with BlnkClient(server.url, api_key="  key-from-a-file\n") as client:
        assert client._key == "key-from-a-file"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("two words", id="space"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("caf\u00e9", id="non-ascii"),
    ],
)
def test_api_key_invalid_characters_rejected(key: str) -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        HttpxTransport("http://127.0.0.1:5001", api_key=key)

    assert key not in str(caught.value)
    assert "check how the key is read" in str(caught.value)
