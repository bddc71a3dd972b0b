from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from blnk_meter._money import (
    DEFAULT_PRECISIONS,
    Precisions,
    format_amount,
    from_minor_units,
    to_minor_units,
    validate_precision,
)
from blnk_meter.errors import ConfigurationError


def round_half_even(value: Fraction) -> int:
    """Round a fraction to an integer, half to even, by hand."""
    floor = value.numerator // value.denominator
    remainder = value - floor
    if remainder > Fraction(1, 2):
        return floor + 1
    if remainder == Fraction(1, 2):
        return floor + floor % 2
    return floor


def test_to_minor_units_worked_example() -> None:
    assert to_minor_units(Decimal("0.18518505"), 10**8) == 18518505


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        pytest.param("0.005", 0, id="half-to-even-zero"),
        pytest.param("0.015", 2, id="half-up-to-two"),
        pytest.param("0.025", 2, id="half-down-to-two"),
        pytest.param("0.035", 4, id="half-up-to-four"),
        pytest.param("0.0050000000001", 1, id="just-above-half"),
        pytest.param("0.0049999999999", 0, id="just-below-half"),
        pytest.param("0", 0, id="zero"),
        pytest.param("-0", 0, id="negative-zero"),
        pytest.param("12.34", 1234, id="already-exact"),
    ],
)
def test_to_minor_units_rounds_half_even(amount: str, expected: int) -> None:
    assert to_minor_units(Decimal(amount), 100) == expected


def test_to_minor_units_rounds_only_once() -> None:
    # Rounding to 3 places first would give 0.015 and then 2 cents.
    assert to_minor_units(Decimal("0.01451"), 100) == 1


def test_to_minor_units_keeps_every_digit() -> None:
    # 48 significant digits: the default 28-digit context would round early.
    amount = Decimal("1234567890123456789012345678.50000000000000000001")

    minor = to_minor_units(amount, 1)

    assert minor == round_half_even(Fraction(amount))
    assert minor == 1234567890123456789012345679


def test_to_minor_units_matches_fraction_rounding() -> None:
    generator = random.Random(20240806)
    for _ in range(500):
        digits = generator.randint(0, 14)
        amount = Decimal(generator.randint(0, 10**16)).scaleb(-digits)
        precision = 10 ** generator.randint(0, 10)

        expected = round_half_even(Fraction(amount) * precision)

        assert to_minor_units(amount, precision) == expected, (amount, precision)


def test_to_minor_units_accepts_int() -> None:
    assert to_minor_units(3, 100) == 300


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(0.15, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("0.15", id="string"),
        pytest.param(None, id="none"),
        pytest.param(Fraction(1, 3), id="fraction"),
    ],
)
def test_to_minor_units_rejects_non_decimal(amount: object) -> None:
    with pytest.raises(TypeError) as excinfo:
        to_minor_units(amount, 100)  # type: ignore[arg-type]

    assert repr(amount) in str(excinfo.value)


def test_to_minor_units_float_error_suggests_decimal() -> None:
    with pytest.raises(TypeError, match=r"Decimal\('0\.15'\)"):
        to_minor_units(0.15, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(Decimal("NaN"), id="nan"),
        pytest.param(Decimal("sNaN"), id="signalling-nan"),
        pytest.param(Decimal("Infinity"), id="infinity"),
        pytest.param(Decimal("-Infinity"), id="negative-infinity"),
        pytest.param(Decimal("-0.01"), id="negative"),
        pytest.param(-1, id="negative-int"),
    ],
)
def test_to_minor_units_rejects_invalid_amount(amount: Decimal | int) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        to_minor_units(amount, 100)

    assert repr(amount) in str(excinfo.value)


@pytest.mark.parametrize("precision", [1, 10, 100, 10**8, 10**18])
def test_validate_precision_accepts_powers_of_ten(precision: int) -> None:
    assert validate_precision(precision) == precision


@pytest.mark.parametrize(
    "precision",
    [
        pytest.param(0, id="zero"),
        pytest.param(-100, id="negative"),
        pytest.param(20, id="not-power-of-ten"),
        pytest.param(1001, id="ends-in-one"),
        pytest.param(100.0, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("100", id="string"),
        pytest.param(None, id="none"),
    ],
)
def test_validate_precision_rejects_invalid(precision: object) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        validate_precision(precision, "USD")

    assert repr(precision) in str(excinfo.value)
    assert "'USD'" in str(excinfo.value)


def test_to_minor_units_rejects_invalid_precision() -> None:
    with pytest.raises(ConfigurationError, match="1000001"):
        to_minor_units(Decimal("1"), 1000001)


@pytest.mark.parametrize(
    ("minor", "precision", "currency", "expected"),
    [
        pytest.param(18518505, 10**8, "USD", "0.18518505 USD", id="usd"),
        pytest.param(0, 10**8, "USD", "0.00000000 USD", id="zero"),
        pytest.param(100, 100, "USD", "1.00 USD", id="whole-dollar"),
        pytest.param(-5, 100, "USD", "-0.05 USD", id="negative"),
        pytest.param(1500, 1, "TOKENS", "1500 TOKENS", id="tokens"),
    ],
)
def test_format_amount_writes_every_place(
    minor: int, precision: int, currency: str, expected: str
) -> None:
    assert format_amount(minor, precision, currency) == expected


def test_format_amount_round_trips_exactly() -> None:
    minor = 123456789012345678901234567890123

    text = format_amount(minor, 10**8, "USD")
    amount = Decimal(text.split()[0])

    assert amount == from_minor_units(minor, 10**8)
    assert to_minor_units(amount, 10**8) == minor


@pytest.mark.parametrize("minor", [1.5, True, "100", Decimal("1")])
def test_format_amount_rejects_non_int(minor: object) -> None:
    with pytest.raises(TypeError):
        format_amount(minor, 100, "USD")  # type: ignore[arg-type]


def test_from_minor_units_inverts_conversion() -> None:
    assert from_minor_units(18518505, 10**8) == Decimal("0.18518505")


def test_default_precisions_cannot_change() -> None:
    with pytest.raises(TypeError):
        DEFAULT_PRECISIONS["USD"] = 100  # type: ignore[index]

    assert DEFAULT_PRECISIONS == {"USD": 10**8, "TOKENS": 1}


def test_precisions_start_from_defaults() -> None:
    precisions = Precisions()

    assert dict(precisions) == dict(DEFAULT_PRECISIONS)


def test_precisions_apply_overrides() -> None:
    precisions = Precisions({"EUR": 100, "USD": 10**6})

    assert precisions["EUR"] == 100
    assert precisions["USD"] == 10**6
    assert precisions["TOKENS"] == 1


def test_precisions_copy_overrides() -> None:
    overrides = {"EUR": 100}
    precisions = Precisions(overrides)

    overrides["EUR"] = 1000

    assert precisions["EUR"] == 100


def test_precisions_cannot_change() -> None:
    precisions = Precisions()

    with pytest.raises(TypeError):
        precisions["USD"] = 100  # type: ignore[index]


def test_precisions_reject_invalid_precision() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        Precisions({"EUR": 250})

    assert "'EUR'" in str(excinfo.value)
    assert "250" in str(excinfo.value)


@pytest.mark.parametrize("currency", ["", "  ", 7])
def test_precisions_reject_invalid_currency(currency: object) -> None:
    with pytest.raises(ConfigurationError):
        Precisions({currency: 100})  # type: ignore[dict-item]


def test_precision_of_unknown_currency_raises() -> None:
    with pytest.raises(ConfigurationError, match="'GBP'"):
        Precisions().precision_of("GBP")
