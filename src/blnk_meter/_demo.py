"""``blnk-meter demo``: metered OpenAI calls into an embedded ledger, reconciled.

The demo sets up both billing modes: a prepaid customer topped up with
$120.00 and a postpaid one. It runs calls of several shapes through the real
OpenAI SDK inside customer scopes. Then it checks the ledger against what the
provider reported: tokens posted equal tokens reported, and revenue equals
the customers' debits, to the minor unit.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

import openai

from ._default import configure, set_default_meter, uninstrument
from ._meter import Meter
from ._money import format_amount, to_minor_units
from ._posting import MoneyMap, Wallet
from ._prices import PriceBook
from ._scope import metered
from ._transports import AsyncHttpxTransport, HttpxTransport
from ._usage import Endpoint, Usage

__all__ = ["run_demo"]

USD_PRECISION = 10**8
TOP_UP = Decimal("120.00")
LEDGER_URL = "http://embedded-ledger.invalid"
CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"


@dataclass(frozen=True)
class _Reported:
    """Token counts the provider reported for one call, read by the demo itself."""

    customer: str
    endpoint: Endpoint
    model: str
    response_id: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def charge(self, prices: PriceBook) -> int:
        usage = Usage(
            endpoint=self.endpoint,
            model=self.model,
            response_id=self.response_id,
            input_tokens=self.input_tokens,
            cached_input_tokens=self.cached_tokens,
            output_tokens=self.output_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )
        return prices.charge(usage, USD_PRECISION).amount


def _details(usage: Any, name: str, field: str) -> int:
    details = getattr(usage, name, None)
    return int(getattr(details, field, 0) or 0)


def _from_responses(customer: str, response: Any) -> _Reported:
    usage = response.usage
    return _Reported(
        customer,
        "responses",
        response.model,
        response.id,
        usage.input_tokens,
        _details(usage, "input_tokens_details", "cached_tokens"),
        usage.output_tokens,
        _details(usage, "output_tokens_details", "reasoning_tokens"),
    )


def _from_chat(customer: str, model: str, response_id: str, usage: Any) -> _Reported:
    return _Reported(
        customer,
        "chat.completions",
        model,
        response_id,
        usage.prompt_tokens,
        _details(usage, "prompt_tokens_details", "cached_tokens"),
        usage.completion_tokens,
        _details(usage, "completion_tokens_details", "reasoning_tokens"),
    )


# The customers' workloads --------------------------------------------------


@metered(customer="acme")
def acme_support_answer(client: openai.OpenAI) -> list[_Reported]:
    """Make a prepaid customer's calls: Responses, a streamed chat, an embedding."""
    reported = []
    response = client.responses.create(
        model=CHAT_MODEL, input="Summarise our refund policy in one sentence."
    )
    reported.append(_from_responses("acme", response))

    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Write a haiku about ledgers."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            reported.append(_from_chat("acme", chunk.model, chunk.id, chunk.usage))

    embedding = client.embeddings.create(
        model=EMBEDDING_MODEL, input=["refund policy", "billing cycle"]
    )
    reported.append(
        _Reported(
            "acme",
            "embeddings",
            embedding.model,
            embedding._request_id or "",
            embedding.usage.prompt_tokens,
            0,
            0,
            0,
        )
    )
    return reported


def globex_research(client: openai.OpenAI) -> list[_Reported]:
    """Make a postpaid customer's calls: a chat completion and a Responses stream."""
    reported = []
    with metered(customer="globex"):
        completion = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "List three uses of a ledger."}],
        )
        assert completion.usage is not None
        reported.append(
            _from_chat("globex", completion.model, completion.id, completion.usage)
        )

        with client.responses.stream(
            model=CHAT_MODEL, input="Explain double-entry bookkeeping briefly."
        ) as stream:
            for _event in stream:
                pass
            final = stream.get_final_response()
        reported.append(_from_responses("globex", final))
    return reported


@metered(customer="globex")
async def globex_async_agent(client: openai.AsyncOpenAI) -> list[_Reported]:
    """Make two concurrent calls as a postpaid customer's async agent."""
    responses = await asyncio.gather(
        client.responses.create(model=CHAT_MODEL, input="Plan step one."),
        client.responses.create(model=CHAT_MODEL, input="Plan step two."),
    )
    return [_from_responses("globex", response) for response in responses]


# Setup, run and reconcile --------------------------------------------------


def run_demo(*, use_real_api: bool = False, out: TextIO | None = None) -> int:
    """Run the demo and print its report.

    Args:
        use_real_api: call the real OpenAI API with ``OPENAI_API_KEY``
            instead of canned responses.
        out: where to print; standard output by default.

    Returns:
        0 when the ledger reconciles with what the provider reported, else 1.
    """
    from .testing import EmbeddedLedger, FakeOpenAI

    out = out or sys.stdout
    prices = PriceBook.default()
    with EmbeddedLedger() as ledger:
        wallets = _open_wallets(ledger)
        meter = Meter(
            HttpxTransport(LEDGER_URL, http_transport=ledger.transport()),
            async_transport=AsyncHttpxTransport(
                LEDGER_URL, http_transport=ledger.async_transport()
            ),
            prices=prices,
            money_map=MoneyMap(),
            wallets=wallets,
        )
        configure(meter)
        try:
            if use_real_api:
                source = "the OpenAI API"
                client, async_client = openai.OpenAI(), openai.AsyncOpenAI()
            else:
                source = "canned OpenAI responses"
                fake = FakeOpenAI()
                client, async_client = fake.sync_client(), fake.async_client()
            reported = _run_workloads(client, async_client)
        finally:
            uninstrument()
            set_default_meter(None)
            meter.close()
        print(f"blnk_meter demo: {source}, embedded ledger in memory\n", file=out)
        return _report(ledger, meter, wallets, reported, prices, out)


def _open_wallets(ledger: Any) -> dict[str, Wallet]:
    customers = ledger.create_ledger("Customers")["ledger_id"]
    acme = ledger.create_balance(customers, "USD", meta_data={"customer": "acme"})
    globex = ledger.create_balance(customers, "USD", meta_data={"customer": "globex"})
    ledger.record_transaction(
        {
            "precise_amount": to_minor_units(TOP_UP, USD_PRECISION),
            "precision": USD_PRECISION,
            "currency": "USD",
            "reference": "demo-top-up-acme",
            "source": "@World-USD",
            "destination": acme["balance_id"],
            "description": "Wallet funding",
            "allow_overdraft": True,
            "skip_queue": True,
        }
    )
    return {
        "acme": Wallet(acme["balance_id"], "prepaid"),
        "globex": Wallet(globex["balance_id"], "postpaid"),
    }


def _run_workloads(
    client: openai.OpenAI, async_client: openai.AsyncOpenAI
) -> list[_Reported]:
    reported = acme_support_answer(client)
    reported += globex_research(client)

    async def run_async() -> list[_Reported]:
        try:
            return await globex_async_agent(async_client)
        finally:
            await async_client.close()

    reported += asyncio.run(run_async())
    client.close()
    return reported


def _report(
    ledger: Any,
    meter: Meter,
    wallets: dict[str, Wallet],
    reported: list[_Reported],
    prices: PriceBook,
    out: TextIO,
) -> int:
    money_map = meter.money_map
    charges = [item.charge(prices) for item in reported]
    _print_calls(reported, charges, out)

    balances = {name: ledger.get_balance(w.balance) for name, w in wallets.items()}
    revenue = ledger.get_balance_by_indicator(money_map.revenue, money_map.currency)
    tokens = ledger.get_balance_by_indicator(
        money_map.token_destination, money_map.token_currency
    )
    rows: list[tuple[str, str, str]] = [
        (name, wallets[name].billing, _usd(balance["balance"]))
        for name, balance in balances.items()
    ]
    rows.append((money_map.revenue, "", _usd(revenue["balance"])))
    rows.append((money_map.token_destination, "", f"{tokens['balance']} TOKENS"))
    print("\nLedger balances", file=out)
    for name, mode, amount in rows:
        print(f"  {name:<16} {mode:<9} {amount:>22}", file=out)

    checks = _reconcile(balances, revenue, tokens, reported, charges)
    print("\nReconciliation", file=out)
    for label, expected, actual in checks:
        status = "ok" if expected == actual else "MISMATCH"
        print(
            f"  {label:<46} expected {expected:>14} ledger {actual:>14}  {status}",
            file=out,
        )

    stats = meter.stats
    failures = meter.failures
    print(
        f"\nMeter: {stats.calls} calls, {stats.posted} postings, "
        f"{len(failures)} failures",
        file=out,
    )
    for failure in failures:
        print(f"  failure: {failure.kind}: {failure.message}", file=out)
    reconciled = all(expected == actual for _, expected, actual in checks)
    reconciled = reconciled and not failures and stats.posted == len(reported)
    print(
        "Reconciled to the minor unit." if reconciled else "NOT reconciled.", file=out
    )
    return 0 if reconciled else 1


def _usd(minor: int) -> str:
    return format_amount(minor, USD_PRECISION, "USD")


def _print_calls(reported: list[_Reported], charges: list[int], out: TextIO) -> None:
    print("Metered calls", file=out)
    header = ("customer", "endpoint", "model", "tokens", "charge")
    print("  {:<8} {:<17} {:<24} {:>7} {:>18}".format(*header), file=out)
    for item, amount in zip(reported, charges, strict=True):
        print(
            f"  {item.customer:<8} {item.endpoint:<17} {item.model:<24} "
            f"{item.total_tokens:>7} {_usd(amount):>18}",
            file=out,
        )


def _reconcile(
    balances: dict[str, Any],
    revenue: dict[str, Any],
    tokens: dict[str, Any],
    reported: list[_Reported],
    charges: list[int],
) -> list[tuple[str, int, int]]:
    def charged(customer: str) -> int:
        return sum(
            c for r, c in zip(reported, charges, strict=True) if r.customer == customer
        )

    top_up = to_minor_units(TOP_UP, USD_PRECISION)
    return [
        (
            "tokens posted = tokens reported",
            sum(r.total_tokens for r in reported),
            tokens["balance"],
        ),
        (
            "revenue = charges priced from reported usage",
            sum(charges),
            revenue["balance"],
        ),
        (
            "revenue = customer debits",
            balances["acme"]["debit_balance"] + balances["globex"]["debit_balance"],
            revenue["balance"],
        ),
        (
            "acme (prepaid) = top-up - its charges",
            top_up - charged("acme"),
            balances["acme"]["balance"],
        ),
        (
            "globex (postpaid) = - its charges",
            -charged("globex"),
            balances["globex"]["balance"],
        ),
    ]
