from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from blnk_meter import errors
from blnk_meter._failures import MeterFailure
from blnk_meter._meter import Meter
from blnk_meter._posting import MoneyMap, Posting, Wallet
from blnk_meter._prices import PriceBook
from blnk_meter._scope import Scope
from blnk_meter._transports import Delivery, MemoryTransport, RetryPolicy
from blnk_meter._usage import ProviderCall, UnmeteredCall, Usage

BOOK = PriceBook.from_dict(
    {
        "currency": "USD",
        "source": "test rates",
        "models": {
            "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"}
        },
    }
)
CALL = ProviderCall(
    endpoint="responses",
    method="POST",
    path="/responses",
    requested_model="gpt-4o-mini",
    stream=False,
    is_async=False,
)
ACME = Scope(customer="acme")


def make_usage(**overrides: Any) -> Usage:
    fields: dict[str, Any] = {
        "endpoint": "responses",
        "model": "gpt-4o-mini-2024-07-18",
        "requested_model": "gpt-4o-mini",
        "response_id": "resp_1",
        "input_tokens": 1000,
        "cached_input_tokens": 200,
        "output_tokens": 500,
        "reasoning_tokens": 100,
    }
    fields.update(overrides)
    return Usage(**fields)


class FlakyTransport:
    """Fails a set number of sends with a ledger outage, then records in memory."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.memory = MemoryTransport()

    def send(self, posting: Posting) -> Delivery:
        if self.failures > 0:
            self.failures -= 1
            raise errors.LedgerUnavailableError(
                "ledger down", references=posting.references
            )
        return self.memory.send(posting)

    def close(self) -> None:
        pass


def test_meter_posts_usage_in_scope() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)

    token = meter.begin(CALL, ACME)
    assert token is not None
    delivery = meter.finish(token, make_usage())

    assert delivery is not None
    assert delivery.outcome == "posted"
    [posting] = transport.postings
    charge, tokens = posting.legs
    # 800 uncached input at 0.15, 200 cached at 0.075, 500 output at 0.60 per 1M
    assert charge.precise_amount == 800 * 15 + 200 * 15 // 2 + 500 * 60
    assert tokens.precise_amount == 1500
    assert charge.source == "@acme-USD"
    assert meter.stats.calls == 1
    assert meter.stats.posted == 1
    assert meter.failures == []


def test_meter_charge_matches_hand_calculation() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None

    meter.finish(
        token,
        make_usage(
            input_tokens=1_234_567,
            cached_input_tokens=0,
            output_tokens=0,
            reasoning_tokens=0,
        ),
    )

    assert transport.postings[0].legs[0].precise_amount == 18_518_505


def test_meter_outside_scope_raises_by_default() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK)

    with pytest.raises(errors.MissingCustomerError, match="/responses"):
        meter.begin(CALL, None)


def test_meter_outside_scope_default_customer() -> None:
    transport = MemoryTransport()
    meter = Meter(
        transport, prices=BOOK, outside_scope="default", default_customer="house"
    )

    token = meter.begin(CALL, None)
    assert token is not None
    meter.finish(token, make_usage())

    assert transport.postings[0].customer == "house"


def test_meter_outside_scope_ignore_logs(caplog: pytest.LogCaptureFixture) -> None:
    meter = Meter(MemoryTransport(), prices=BOOK, outside_scope="ignore")

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        assert meter.begin(CALL, None) is None

    assert meter.stats.ignored == 1
    assert "outside any customer scope" in caplog.text


def test_meter_scope_without_customer_uses_policy() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK)

    with pytest.raises(errors.MissingCustomerError):
        meter.begin(CALL, Scope(customer=None, metadata={"feature": "x"}))


def test_unknown_requested_model_stops_call() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK)
    call = ProviderCall("responses", "POST", "/responses", "gpt-9-ultra", False, False)

    with pytest.raises(errors.UnknownModelError, match="gpt-9-ultra") as caught:
        meter.begin(call, ACME)

    assert caught.value.model == "gpt-9-ultra"
    assert meter.stats.calls == 0


def test_unknown_served_model_kept_as_failure() -> None:
    transport = MemoryTransport()
    seen: list[MeterFailure] = []
    meter = Meter(transport, prices=BOOK, on_error=seen.append)
    token = meter.begin(CALL, ACME)
    assert token is not None

    meter.finish(token, make_usage(model="gpt-4o-mini-special"))

    assert transport.postings == []
    [failure] = meter.failures
    assert failure.kind == "unpriced"
    assert failure.usage is not None
    assert failure.usage.model == "gpt-4o-mini-special"
    assert seen == [failure]
    assert meter.stats.unpriced == 1


def test_unknown_model_zero_policy_flags_posting() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK, unknown_model="zero")
    call = ProviderCall("responses", "POST", "/responses", "house-model", False, False)
    token = meter.begin(call, ACME)
    assert token is not None

    meter.finish(token, make_usage(model="house-model"))

    [posting] = transport.postings
    [leg] = posting.legs
    assert leg.currency == "TOKENS"
    assert leg.meta_data["unpriced"] is True
    assert meter.stats.unpriced_zero == 1


def test_unmetered_call_reported_never_zero(caplog: pytest.LogCaptureFixture) -> None:
    transport = MemoryTransport()
    seen: list[MeterFailure] = []
    meter = Meter(transport, prices=BOOK, on_error=seen.append)
    token = meter.begin(CALL, ACME)
    assert token is not None
    report = UnmeteredCall(
        call=CALL,
        reason="stream_without_usage",
        message="stream chatcmpl-1 ended without usage",
        response_id="chatcmpl-1",
    )

    with caplog.at_level(logging.ERROR, logger="blnk_meter"):
        meter.finish(token, report)

    assert transport.postings == []
    assert [f.kind for f in seen] == ["unmetered"]
    assert seen[0].unmetered is report
    assert meter.stats.unmetered == 1
    assert "chatcmpl-1" in caplog.text


def test_absurd_token_count_not_billed() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK, max_tokens_per_call=10_000)
    token = meter.begin(CALL, ACME)
    assert token is not None

    meter.finish(token, make_usage(input_tokens=20_000, cached_input_tokens=0))

    assert transport.postings == []
    [failure] = meter.failures
    assert failure.kind == "unmetered"
    assert isinstance(failure.error, errors.InvalidUsageError)
    assert failure.unmetered is not None
    assert failure.unmetered.reason == "invalid_usage"
    assert failure.unmetered.error is failure.error
    assert failure.usage is not None
    assert failure.usage.input_tokens == 20_000
    assert "resp_1" in failure.message
    assert "not billed" in failure.message


def test_undelivered_posting_kept_and_retried() -> None:
    transport = FlakyTransport(failures=1)
    meter = Meter(transport, prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None

    assert meter.finish(token, make_usage()) is None
    [failure] = meter.failures
    assert failure.kind == "undelivered"
    assert failure.posting is not None
    assert failure.posting.references[0] in failure.message

    assert meter.retry_undelivered() == 1
    assert meter.failures == []
    assert len(transport.memory.postings) == 1
    assert meter.stats.undelivered == 1
    assert meter.stats.retried == 1
    assert meter.stats.posted == 1


def test_retry_undelivered_keeps_failing_posting() -> None:
    transport = FlakyTransport(failures=2)
    meter = Meter(transport, prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None
    meter.finish(token, make_usage())

    assert meter.retry_undelivered() == 0
    [kept] = meter.failures
    assert kept.kind == "undelivered"
    assert "'acme' on retry" in kept.message
    assert kept.usage is not None
    assert meter.retry_undelivered() == 1


def test_repeated_finish_posts_once() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None

    first = meter.finish(token, make_usage())
    second = meter.finish(token, make_usage())

    assert first is not None and second is not None
    assert (first.outcome, second.outcome) == ("posted", "duplicate")
    assert len(transport.postings) == 1
    assert meter.stats.duplicates == 1


def test_on_error_hook_exception_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    def broken_hook(failure: MeterFailure) -> None:
        raise RuntimeError("hook broke")

    meter = Meter(MemoryTransport(), prices=BOOK, on_error=broken_hook)
    token = meter.begin(CALL, ACME)
    assert token is not None

    with caplog.at_level(logging.ERROR, logger="blnk_meter"):
        meter.finish(token, make_usage(model="nope"))

    assert "on_error hook raised" in caplog.text
    assert len(meter.failures) == 1


def test_wallets_mapping_and_function() -> None:
    transport = MemoryTransport()
    wallets = {"acme": Wallet("bln_acme", "prepaid")}
    meter = Meter(transport, prices=BOOK, wallets=wallets)

    assert meter.wallet_for("acme") == Wallet("bln_acme", "prepaid")
    assert meter.wallet_for("other") == MoneyMap().wallet_for("other")

    by_function = Meter(
        transport,
        prices=BOOK,
        wallets=lambda customer: Wallet(f"bln_{customer}") if customer != "x" else None,
    )
    assert by_function.wallet_for("globex") == Wallet("bln_globex")
    assert by_function.wallet_for("x").balance == "@x-USD"


def test_scope_metadata_reaches_posting() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)
    token = meter.begin(CALL, Scope(customer="acme", metadata={"feature": "summary"}))
    assert token is not None

    meter.finish(token, make_usage())

    assert transport.postings[0].legs[0].meta_data["feature"] == "summary"


def test_sync_call_needs_sync_transport() -> None:
    class AsyncOnly:
        async def asend(self, posting: Posting) -> Delivery:
            raise AssertionError("not reached")

        async def aclose(self) -> None:
            pass

    meter = Meter(AsyncOnly(), prices=BOOK)

    with pytest.raises(errors.ConfigurationError, match="synchronous transport"):
        meter.begin(CALL, ACME)


async def test_meter_afinish_posts() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)
    call = ProviderCall("responses", "POST", "/responses", "gpt-4o-mini", True, True)
    token = meter.begin(call, ACME)
    assert token is not None

    delivery = await meter.afinish(token, make_usage(streamed=True))

    assert delivery is not None
    assert transport.postings[0].legs[0].meta_data["streamed"] is True


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-transport"),
        pytest.param(
            {"transport": MemoryTransport(), "ledger_url": "http://127.0.0.1:1"},
            id="both",
        ),
        pytest.param(
            {"transport": MemoryTransport(), "outside_scope": "default"},
            id="default-without-customer",
        ),
        pytest.param(
            {"transport": MemoryTransport(), "default_customer": "house"},
            id="customer-without-default",
        ),
        pytest.param(
            {"transport": MemoryTransport(), "outside_scope": "sometimes"},
            id="bad-policy",
        ),
        pytest.param(
            {"transport": MemoryTransport(), "unknown_model": "guess"},
            id="bad-unknown-policy",
        ),
        pytest.param(
            {"transport": MemoryTransport(), "max_tokens_per_call": 0}, id="bad-max"
        ),
        pytest.param(
            {"transport": MemoryTransport(), "money_map": MoneyMap(currency="EUR")},
            id="currency-mismatch",
        ),
        pytest.param(
            {"transport": MemoryTransport(), "precisions": {"USD": 3}},
            id="bad-precision",
        ),
    ],
)
def test_meter_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError):
        Meter(**kwargs)


def test_meter_repr_hides_api_key() -> None:
    meter = Meter(ledger_url="http://127.0.0.1:5001", api_key="sk-blnk-secret-value")

    assert "sk-blnk-secret-value" not in repr(meter)
    assert "<set>" in repr(meter)
    meter.close()


def test_wallet_function_failure_stops_call() -> None:
    def lookup(customer: str) -> Wallet:
        raise ConnectionError("wallet database down")

    meter = Meter(MemoryTransport(), prices=BOOK, wallets=lookup)

    with pytest.raises(errors.WalletLookupError, match="'acme'") as caught:
        meter.begin(CALL, ACME)

    assert isinstance(caught.value.__cause__, ConnectionError)
    assert meter.stats.calls == 0


def test_wallet_mapping_checked_at_construction() -> None:
    with pytest.raises(errors.ConfigurationError, match="Wallet"):
        Meter(MemoryTransport(), prices=BOOK, wallets={"acme": "bln_x"})  # type: ignore[dict-item]
    with pytest.raises(errors.InvalidCustomerError):
        Meter(MemoryTransport(), prices=BOOK, wallets={"bad id": Wallet("bln_x")})


def test_closed_meter_stops_calls() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK)
    meter.close()

    with pytest.raises(errors.ConfigurationError, match="closed"):
        meter.begin(CALL, ACME)


def test_azure_deployment_skips_price_check() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)
    call = ProviderCall(
        "chat.completions",
        "POST",
        "/chat/completions",
        "my-deployment",
        False,
        False,
        True,
    )

    token = meter.begin(call, ACME)
    assert token is not None
    meter.finish(
        token, make_usage(endpoint="chat.completions", requested_model="my-deployment")
    )

    assert transport.postings[0].legs[0].meta_data["requested_model"] == "my-deployment"
    assert transport.postings[0].legs[0].meta_data["model"] == "gpt-4o-mini-2024-07-18"


def test_cancelled_call_counted() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None

    meter.cancel(token, RuntimeError("provider said 500"))

    assert meter.stats.cancelled == 1
    assert meter.failures == []


def test_unexpected_send_error_kept_for_retry() -> None:
    class BrokenOnce(FlakyTransport):
        def send(self, posting: Posting) -> Delivery:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("client closed")
            return self.memory.send(posting)

    transport = BrokenOnce(failures=1)
    meter = Meter(transport, prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None

    meter.finish(token, make_usage())

    [failure] = meter.failures
    assert failure.kind == "undelivered"
    assert "RuntimeError" in failure.message
    assert meter.retry_undelivered() == 1


def test_failure_messages_name_response_and_customer() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK, max_tokens_per_call=10)
    for usage in (make_usage(model="nope"), make_usage()):
        token = meter.begin(CALL, ACME)
        assert token is not None
        meter.finish(token, usage)

    for failure in meter.failures:
        assert "'resp_1'" in failure.message
        assert "'acme'" in failure.message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("not a url", id="no-scheme"),
        pytest.param("ftp://ledger:5001", id="ftp"),
        pytest.param("http://", id="no-host"),
        pytest.param(" http://127.0.0.1:5001", id="leading-space"),
    ],
)
def test_ledger_url_checked(url: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="ledger_url"):
        Meter(ledger_url=url)


def test_ledger_url_password_hidden() -> None:
    meter = Meter(ledger_url="http://admin:hunter2@127.0.0.1:5001")

    assert "hunter2" not in repr(meter)
    assert "admin" not in repr(meter)
    assert "basic_auth=<set>" in repr(meter)
    meter.close()


def test_integer_wallet_keys_match_customers() -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK, wallets={42: Wallet("bln_42", "prepaid")})  # type: ignore[dict-item]

    token = meter.begin(CALL, Scope(customer="42"))
    assert token is not None
    meter.finish(token, make_usage())

    assert meter.wallet_for("42") == Wallet("bln_42", "prepaid")
    assert transport.postings[0].legs[0].source == "bln_42"
    assert transport.postings[0].legs[0].allow_overdraft is False


def test_wallet_keys_clash_after_conversion() -> None:
    wallets = {42: Wallet("bln_a"), "42": Wallet("bln_b")}

    with pytest.raises(errors.ConfigurationError, match="appears twice"):
        Meter(MemoryTransport(), prices=BOOK, wallets=wallets)  # type: ignore[arg-type]


async def test_cancelled_delivery_keeps_posting() -> None:
    started = asyncio.Event()

    class HangingTransport:
        async def asend(self, posting: Posting) -> Delivery:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("never resumed")

    memory = MemoryTransport()
    meter = Meter(HangingTransport(), prices=BOOK)
    call = ProviderCall("responses", "POST", "/responses", "gpt-4o-mini", False, True)
    token = meter.begin(call, ACME)
    assert token is not None

    task = asyncio.create_task(meter.afinish(token, make_usage()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [failure] = meter.failures
    assert failure.kind == "undelivered"
    assert isinstance(failure.error, asyncio.CancelledError)
    assert await meter.aretry_undelivered(memory) == 1
    assert len(memory.postings) == 1


def test_first_send_duplicate_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    transport = MemoryTransport()
    meter = Meter(transport, prices=BOOK)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        for _ in range(2):
            token = meter.begin(CALL, ACME)
            assert token is not None
            meter.finish(token, make_usage(response_id="chatcmpl-reused"))

    assert meter.stats.duplicates == 1
    assert "already in the ledger before this meter sent it" in caplog.text
    assert "chatcmpl-reused" in caplog.text


def test_retry_through_new_transport_after_close() -> None:
    meter = Meter(FlakyTransport(failures=1), prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None
    meter.finish(token, make_usage())
    meter.close()
    replacement = MemoryTransport()

    assert meter.retry_undelivered(replacement) == 1
    assert len(replacement.postings) == 1
    assert meter.failures == []


def test_clear_failures_returns_and_empties() -> None:
    meter = Meter(MemoryTransport(), prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None
    meter.finish(token, make_usage(model="nope"))

    cleared = meter.clear_failures()

    assert [f.kind for f in cleared] == ["unpriced"]
    assert meter.failures == []
    assert meter.stats.unpriced == 1


def test_kept_errors_release_tracebacks() -> None:
    meter = Meter(FlakyTransport(failures=1), prices=BOOK)
    token = meter.begin(CALL, ACME)
    assert token is not None

    meter.finish(token, make_usage())

    [failure] = meter.failures
    assert failure.error is not None
    assert failure.error.__traceback__ is None


def test_transport_with_only_send_accepted() -> None:
    class SendOnly:
        def __init__(self) -> None:
            self.memory = MemoryTransport()

        def send(self, posting: Posting) -> Delivery:
            return self.memory.send(posting)

    transport = SendOnly()
    meter = Meter(transport, prices=BOOK)  # type: ignore[arg-type]
    token = meter.begin(CALL, ACME)
    assert token is not None
    meter.finish(token, make_usage())
    meter.close()

    assert len(transport.memory.postings) == 1


def test_object_without_send_rejected() -> None:
    with pytest.raises(errors.ConfigurationError, match="neither send"):
        Meter(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"attempts": 2.5}, id="fractional-attempts"),
        pytest.param({"attempts": True}, id="bool-attempts"),
        pytest.param({"initial_delay": float("nan")}, id="nan-delay"),
        pytest.param({"max_delay": -1}, id="negative-delay"),
        pytest.param({"max_delay": "1"}, id="string-delay"),
    ],
)
def test_retry_policy_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://127.0.0.1:0"]
)
def test_ledger_url_bad_port_rejected(url: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="ledger_url"):
        Meter(ledger_url=url)
