"""The whole road: the real OpenAI SDK, the meter, HTTP, the embedded ledger."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

import blnk_meter
from blnk_meter import BlnkClient, Meter, RetryPolicy, Wallet, errors, metered
from blnk_meter._transports import AsyncHttpxTransport, HttpxTransport
from blnk_meter.testing import EmbeddedLedger, FakeOpenAI, LedgerServer, Scenario
from ledger_fixtures import BOOK, USD, balance_of, indicator_balance, open_wallet

BLNK_KEY = "blnk-e2e-secret"
FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, jitter=False)


@pytest.fixture
def ledger() -> Iterator[EmbeddedLedger]:
    with EmbeddedLedger(api_key=BLNK_KEY) as embedded:
        yield embedded


@pytest.fixture
def server(ledger: EmbeddedLedger) -> Iterator[LedgerServer]:
    with ledger.serve() as running:
        yield running


@pytest.fixture
def client(server: LedgerServer) -> Iterator[BlnkClient]:
    with BlnkClient(server.url, api_key=BLNK_KEY) as blnk:
        yield blnk


@pytest.fixture(autouse=True)
def reset_instrumentation() -> Iterator[None]:
    yield
    blnk_meter.uninstrument()
    blnk_meter.set_default_meter(None)


def make_meter(
    server: LedgerServer, wallets: dict[str, Wallet], **kwargs: Any
) -> Meter:
    meter = Meter(
        HttpxTransport(server.url, api_key=BLNK_KEY, retry=FAST),
        async_transport=AsyncHttpxTransport(server.url, api_key=BLNK_KEY, retry=FAST),
        prices=BOOK.with_prices(
            {"text-embedding-3-small": {"input": "0.02", "output": "0"}}
        ),
        wallets=wallets,
        **kwargs,
    )
    return blnk_meter.configure(meter)


def ledger_legs(client: BlnkClient, customer: str) -> list[dict[str, Any]]:
    """Return the ledger's blnk_meter legs of one customer, via the filter API."""
    body = {
        "filters": [
            {"field": "meta_data.customer", "operator": "eq", "value": customer},
            {"field": "status", "operator": "eq", "value": "APPLIED"},
        ],
        "limit": 100,
    }
    legs: list[dict[str, Any]] = client.call(
        blnk_meter._blnk.ApiRequest("POST", "/transactions/filter", body)
    )
    return legs


def test_sync_calls_of_every_shape_reconcile(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    wallet = open_wallet(client, funds=Decimal(5))
    make_meter(server, {"acme": Wallet(wallet, "prepaid")})
    sdk = fake.sync_client()
    reported: list[int] = []
    seen_chunks: list[Any] = []

    @metered(customer="acme")
    def workload() -> None:
        response = sdk.responses.create(model="gpt-4o-mini", input="one two three")
        assert response.usage is not None
        reported.append(response.usage.total_tokens)

        completion = sdk.chat.completions.parse(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}]
        )
        assert completion.usage is not None
        reported.append(completion.usage.total_tokens)

        # Without include_usage, blnk_meter requests it and hides the extra chunk.
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "four words of input"}],
            stream=True,
        )
        seen_chunks.extend(stream)
        reported.append(4 + 8)

        embedding = sdk.embeddings.create(model="text-embedding-3-small", input="a b c")
        reported.append(embedding.usage.total_tokens)

    workload()

    assert all(chunk.choices for chunk in seen_chunks)
    assert all(chunk.usage is None for chunk in seen_chunks)
    legs = ledger_legs(client, "acme")
    token_legs = [leg for leg in legs if leg["currency"] == "TOKENS"]
    charge_legs = [leg for leg in legs if leg["currency"] == "USD"]
    assert len(token_legs) == 4
    assert sorted(leg["precise_amount"] for leg in token_legs) == sorted(reported)
    assert indicator_balance(client, "@System-Tokens", "TOKENS") == sum(reported)
    charged = sum(leg["precise_amount"] for leg in charge_legs)
    assert balance_of(client, wallet) == 5 * USD - charged
    assert indicator_balance(client, "@Revenue", "USD") == charged
    assert blnk_meter.get_default_meter() is not None
    assert blnk_meter.get_default_meter().failures == []  # type: ignore[union-attr]


async def test_async_customers_billed_separately(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    wallets = {name: open_wallet(client) for name in ("acme", "globex")}
    meter = make_meter(server, {n: Wallet(w, "postpaid") for n, w in wallets.items()})
    sdk = fake.async_client()

    @metered(customer=lambda name, words: name)
    async def ask(name: str, words: int) -> int:
        response = await sdk.responses.create(model="gpt-4o-mini", input="w " * words)
        assert response.usage is not None
        return response.usage.total_tokens

    jobs = [ask("acme", 10) for _ in range(5)] + [ask("globex", 3) for _ in range(5)]
    tokens = await asyncio.gather(*jobs)
    await sdk.close()
    await meter.aclose()

    assert meter.stats.posted == 10
    for name, expected in (("acme", sum(tokens[:5])), ("globex", sum(tokens[5:]))):
        legs = ledger_legs(client, name)
        assert (
            sum(leg["precise_amount"] for leg in legs if leg["currency"] == "TOKENS")
            == expected
        )
        charged = sum(leg["precise_amount"] for leg in legs if leg["currency"] == "USD")
        assert balance_of(client, wallets[name]) == -charged


def test_prepaid_wallet_under_concurrent_calls(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    wallet = open_wallet(client, funds=Decimal("0.00002"))
    meter = make_meter(server, {"acme": Wallet(wallet, "prepaid")})
    sdk = fake.sync_client()
    answers: list[str] = []

    @metered(customer="acme")
    def ask() -> None:
        response = sdk.responses.create(model="gpt-4o-mini", input="word " * 50)
        answers.append(response.output_text)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 16
    balance = balance_of(client, wallet)
    assert balance >= 0
    rejected = [
        f for f in meter.failures if isinstance(f.error, errors.InsufficientFundsError)
    ]
    assert meter.stats.posted + len(rejected) == 16
    assert len(rejected) > 0
    charged = sum(
        leg["precise_amount"]
        for leg in ledger_legs(client, "acme")
        if leg["currency"] == "USD"
    )
    assert balance == 2000 - charged
    assert indicator_balance(client, "@Revenue", "USD") == charged


def test_ledger_outage_keeps_usage_until_retry(
    ledger: EmbeddedLedger, server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    wallet = open_wallet(client, funds=Decimal(1))
    meter = make_meter(server, {"acme": Wallet(wallet, "prepaid")})
    sdk = fake.sync_client()
    ledger.faults.down()

    with metered(customer="acme"):
        response = sdk.responses.create(model="gpt-4o-mini", input="still answered")

    assert response.output_text
    [failure] = meter.failures
    assert failure.kind == "undelivered"
    assert isinstance(failure.error, errors.LedgerUnavailableError)
    assert failure.usage is not None
    assert failure.usage.response_id == response.id

    ledger.faults.up()
    assert meter.retry_undelivered() == 1
    assert meter.failures == []
    assert response.usage is not None
    [tokens] = [
        leg for leg in ledger_legs(client, "acme") if leg["currency"] == "TOKENS"
    ]
    assert tokens["precise_amount"] == response.usage.total_tokens
    assert tokens["meta_data"]["response_id"] == response.id


def test_missing_customer_stops_call_before_sending(
    server: LedgerServer, fake: FakeOpenAI
) -> None:
    make_meter(server, {})
    sdk = fake.sync_client()

    with pytest.raises(errors.MissingCustomerError, match="metered"):
        sdk.responses.create(model="gpt-4o-mini", input="who pays?")

    assert fake.requests == []


def test_unknown_model_stops_call_before_sending(
    server: LedgerServer, fake: FakeOpenAI
) -> None:
    make_meter(server, {})
    sdk = fake.sync_client()

    with (
        metered(customer="acme"),
        pytest.raises(errors.UnknownModelError, match="gpt-9"),
    ):
        sdk.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )

    assert fake.requests == []


@pytest.mark.parametrize(
    "usage_patch",
    [
        pytest.param({"input_tokens": -5}, id="negative"),
        pytest.param({"output_tokens": 7.5}, id="fractional"),
        pytest.param({"input_tokens": "12"}, id="string"),
    ],
)
def test_invalid_usage_reported_not_posted(
    server: LedgerServer,
    client: BlnkClient,
    fake: FakeOpenAI,
    usage_patch: dict[str, Any],
) -> None:
    meter = make_meter(server, {})
    fake.enqueue(Scenario(usage_patch=usage_patch))
    sdk = fake.sync_client()

    with metered(customer="acme"):
        response = sdk.responses.create(model="gpt-4o-mini", input="bad counts")

    assert response.id
    [failure] = meter.failures
    assert failure.kind == "unmetered"
    assert isinstance(failure.error, errors.InvalidUsageError)
    assert response.id in failure.message
    assert failure.unmetered is not None
    assert failure.unmetered.raw_usage is not None
    assert ledger_legs(client, "acme") == []


def test_generator_tool_billed_to_its_customer(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    make_meter(server, {})
    sdk = fake.sync_client()

    @metered(customer=lambda customer, prompt: customer)
    def stream_answer(customer: str, prompt: str) -> Iterator[str]:
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
        )
        for chunk in stream:
            yield chunk.choices[0].delta.content or ""

    pieces = stream_answer("globex", "tell me")
    with metered(customer="acme"):
        text = "".join(pieces)

    assert text
    assert ledger_legs(client, "acme") == []
    assert len(ledger_legs(client, "globex")) == 2


def test_secrets_never_logged(
    server: LedgerServer,
    client: BlnkClient,
    fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wallet = open_wallet(client)
    meter = make_meter(server, {"acme": Wallet(wallet, "prepaid")})
    sdk = fake.sync_client()

    with caplog.at_level(logging.DEBUG), metered(customer="acme"):
        sdk.responses.create(model="gpt-4o-mini", input="secret-free logs")

    assert meter.failures, "the empty prepaid wallet should reject the posting"
    for secret in (BLNK_KEY, sdk.api_key):
        assert secret not in caplog.text
        assert secret not in repr(meter)
        assert all(secret not in f.message for f in meter.failures)


def test_uninstrument_stops_metering(server: LedgerServer, fake: FakeOpenAI) -> None:
    meter = make_meter(server, {})
    sdk = fake.sync_client()
    blnk_meter.uninstrument()

    sdk.responses.create(model="gpt-4o-mini", input="not metered")

    assert meter.stats.calls == 0


def test_openai_error_posts_nothing(server: LedgerServer, fake: FakeOpenAI) -> None:
    meter = make_meter(server, {})
    fake.enqueue(Scenario(status_code=500))
    sdk = fake.sync_client(max_retries=0)

    with metered(customer="acme"), pytest.raises(openai.InternalServerError):
        sdk.responses.create(model="gpt-4o-mini", input="fails")

    assert meter.stats.calls == 1
    assert meter.stats.posted == 0
    assert meter.failures == []


def test_wallet_lookup_failure_sends_nothing(
    server: LedgerServer, fake: FakeOpenAI
) -> None:
    def lookup(customer: str) -> Wallet:
        raise ConnectionError("wallet database down")

    meter = Meter(HttpxTransport(server.url, api_key=BLNK_KEY), wallets=lookup)
    blnk_meter.configure(meter)
    sdk = fake.sync_client()

    with metered(customer="acme"), pytest.raises(errors.WalletLookupError):
        sdk.responses.create(model="gpt-4o-mini", input="who pays?")

    assert fake.requests == []


def test_closed_meter_sends_nothing(server: LedgerServer, fake: FakeOpenAI) -> None:
    meter = make_meter(server, {})
    meter.close()
    sdk = fake.sync_client()

    with (
        metered(customer="acme"),
        pytest.raises(errors.ConfigurationError, match="closed"),
    ):
        sdk.responses.create(model="gpt-4o-mini", input="too late")

    assert fake.requests == []


def test_tool_usage_reaches_ledger(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    make_meter(server, {})
    tools = {"web_search": {"num_requests": 2}}
    fake.enqueue(Scenario(tool_usage=tools))
    sdk = fake.sync_client()

    with metered(customer="acme"):
        sdk.responses.create(model="gpt-4o-mini", input="search the web")

    legs = ledger_legs(client, "acme")
    assert len(legs) == 2
    for leg in legs:
        assert leg["meta_data"]["tool_usage"]["web_search"]["num_requests"] == 2


def test_scope_without_meter_sends_nothing(fake: FakeOpenAI) -> None:
    blnk_meter.instrument()
    sdk = fake.sync_client()

    with (
        metered(customer="acme"),
        pytest.raises(errors.ConfigurationError, match="no meter"),
    ):
        sdk.responses.create(model="gpt-4o-mini", input="who bills this?")

    assert fake.requests == []
    outside = sdk.responses.create(model="gpt-4o-mini", input="nobody in scope")
    assert outside.id


def test_async_meter_across_event_loops(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    meter = Meter(ledger_url=server.url, api_key=BLNK_KEY)
    blnk_meter.configure(meter)

    async def one_request() -> None:
        sdk = fake.async_client()
        async with metered(customer="acme"):
            await sdk.responses.create(model="gpt-4o-mini", input="hello there")
        await sdk.close()

    for _ in range(4):
        asyncio.run(one_request())

    def loop_in_thread() -> None:
        async def burst() -> None:
            await asyncio.gather(*(one_request() for _ in range(5)))

        asyncio.run(burst())

    threads = [threading.Thread(target=loop_in_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert meter.failures == []
    assert meter.stats.posted == 4 + 3 * 5
    assert len(ledger_legs(client, "acme")) == 2 * (4 + 3 * 5)
    meter.close()


def test_generator_scope_bills_every_step(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    make_meter(server, {})
    sdk = fake.sync_client()

    @metered(customer="outer")
    def steps() -> Iterator[int]:
        with metered(customer="inner"):
            sdk.responses.create(model="gpt-4o-mini", input="one")
            yield 1
            sdk.responses.create(model="gpt-4o-mini", input="two")
            yield 2

    assert list(steps()) == [1, 2]
    assert len(ledger_legs(client, "inner")) == 4
    assert ledger_legs(client, "outer") == []


def test_configure_reads_api_key_from_environment(
    server: LedgerServer,
    client: BlnkClient,
    fake: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLNK_API_KEY", BLNK_KEY)
    meter = blnk_meter.configure(ledger_url=server.url)

    with metered(customer="acme"):
        fake.sync_client().responses.create(model="gpt-4o-mini", input="env key")

    assert meter.failures == []
    assert meter.stats.posted == 1
    meter.close()


def test_decorated_generator_bills_only_its_calls(
    server: LedgerServer, client: BlnkClient, fake: FakeOpenAI
) -> None:
    make_meter(
        server,
        {
            "acme": Wallet(open_wallet(client, funds=Decimal(5)), "prepaid"),
            "globex": Wallet(open_wallet(client, funds=Decimal(5)), "prepaid"),
        },
    )
    sdk = fake.sync_client()

    def ask(text: str) -> str:
        response = sdk.responses.create(model="gpt-4o-mini", input=text)
        return response.id

    @metered(customer="globex")
    def answer_in_parts() -> Iterator[str]:
        yield ask("first part")
        yield ask("second part")

    with metered(customer="acme"):
        parts = answer_in_parts()
        globex_ids = [next(parts)]
        acme_ids = [ask("between parts")]
        globex_ids += list(parts)
        acme_ids.append(ask("after parts"))

    for customer, expected in (("acme", acme_ids), ("globex", globex_ids)):
        legs = ledger_legs(client, customer)
        billed = sorted({leg["meta_data"]["response_id"] for leg in legs})
        assert billed == sorted(expected)
