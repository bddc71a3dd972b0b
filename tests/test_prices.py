from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
import threading
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import genai_prices
import pytest

from blnk_meter import Usage
from blnk_meter._prices import ModelPrice, PriceBook
from blnk_meter.errors import ConfigurationError, UnknownModelError

PRICES_LOGGER = "blnk_meter.prices"


def make_usage(
    model: str = "test-model",
    *,
    input_tokens: int = 0,
    cached: int = 0,
    output_tokens: int = 0,
    reasoning: int = 0,
) -> Usage:
    return Usage(
        endpoint="chat.completions",
        model=model,
        response_id="resp_1",
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning,
    )


def book_with(**rates: str | None) -> PriceBook:
    return PriceBook({"test-model": {"input": "0", "output": "0", **rates}})


def round_half_even(value: Fraction) -> int:
    """Round a fraction to an integer, half to even, by hand."""
    floor = value.numerator // value.denominator
    remainder = value - floor
    if remainder > Fraction(1, 2):
        return floor + 1
    if remainder == Fraction(1, 2):
        return floor + floor % 2
    return floor


def expected_cost(usage: Usage, price: ModelPrice) -> Fraction:
    """Compute a usage event's cost by hand with fractions."""
    cached_rate = price.input if price.cached_input is None else price.cached_input
    total = (
        (usage.input_tokens - usage.cached_input_tokens) * Fraction(price.input)
        + usage.cached_input_tokens * Fraction(cached_rate)
        + usage.output_tokens * Fraction(price.output)
    )
    return total / 1_000_000


def price_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == PRICES_LOGGER and record.levelno == logging.WARNING
    ]


# Cost and charge ----------------------------------------------------------


def test_charge_worked_example_is_exact() -> None:
    book = book_with(input="0.15")
    usage = make_usage(input_tokens=1_234_567)

    charge = book.charge(usage, 10**8)

    assert charge.cost == Decimal("0.18518505")
    assert charge.amount == 18518505


def test_charge_reports_how_it_priced() -> None:
    book = PriceBook({"gpt-4o": {"input": "2.50", "output": "10"}}, currency="USD")

    charge = book.charge(make_usage("gpt-4o-2024-08-06", input_tokens=10), 100)

    assert charge.currency == "USD"
    assert charge.precision == 100
    assert charge.model_key == "gpt-4o"
    assert charge.price == ModelPrice(input="2.50", output="10")
    assert charge.fine_tuned is False
    assert charge.via_family is True


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        pytest.param("5", 0, id="half-cent-rounds-to-zero"),
        pytest.param("15", 2, id="one-and-half-cents-round-to-two"),
        pytest.param("25", 2, id="two-and-half-cents-round-to-two"),
    ],
)
def test_charge_rounds_half_to_even(rate: str, expected: int) -> None:
    # 1,000 tokens at `rate` per 1M cost rate/1000 dollars, a half cent exactly.
    book = book_with(input=rate)

    charge = book.charge(make_usage(input_tokens=1000), 100)

    assert charge.cost * 100 % 1 == Decimal("0.5")
    assert charge.amount == expected


def test_cost_prices_cached_tokens_once() -> None:
    book = book_with(input="2.50", cached_input="1.25", output="10")
    usage = make_usage(input_tokens=1000, cached=400, output_tokens=100)

    cost = book.cost(usage)

    # (600 * 2.50 + 400 * 1.25 + 100 * 10) / 1,000,000
    assert cost == Decimal("0.003")
    assert cost == expected_cost(usage, book.resolve("test-model").price)


def test_cost_without_cached_rate_uses_input() -> None:
    book = book_with(input="2.50", output="10")
    cached = make_usage(input_tokens=1000, cached=400)
    uncached = make_usage(input_tokens=1000)

    assert book.cost(cached) == book.cost(uncached)


def test_cost_with_free_cache_charges_nothing() -> None:
    book = book_with(input="2.50", cached_input="0", output="10")
    usage = make_usage(input_tokens=1000, cached=1000)

    assert book.cost(usage) == 0


def test_cost_counts_reasoning_as_output_once() -> None:
    book = book_with(input="1", output="4")
    with_reasoning = make_usage(input_tokens=10, output_tokens=100, reasoning=60)
    without_reasoning = make_usage(input_tokens=10, output_tokens=100)

    assert book.cost(with_reasoning) == book.cost(without_reasoning)
    # (10 * 1 + 100 * 4) / 1,000,000
    assert book.cost(with_reasoning) == Decimal("0.00041")


def test_cost_keeps_every_digit() -> None:
    # 30 significant digits times 10**9 tokens needs more than the 28 digits of
    # the default decimal context.
    rate = "1.23456789012345678901234567891"
    book = book_with(input=rate)
    usage = make_usage(input_tokens=999_999_999)

    assert book.cost(usage) == Fraction(rate) * 999_999_999 / 1_000_000


def test_charge_matches_fraction_computation() -> None:
    generator = random.Random(1234567)
    for _ in range(300):
        price = ModelPrice(
            input=Decimal(generator.randint(0, 10**6)).scaleb(-generator.randint(0, 4)),
            cached_input=(
                None
                if generator.random() < 0.3
                else Decimal(generator.randint(0, 10**5)).scaleb(-4)
            ),
            output=Decimal(generator.randint(0, 10**7)).scaleb(
                -generator.randint(0, 5)
            ),
        )
        input_tokens = generator.randint(0, 5_000_000)
        output_tokens = generator.randint(0, 500_000)
        usage = make_usage(
            input_tokens=input_tokens,
            cached=generator.randint(0, input_tokens),
            output_tokens=output_tokens,
            reasoning=generator.randint(0, output_tokens),
        )
        precision = generator.choice([1, 100, 10**6, 10**8])
        book = PriceBook({"test-model": price})

        charge = book.charge(usage, precision)
        exact = expected_cost(usage, price)

        assert charge.cost == exact, (usage, price)
        assert charge.amount == round_half_even(exact * precision), (usage, price)


def test_charge_rejects_invalid_precision() -> None:
    book = book_with(input="1")

    with pytest.raises(ConfigurationError, match="250"):
        book.charge(make_usage(input_tokens=1), 250)


def test_charge_unknown_model_raises() -> None:
    book = book_with(input="1")

    with pytest.raises(UnknownModelError) as excinfo:
        book.charge(make_usage("gpt-unknown", input_tokens=1), 100)

    assert excinfo.value.model == "gpt-unknown"


# Rates --------------------------------------------------------------------


# Typed as Any so that mypy accepts the float and the runtime check rejects it.
FLOAT_RATE: Any = 0.15

FLOAT_RATE_CASES = [
    pytest.param(lambda: ModelPrice(input=FLOAT_RATE, output="1"), id="input"),
    pytest.param(lambda: ModelPrice(input="1", output=FLOAT_RATE), id="output"),
    pytest.param(
        lambda: ModelPrice(input="1", output="1", cached_input=FLOAT_RATE),
        id="cached",
    ),
    pytest.param(lambda: PriceBook({"m": {"input": 0.15, "output": "1"}}), id="book"),
    pytest.param(
        lambda: PriceBook.from_dict({"models": {"m": {"input": 0.1, "output": "1"}}}),
        id="from-dict",
    ),
    pytest.param(lambda: book_with(input="1").with_markup(FLOAT_RATE), id="markup"),
]


@pytest.mark.parametrize("make_price", FLOAT_RATE_CASES)
def test_float_rates_rejected(make_price: Any) -> None:
    with pytest.raises(TypeError, match="string or a Decimal"):
        make_price()


def test_float_rate_error_names_model() -> None:
    with pytest.raises(TypeError, match="'gpt-x'"):
        PriceBook({"gpt-x": {"input": 0.15, "output": "1"}})


@pytest.mark.parametrize(
    "rate",
    [
        pytest.param("-1", id="negative"),
        pytest.param("NaN", id="nan"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("2,50", id="comma"),
        pytest.param("", id="empty"),
        pytest.param(Decimal("-0.01"), id="negative-decimal"),
        pytest.param("0_15", id="underscore"),
        pytest.param("1e-9999999", id="tiny-exponent"),
        pytest.param("1e12", id="huge"),
    ],
)
def test_invalid_rates_rejected(rate: str | Decimal) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        ModelPrice(input=rate, output="1")

    assert repr(rate) in str(excinfo.value) or "1E" in str(excinfo.value)
    assert len(str(excinfo.value)) < 300


def test_decimal_built_from_float_rejected() -> None:
    with pytest.raises(ConfigurationError, match="from a float") as excinfo:
        ModelPrice(input=Decimal(0.15), output="1")  # noqa: RUF032  (the mistake under test)

    assert "'0.15'" in str(excinfo.value)


def test_negative_zero_rate_is_zero() -> None:
    price = ModelPrice(input="-0", output="1")

    assert price.input == 0
    assert price.to_dict()["input"] == "0"


@pytest.mark.parametrize(
    "rate",
    [
        pytest.param(True, id="bool"),
        pytest.param(None, id="none"),
        pytest.param([1], id="list"),
    ],
)
def test_non_numeric_rates_rejected(rate: object) -> None:
    with pytest.raises(TypeError):
        ModelPrice(input=rate, output="1")  # type: ignore[arg-type]


def test_model_price_accepts_exact_forms() -> None:
    price = ModelPrice(input="2.50", cached_input=Decimal("1.25"), output=10)

    assert price.input == Decimal("2.50")
    assert price.cached_input == Decimal("1.25")
    assert price.output == Decimal(10)


def test_model_price_is_frozen() -> None:
    price = ModelPrice(input="1", output="2")

    with pytest.raises(dataclasses.FrozenInstanceError):
        price.input = Decimal(3)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        pytest.param(
            {"input": "1", "output": "1", "cache_input": "1"},
            "cache_input",
            id="unknown",
        ),
        pytest.param({"input": "1"}, "output", id="missing-output"),
    ],
)
def test_price_entry_fields_checked(entry: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        PriceBook({"gpt-x": entry})

    assert fragment in str(excinfo.value)
    assert "'gpt-x'" in str(excinfo.value)


# Resolution ---------------------------------------------------------------


def test_resolve_prefers_exact_name() -> None:
    book = PriceBook.default()

    resolved = book.resolve("gpt-4o-2024-05-13")

    assert resolved.model_key == "gpt-4o-2024-05-13"
    assert resolved.via_family is False
    assert resolved.price != book.resolve("gpt-4o").price


def test_resolve_snapshot_uses_family() -> None:
    book = PriceBook({"gpt-4.1": {"input": "2", "output": "8"}})

    resolved = book.resolve("gpt-4.1-2031-01-01")

    assert resolved.model_key == "gpt-4.1"
    assert resolved.via_family is True
    assert resolved.fine_tuned is False


def test_resolve_short_date_uses_family() -> None:
    book = PriceBook({"gpt-4": {"input": "30", "output": "60"}})

    resolved = book.resolve("gpt-4-0613")

    assert resolved.model_key == "gpt-4"
    assert resolved.via_family is True


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("gpt-4-1399", id="month-13"),
        pytest.param("gpt-4-2024-02-32", id="day-32"),
        pytest.param("gpt-4-turbo", id="no-date"),
        pytest.param("gpt-4x-0613", id="other-family"),
        pytest.param("", id="empty"),
    ],
)
def test_resolve_without_family_raises(model: str) -> None:
    book = PriceBook({"gpt-4": {"input": "30", "output": "60"}})

    with pytest.raises(UnknownModelError) as excinfo:
        book.resolve(model)

    assert excinfo.value.model == model


def test_snapshot_fallback_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook({"gpt-4o": {"input": "2.50", "output": "10"}})
    caplog.set_level(logging.WARNING, logger=PRICES_LOGGER)

    book.resolve("gpt-4o-2031-01-01")
    book.resolve("gpt-4o-2031-01-01")
    book.cost(make_usage("gpt-4o-2031-01-01", input_tokens=1))

    records = price_warnings(caplog)
    assert len(records) == 1
    assert "'gpt-4o-2031-01-01'" in records[0].getMessage()
    assert "'gpt-4o'" in records[0].getMessage()


def test_snapshot_fallback_warns_per_name(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook({"gpt-4o": {"input": "2.50", "output": "10"}})
    caplog.set_level(logging.WARNING, logger=PRICES_LOGGER)

    book.resolve("gpt-4o-2031-01-01")
    book.resolve("gpt-4o-2031-02-01")

    assert len(price_warnings(caplog)) == 2


def test_snapshot_fallback_warns_once_across_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = PriceBook({"gpt-4o": {"input": "2.50", "output": "10"}})
    caplog.set_level(logging.WARNING, logger=PRICES_LOGGER)
    start = threading.Barrier(16)

    def resolve() -> None:
        start.wait()
        for _ in range(50):
            book.resolve("gpt-4o-2031-01-01")

    threads = [threading.Thread(target=resolve) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(price_warnings(caplog)) == 1


def test_exact_and_unknown_names_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook({"gpt-4o": {"input": "2.50", "output": "10"}})
    caplog.set_level(logging.DEBUG, logger=PRICES_LOGGER)

    book.resolve("gpt-4o")
    book.has_price("gpt-4o-2031-01-01")
    book.has_price("gpt-unknown")

    assert price_warnings(caplog) == []


def test_fine_tuned_uses_fine_tuned_rates() -> None:
    book = PriceBook.default()

    tuned = book.resolve("ft:gpt-4o-mini-2024-07-18:acme::abc123")
    base = book.resolve("gpt-4o-mini-2024-07-18")

    assert tuned.fine_tuned is True
    assert tuned.model_key == "gpt-4o-mini"
    assert tuned.price == book.fine_tuned["gpt-4o-mini"]
    assert tuned.price != base.price


def test_fine_tuned_prefers_exact_base() -> None:
    book = PriceBook(
        fine_tuned={
            "gpt-4o": {"input": "3.75", "output": "15"},
            "gpt-4o-2024-08-06": {"input": "4", "output": "16"},
        }
    )

    resolved = book.resolve("ft:gpt-4o-2024-08-06:acme:support:abc123")

    assert resolved.model_key == "gpt-4o-2024-08-06"
    assert resolved.via_family is False
    assert resolved.price.input == Decimal("4")


def test_fine_tuned_falls_back_to_family(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook(fine_tuned={"gpt-4o": {"input": "3.75", "output": "15"}})
    caplog.set_level(logging.WARNING, logger=PRICES_LOGGER)

    resolved = book.resolve("ft:gpt-4o-2024-08-06:acme::abc123")

    assert resolved.model_key == "gpt-4o"
    assert resolved.fine_tuned is True
    assert resolved.via_family is True
    assert len(price_warnings(caplog)) == 1


def test_fine_tuned_never_uses_base_rates() -> None:
    book = PriceBook({"gpt-4.1-2025-04-14": {"input": "2", "output": "8"}})
    model = "ft:gpt-4.1-2025-04-14:acme::abc123"

    with pytest.raises(UnknownModelError) as excinfo:
        book.resolve(model)

    assert excinfo.value.model == model
    assert "fine_tuned" in str(excinfo.value)
    assert book.has_price(model) is False


def test_fine_tuned_exact_name_override_wins() -> None:
    model = "ft:gpt-4o-2024-08-06:acme::abc123"
    book = PriceBook.default().with_prices({model: {"input": "9", "output": "9"}})

    resolved = book.resolve(model)

    assert resolved.model_key == model
    assert resolved.fine_tuned is False


def test_unknown_model_error_explains_fix() -> None:
    with pytest.raises(UnknownModelError) as excinfo:
        PriceBook.default().resolve("gpt-unknown")

    message = str(excinfo.value)
    assert "'gpt-unknown'" in message
    assert "with_prices" in message
    assert "price file" in message


def test_has_price_reports_resolution() -> None:
    book = PriceBook({"gpt-4o": {"input": "2.50", "output": "10"}})

    assert book.has_price("gpt-4o") is True
    assert book.has_price("gpt-4o-2024-08-06") is True
    assert book.has_price("gpt-unknown") is False


# Building books -----------------------------------------------------------


def test_with_prices_adds_and_replaces() -> None:
    book = PriceBook({"a": {"input": "1", "output": "1"}})

    changed = book.with_prices(
        {"a": {"input": "2", "output": "2"}, "b": {"input": "3", "output": "3"}}
    )

    assert changed.models["a"].input == Decimal("2")
    assert changed.models["b"].input == Decimal("3")
    assert book.models["a"].input == Decimal("1")
    assert "b" not in book.models


def test_with_prices_adds_fine_tuned() -> None:
    book = PriceBook().with_prices(
        {}, fine_tuned={"gpt-4.1": {"input": "3", "output": "12"}}
    )

    resolved = book.resolve("ft:gpt-4.1-2025-04-14:acme::abc")

    assert resolved.fine_tuned is True
    assert resolved.price.input == Decimal("3")


@pytest.mark.parametrize(
    ("factor", "expected_input"),
    [
        pytest.param("1.2", Decimal("3.00"), id="markup"),
        pytest.param(Decimal("0.9"), Decimal("2.25"), id="discount"),
        pytest.param(1, Decimal("2.50"), id="unchanged"),
    ],
)
def test_with_markup_scales_rates(
    factor: str | Decimal | int, expected_input: Decimal
) -> None:
    book = PriceBook(
        {"m": {"input": "2.50", "cached_input": "1.25", "output": "10"}},
        fine_tuned={"m": {"input": "5", "output": "20"}},
    )

    marked = book.with_markup(factor)

    multiplier = Fraction(Decimal(factor))
    assert marked.models["m"].input == expected_input
    assert marked.models["m"].cached_input == Fraction("1.25") * multiplier
    assert marked.models["m"].output == Fraction("10") * multiplier
    assert marked.fine_tuned["m"].input == Fraction("5") * multiplier


def test_with_markup_keeps_none_cached_rate() -> None:
    marked = book_with(input="1").with_markup("1.5")

    assert marked.models["test-model"].cached_input is None


@pytest.mark.parametrize("factor", ["0", "-1.2", "NaN"])
def test_with_markup_rejects_invalid_factor(factor: str) -> None:
    with pytest.raises(ConfigurationError, match=repr(factor)) as excinfo:
        book_with(input="1").with_markup(factor)

    assert "> 0" in str(excinfo.value)


def test_with_adjustment_sees_fine_tuned_names() -> None:
    book = PriceBook(
        {"gpt-4o": {"input": "2.50", "output": "10"}},
        fine_tuned={"gpt-4o": {"input": "3.75", "output": "15"}},
    )
    seen: list[str] = []

    def raise_output(name: str, price: ModelPrice) -> ModelPrice:
        seen.append(name)
        if name.startswith("ft:"):
            return dataclasses.replace(price, output=Decimal("20"))
        return price

    adjusted = book.with_adjustment(raise_output)

    assert sorted(seen) == ["ft:gpt-4o", "gpt-4o"]
    assert adjusted.fine_tuned["gpt-4o"].output == Decimal("20")
    assert adjusted.models["gpt-4o"].output == Decimal("10")


def test_with_adjustment_requires_model_price() -> None:
    book = book_with(input="1")

    with pytest.raises(TypeError, match="'test-model'"):
        book.with_adjustment(lambda name, price: None)  # type: ignore[arg-type,return-value]


def test_book_tables_are_read_only() -> None:
    book = book_with(input="1")

    with pytest.raises(TypeError):
        book.models["other"] = ModelPrice(input="1", output="1")  # type: ignore[index]


def test_book_rejects_non_mapping_entry() -> None:
    with pytest.raises(ConfigurationError, match="'gpt-x'"):
        PriceBook({"gpt-x": "2.50"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param({"models": {}, "modles": {}}, "modles", id="unknown-field"),
        pytest.param({"currency": "USD"}, "models", id="missing-models"),
        pytest.param(
            {"models": {}, "unit": "per 1K tokens"}, "per 1K tokens", id="unit"
        ),
        pytest.param({"models": {}, "currency": ""}, "currency", id="empty-currency"),
        pytest.param({"models": []}, "models", id="models-not-mapping"),
    ],
)
def test_from_dict_rejects_bad_layout(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        PriceBook.from_dict(data)


def test_book_round_trips_through_file(tmp_path: Path) -> None:
    book = PriceBook(
        {"m": {"input": "2.50", "cached_input": "1.25", "output": "10"}},
        fine_tuned={"m": {"input": "5", "output": "20"}},
        currency="EUR",
        source="test rates",
        as_of="2031-01-01",
    )
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(book.to_dict()), encoding="utf-8")

    loaded = PriceBook.from_file(path)

    assert loaded.models == book.models
    assert loaded.fine_tuned == book.fine_tuned
    assert loaded.currency == "EUR"
    assert loaded.source == "test rates"
    assert loaded.as_of == "2031-01-01"


def test_from_file_reads_numbers_exactly(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        '{"models": {"m": {"input": 0.1, "output": 0.3}}}', encoding="utf-8"
    )

    book = PriceBook.from_file(path)

    assert book.models["m"].input == Decimal("0.1")
    assert book.models["m"].output == Decimal("0.3")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param('{"models": {"m": {"input": NaN, "output": "1"}}}', id="nan"),
        pytest.param(
            '{"models": {"m": {"input": ["1"], "output": "1"}}}', id="list-rate"
        ),
        pytest.param('{"models": null}', id="null-models"),
        pytest.param('{"models": ' + "[" * 100_000 + "]" * 100_000 + "}", id="nested"),
        pytest.param('{"models": {"m": {"input": "\xff"}}}', id="not-utf-8"),
    ],
)
def test_from_file_rejects_bad_content(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(text.encode("latin-1"))

    with pytest.raises(ConfigurationError, match=r"prices\.json"):
        PriceBook.from_file(path)


def test_from_file_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"absent\.json"):
        PriceBook.from_file(tmp_path / "absent.json")


# The shipped price file -----------------------------------------------------


def test_default_book_is_shared() -> None:
    assert PriceBook.default() is PriceBook.default()


def test_default_book_names_its_source() -> None:
    book = PriceBook.default()

    assert book.currency == "USD"
    assert "genai-prices" in book.source
    assert book.as_of is not None
    assert datetime.strptime(book.as_of, "%Y-%m-%d")


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-2024-05-13",
        "gpt-4o-2024-08-06",
        "gpt-4o-2024-11-20",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o1-mini",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5.1",
        "gpt-5.2",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-3.5-turbo-instruct",
        "gpt-4",
        "gpt-4-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "babbage-002",
        "davinci-002",
    ],
)
def test_default_book_lists_common_model(model: str) -> None:
    resolved = PriceBook.default().resolve(model)

    assert resolved.model_key == model
    assert resolved.price.input > 0


def test_default_book_embedding_output_is_free() -> None:
    price = PriceBook.default().resolve("text-embedding-3-small").price

    assert price.output == 0


@pytest.mark.parametrize("model", ["gpt-5.4", "gpt-5.5", "gpt-realtime", "whisper-1"])
def test_default_book_omits_unflat_models(model: str) -> None:
    assert PriceBook.default().has_price(model) is False


def test_default_book_matches_genai_prices() -> None:
    shipped = PriceBook.default()
    if f"genai-prices {genai_prices.__version__} " not in shipped.source:
        pytest.skip(
            f"installed genai-prices {genai_prices.__version__} is not the source"
        )
    assert shipped.as_of is not None

    moment = datetime.fromisoformat(shipped.as_of).replace(tzinfo=timezone.utc)
    converted = PriceBook.from_genai_prices(at=moment)

    for name, price in shipped.models.items():
        assert converted.models.get(name) == price, name
    for base, price in shipped.fine_tuned.items():
        assert converted.fine_tuned.get(base) == price, base
    assert shipped.source == converted.source


def test_price_file_ships_in_package() -> None:
    from importlib import resources

    data = resources.files("blnk_meter").joinpath("prices/openai.json")

    assert json.loads(data.read_text(encoding="utf-8"))["unit"] == "per 1M tokens"


# genai-prices adapter -------------------------------------------------------

AT = datetime(2026, 12, 4, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-2024-05-13",
        "gpt-4o-mini",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-3.5-turbo-0613",
        "text-embedding-3-small",
        "ft:gpt-4o-2024-08-06:acme::abc",
        "ft:gpt-4o-mini-2024-07-18:acme::abc",
        "ft:gpt-3.5-turbo-0125:acme::abc",
    ],
)
def test_genai_book_cost_matches_genai_prices(model: str) -> None:
    book = PriceBook.from_genai_prices(at=AT)
    usage = make_usage(model, input_tokens=123_457, cached=23_456, output_tokens=9_876)

    theirs = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=123_457, cache_read_tokens=23_456, output_tokens=9_876
        ),
        model,
        provider_id="openai",
        genai_request_timestamp=AT,
    )

    assert book.cost(usage) == theirs.total_price


def test_genai_book_uses_prices_at_date() -> None:
    before = PriceBook.from_genai_prices(at=datetime(2025, 6, 1, tzinfo=timezone.utc))
    after = PriceBook.from_genai_prices(at=datetime(2025, 6, 11, tzinfo=timezone.utc))

    assert before.models["o3"] != after.models["o3"]
    assert before.as_of == "2025-06-01"
    assert after.as_of == "2025-06-11"


def test_genai_book_treats_naive_time_as_utc() -> None:
    naive = PriceBook.from_genai_prices(at=datetime(2025, 6, 11, 23, 30))
    aware = PriceBook.from_genai_prices(
        at=datetime(2025, 6, 11, 23, 30, tzinfo=timezone.utc)
    )

    assert naive.models == aware.models
    assert naive.as_of == "2025-06-11"


def test_genai_book_leaves_out_tiered_models(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=PRICES_LOGGER)

    book = PriceBook.from_genai_prices(at=AT)

    records = price_warnings(caplog)
    assert len(records) == 1
    assert "gpt-5.4 (tiered by prompt size)" in records[0].getMessage()
    assert "whisper-1" in records[0].getMessage()
    assert book.has_price("gpt-5.4") is False
    assert book.has_price("whisper-1") is False


def test_genai_book_maps_fine_tuned_entries() -> None:
    book = PriceBook.from_genai_prices(at=AT)

    assert set(book.fine_tuned) >= {"gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo"}
    assert "ft:gpt-4o" not in book.models
    assert book.fine_tuned["gpt-4o"] != book.models["gpt-4o"]


def test_genai_book_includes_match_aliases() -> None:
    book = PriceBook.from_genai_prices(at=AT)

    assert book.models["gpt-4o-2024-08-06"] == book.models["gpt-4o"]
    assert book.models["gpt-4o-2024-05-13"] != book.models["gpt-4o"]


def test_genai_book_unknown_provider_raises() -> None:
    with pytest.raises(ConfigurationError, match="'no-such-provider'"):
        PriceBook.from_genai_prices(provider="no-such-provider")


def test_genai_book_rejects_non_datetime() -> None:
    with pytest.raises(TypeError, match="2025-06-11"):
        PriceBook.from_genai_prices(at="2025-06-11")  # type: ignore[arg-type]


def test_genai_book_without_package_explains_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)

    with pytest.raises(ConfigurationError) as excinfo:
        PriceBook.from_genai_prices()

    assert "genai-prices" in str(excinfo.value)
    assert "pip install 'blnk-meter[genai-prices]'" in str(excinfo.value)


def test_override_family_reprices_listed_snapshots() -> None:
    book = PriceBook.default().with_prices(
        {"gpt-4o-mini": {"input": "0.30", "cached_input": "0.15", "output": "1.20"}}
    )

    resolved = book.resolve("gpt-4o-mini-2024-07-18")

    assert resolved.price.input == Decimal("0.30")
    assert resolved.price.output == Decimal("1.20")
    assert resolved.via_family is False


def test_override_keeps_snapshot_listed_with_it() -> None:
    book = PriceBook.default().with_prices(
        {
            "gpt-4o": {"input": "1", "output": "2"},
            "gpt-4o-2024-05-13": {"input": "5", "output": "15"},
        }
    )

    assert book.resolve("gpt-4o-2024-08-06").price.input == Decimal("1")
    assert book.resolve("gpt-4o-2024-05-13").price.input == Decimal("5")
    assert PriceBook.default().resolve("gpt-4o-2024-08-06").price.input == Decimal(
        "2.5"
    )


def test_fine_tuned_override_reprices_snapshots() -> None:
    base = PriceBook(
        fine_tuned={
            "gpt-4o-mini": {"input": "0.3", "output": "1.2"},
            "gpt-4o-mini-2024-07-18": {"input": "0.3", "output": "1.2"},
        }
    )

    book = base.with_prices(
        {}, fine_tuned={"gpt-4o-mini": {"input": "1", "output": "1"}}
    )

    resolved = book.resolve("ft:gpt-4o-mini-2024-07-18:acme::abc")
    assert resolved.fine_tuned is True
    assert resolved.price.input == Decimal("1")


def test_price_file_rejects_repeated_model(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        '{"currency": "USD", "models": {'
        '"m": {"input": "1", "output": "1"}, "m": {"input": "2", "output": "2"}}}'
    )

    with pytest.raises(ConfigurationError, match="'m' appears twice"):
        PriceBook.from_file(path)


def test_override_keeps_snapshot_with_own_rate() -> None:
    book = PriceBook.default()
    same = book.with_prices({"gpt-4o": book.models["gpt-4o"].to_dict()})

    assert (
        same.resolve("gpt-4o-2024-05-13").price
        == book.resolve("gpt-4o-2024-05-13").price
    )
    assert same.resolve("gpt-4o-2024-08-06").price == book.resolve("gpt-4o").price


def test_chained_override_keeps_explicit_snapshot() -> None:
    book = (
        PriceBook.default()
        .with_prices({"gpt-4o-mini-2024-07-18": {"input": "9", "output": "9"}})
        .with_prices({"gpt-4o-mini": {"input": "1", "output": "1"}})
    )

    assert book.resolve("gpt-4o-mini-2024-07-18").price.input == Decimal("9")
    assert book.resolve("gpt-4o-mini").price.input == Decimal("1")
