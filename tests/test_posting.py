from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from blnk_meter import errors
from blnk_meter._posting import MoneyMap, UsageEvent, Wallet, build_posting
from blnk_meter._prices import PriceBook
from blnk_meter._usage import Usage

AT = datetime(2026, 12, 4, 15, 30, 0, tzinfo=timezone.utc)
BOOK = PriceBook.from_dict(
    {
        "currency": "USD",
        "source": "test rates",
        "models": {
            "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"}
        },
    }
)


def make_usage(**overrides: Any) -> Usage:
    fields: dict[str, Any] = {
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "requested_model": "gpt-4o-mini",
        "response_id": "chatcmpl-abc123",
        "input_tokens": 1_234_567,
        "output_tokens": 0,
    }
    fields.update(overrides)
    return Usage(**fields)


def make_event(usage: Usage, wallet: Wallet, **overrides: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "customer": "acme",
        "wallet": wallet,
        "usage": usage,
        "occurred_at": AT,
    }
    fields.update(overrides)
    if "charge" not in fields:
        fields["charge"] = BOOK.charge(usage, 10**8)
    return UsageEvent(**fields)


def test_posting_exact_json_prepaid() -> None:
    usage = make_usage()
    event = make_event(usage, Wallet("bln_acme", "prepaid"))

    posting = build_posting(event, MoneyMap())

    assert posting is not None
    common_meta = {
        "customer": "acme",
        "model": "gpt-4o-mini",
        "endpoint": "chat.completions",
        "response_id": "chatcmpl-abc123",
        "input_tokens": 1234567,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 1234567,
        "billing": "prepaid",
        "metered_by": "blnk_meter",
        "posting_generation": 1,
        "requested_model": "gpt-4o-mini",
        "cost": "0.18518505",
        "price_model": "gpt-4o-mini",
    }
    expected = {
        "atomic": True,
        "skip_queue": True,
        "run_async": False,
        "transactions": [
            {
                "precise_amount": 18518505,
                "precision": 100000000,
                "currency": "USD",
                "reference": "bm:chat:chatcmpl-abc123:acme:charge",
                "source": "bln_acme",
                "destination": "@Revenue",
                "description": "AI usage charge: gpt-4o-mini (chat.completions)",
                "allow_overdraft": False,
                "effective_date": "2026-12-04T15:30:00Z",
                "meta_data": {**common_meta, "leg": "charge"},
            },
            {
                "precise_amount": 1234567,
                "precision": 1,
                "currency": "TOKENS",
                "reference": "bm:chat:chatcmpl-abc123:acme:tokens",
                "source": "@Token-Wallet",
                "destination": "@System-Tokens",
                "description": "AI usage tokens: gpt-4o-mini (chat.completions)",
                "allow_overdraft": True,
                "effective_date": "2026-12-04T15:30:00Z",
                "meta_data": {**common_meta, "leg": "tokens"},
            },
        ],
    }
    assert posting.to_json() == expected


def test_posting_json_has_integer_amounts_only() -> None:
    usage = make_usage(input_tokens=1000, output_tokens=500)
    posting = build_posting(make_event(usage, Wallet("bln_x")), MoneyMap())

    assert posting is not None
    wire = json.dumps(posting.to_json())
    for leg in json.loads(wire)["transactions"]:
        assert type(leg["precise_amount"]) is int
        assert type(leg["precision"]) is int
        assert "amount" not in leg


def test_postpaid_wallet_allows_overdraft() -> None:
    posting = build_posting(
        make_event(make_usage(), Wallet("bln_x", "postpaid")), MoneyMap()
    )

    assert posting is not None
    charge_leg = posting.legs[0]
    assert charge_leg.allow_overdraft is True
    assert charge_leg.meta_data["billing"] == "postpaid"


def test_charge_leg_comes_before_tokens() -> None:
    posting = build_posting(make_event(make_usage(), Wallet("bln_x")), MoneyMap())

    assert posting is not None
    assert [leg.currency for leg in posting.legs] == ["USD", "TOKENS"]


def test_references_stable_for_same_event() -> None:
    usage = make_usage()
    first = build_posting(make_event(usage, Wallet("bln_x")), MoneyMap())
    again = build_posting(
        make_event(usage, Wallet("bln_x"), occurred_at=datetime.now(timezone.utc)),
        MoneyMap(),
    )

    assert first is not None and again is not None
    assert first.references == again.references


def test_references_differ_by_customer_and_response() -> None:
    usage = make_usage()
    base = build_posting(make_event(usage, Wallet("bln_x")), MoneyMap())
    other_customer = build_posting(
        make_event(usage, Wallet("bln_y"), customer="globex"), MoneyMap()
    )
    other_response = build_posting(
        make_event(make_usage(response_id="chatcmpl-zzz"), Wallet("bln_x")), MoneyMap()
    )

    assert (
        base is not None and other_customer is not None and other_response is not None
    )
    assert set(base.references).isdisjoint(other_customer.references)
    assert set(base.references).isdisjoint(other_response.references)


@pytest.mark.parametrize(
    "response_id",
    [
        pytest.param("resp_1", id="plain"),
        pytest.param("id with spaces/and?slashes", id="unsafe"),
        pytest.param("x" * 300, id="long"),
    ],
)
def test_references_avoid_blnk_suffixes(response_id: str) -> None:
    usage = make_usage(response_id=response_id)
    posting = build_posting(make_event(usage, Wallet("bln_x")), MoneyMap())

    assert posting is not None
    for reference in posting.references:
        tail = reference.rsplit("_", 1)[-1]
        assert not tail.isdigit()
        assert not reference.endswith(("_q", "_refund"))
        assert " " not in reference
        assert "/" not in reference
        assert len(reference) < 300


def test_next_generation_changes_references_only() -> None:
    posting = build_posting(make_event(make_usage(), Wallet("bln_x")), MoneyMap())
    assert posting is not None

    second = posting.next_generation()

    assert second.generation == 2
    assert second.references == (
        "bm:chat:chatcmpl-abc123:acme:g2:charge",
        "bm:chat:chatcmpl-abc123:acme:g2:tokens",
    )
    assert [leg.precise_amount for leg in second.legs] == [
        leg.precise_amount for leg in posting.legs
    ]
    assert second.legs[0].meta_data["posting_generation"] == 2
    assert second.next_generation().references[0].endswith(":g3:charge")


def test_zero_charge_has_tokens_leg_only() -> None:
    usage = make_usage(input_tokens=1, output_tokens=0)
    book = BOOK.with_prices({"gpt-4o-mini": {"input": "0.000000001", "output": "0"}})
    event = make_event(usage, Wallet("bln_x"), charge=book.charge(usage, 10**8))

    posting = build_posting(event, MoneyMap())

    assert posting is not None
    assert [leg.currency for leg in posting.legs] == ["TOKENS"]
    assert posting.legs[0].meta_data["cost"] == "0.000000000000001"


def test_unpriced_event_flagged_in_meta_data() -> None:
    usage = make_usage(model="mystery-model")
    posting = build_posting(make_event(usage, Wallet("bln_x"), charge=None), MoneyMap())

    assert posting is not None
    assert len(posting.legs) == 1
    assert posting.legs[0].meta_data["unpriced"] is True
    assert posting.legs[0].meta_data["cost"] == "0"


def test_tool_usage_kept_in_meta_data() -> None:
    tools = {"web_search": {"num_requests": 2}}
    posting = build_posting(
        make_event(make_usage(tool_usage=tools), Wallet("bln_x")), MoneyMap()
    )

    assert posting is not None
    assert all(leg.meta_data["tool_usage"] == tools for leg in posting.legs)
    assert (
        "tool_usage"
        not in build_posting(  # type: ignore[union-attr]
            make_event(make_usage(), Wallet("bln_x")), MoneyMap()
        )
        .legs[0]
        .meta_data
    )


def test_tool_usage_floats_sent_as_text() -> None:
    tools = {"web_search": {"num_requests": 1, "cost": 0.025, "steps": [0.1, 2]}}
    posting = build_posting(
        make_event(make_usage(tool_usage=tools), Wallet("bln_x")), MoneyMap()
    )

    assert posting is not None
    body = json.dumps(posting.to_json())
    expected = {"web_search": {"num_requests": 1, "cost": "0.025", "steps": ["0.1", 2]}}
    assert all(leg.meta_data["tool_usage"] == expected for leg in posting.legs)
    assert "0.025," not in body
    assert '"cost": "0.025"' in body


def test_empty_usage_builds_nothing() -> None:
    usage = make_usage(input_tokens=0, output_tokens=0)

    assert build_posting(make_event(usage, Wallet("bln_x")), MoneyMap()) is None


def test_money_map_templates_use_customer() -> None:
    money_map = MoneyMap(
        revenue="@Revenue-{model}",
        token_source="@Tokens-{customer}",
        charge_description="{customer} used {model}",
    )
    posting = build_posting(
        make_event(make_usage(), money_map.wallet_for("acme")), money_map
    )

    assert posting is not None
    charge, tokens = posting.legs
    assert charge.source == "@acme-USD"
    assert charge.destination == "@Revenue-gpt-4o-mini"
    assert charge.description == "acme used gpt-4o-mini"
    assert tokens.source == "@Tokens-acme"


def test_money_map_default_wallet_is_postpaid() -> None:
    wallet = MoneyMap().wallet_for("acme")

    assert wallet == Wallet("@acme-USD", "postpaid")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"revenue": "@Bad Revenue"}, id="space-in-indicator"),
        pytest.param({"customer_wallet": "@{user}-USD"}, id="unknown-placeholder"),
        pytest.param({"currency": "TOKENS"}, id="same-currency"),
        pytest.param({"billing": "later"}, id="bad-billing"),
        pytest.param({"token_source": ""}, id="empty-account"),
        pytest.param({"revenue": "@Rev-{customer.__class__}"}, id="attribute"),
        pytest.param({"revenue": "@Rev-{customer!r}"}, id="conversion"),
        pytest.param({"revenue": "@Rev-{0}"}, id="positional"),
        pytest.param({"revenue": "@Rev-{customer"}, id="unclosed"),
    ],
)
def test_money_map_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError):
        MoneyMap(**kwargs)


def test_scope_metadata_copied_and_protected() -> None:
    usage = make_usage()
    event = make_event(usage, Wallet("bln_x"), metadata={"feature": "search"})
    posting = build_posting(event, MoneyMap())

    assert posting is not None
    assert all(leg.meta_data["feature"] == "search" for leg in posting.legs)

    clash = make_event(usage, Wallet("bln_x"), metadata={"customer": "someone-else"})
    with pytest.raises(errors.ConfigurationError, match="reserved"):
        build_posting(clash, MoneyMap())


def test_cost_meta_data_is_exact_string() -> None:
    usage = make_usage(input_tokens=3, output_tokens=7)
    posting = build_posting(make_event(usage, Wallet("bln_x")), MoneyMap())

    assert posting is not None
    expected = (3 * Decimal("0.15") + 7 * Decimal("0.60")) / Decimal(1_000_000)
    assert Decimal(posting.legs[0].meta_data["cost"]) == expected
    assert posting.legs[0].precise_amount == 465


@pytest.mark.parametrize("field", ["model", "endpoint", "response_id"])
def test_customer_wallet_takes_customer_only(field: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=r"use only \{customer\}"):
        MoneyMap(customer_wallet=f"@{{customer}}-{{{field}}}")
