"""Exact conversion between Decimal amounts and integer minor units.

Blnk stores an amount as an integer count of minor units together with a
precision, the number of minor units in one currency unit. Other modules of
blnk_meter call :func:`to_minor_units` instead of rounding Decimals themselves.
It rounds exactly once, half to even, and never converts through a float.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from types import MappingProxyType

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_PRECISIONS",
    "EXACT_CONTEXT",
    "Precisions",
    "format_amount",
    "from_minor_units",
    "to_minor_units",
    "validate_precision",
]

DEFAULT_PRECISIONS: Mapping[str, int] = MappingProxyType({"USD": 10**8, "TOKENS": 1})
"""Minor units per currency unit: USD to 10**-8 dollars, tokens as whole tokens."""

EXACT_CONTEXT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
"""A decimal context in which addition, multiplication and ``scaleb`` are exact.

Any operation that would round raises ``decimal.Inexact`` instead, so a
computation under this context either is exact or fails loudly. Scale by
powers of ten with ``scaleb`` rather than dividing: a quotient without a finite
decimal expansion, such as 1/3, raises ``MemoryError`` under this context.
"""

_ROUNDING_CONTEXT = EXACT_CONTEXT.copy()
_ROUNDING_CONTEXT.traps[Inexact] = False

_ONE = Decimal(1)


def validate_precision(precision: object, currency: str | None = None) -> int:
    """Check that a precision is a positive power of ten and return it.

    Args:
        precision: minor units per currency unit, e.g. ``100`` for cents or
            ``10**8`` for USD to eight decimal places; ``1`` means whole units.
        currency: the currency the precision belongs to, named in the error.

    Returns:
        The precision unchanged.

    Raises:
        ConfigurationError: the precision is not an int power of ten >= 1.
    """
    if (
        isinstance(precision, int)
        and not isinstance(precision, bool)
        and str(precision).rstrip("0") == "1"
    ):
        return precision

    subject = "precision" if currency is None else f"precision of {currency!r}"
    raise ConfigurationError(
        f"invalid {subject}: {precision!r}; use an int power of ten such as "
        "1, 100 or 10**8 (minor units per currency unit)"
    )


def _exponent(precision: int) -> int:
    return len(str(precision)) - 1


def to_minor_units(amount: Decimal | int, precision: int) -> int:
    """Convert an amount to integer minor units, rounding half to even once.

    The amount is scaled exactly and rounded a single time at the precision,
    so 0.005 USD at precision 100 becomes 0 and 0.015 USD becomes 2.

    Args:
        amount: a non-negative, finite amount in currency units.
        precision: minor units per currency unit, a positive power of ten.

    Returns:
        The amount in minor units.

    Raises:
        TypeError: the amount is a float, a bool or not a number at all.
        ConfigurationError: the amount is negative, NaN or infinite, or the
            precision is not a positive power of ten.
    """
    exponent = _exponent(validate_precision(precision))
    value = _check_amount(amount)

    scaled = value.scaleb(exponent, context=EXACT_CONTEXT)
    minor = scaled.quantize(_ONE, rounding=ROUND_HALF_EVEN, context=_ROUNDING_CONTEXT)
    return int(minor)


def _check_amount(amount: object) -> Decimal:
    if isinstance(amount, float):
        raise TypeError(
            f"amount {amount!r} is a float, which cannot hold money exactly; "
            "pass a Decimal built from a string, e.g. Decimal('0.15')"
        )
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
        raise TypeError(f"amount must be a Decimal or an int, not {amount!r}")

    value = Decimal(amount)
    if not value.is_finite():
        raise ConfigurationError(f"amount {amount!r} is not a finite number")
    if value < 0:
        raise ConfigurationError(
            f"amount {amount!r} is negative; postings carry non-negative "
            "amounts and the direction comes from source and destination"
        )
    return value


def from_minor_units(minor: int, precision: int) -> Decimal:
    """Convert integer minor units back to an exact Decimal amount.

    Args:
        minor: the amount in minor units.
        precision: minor units per currency unit, a positive power of ten.

    Returns:
        The amount in currency units, e.g. ``Decimal('0.18518505')``.

    Raises:
        TypeError: ``minor`` is not an int.
        ConfigurationError: the precision is not a positive power of ten.
    """
    exponent = _exponent(validate_precision(precision))
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be an int, not {minor!r}")
    return Decimal(minor).scaleb(-exponent, context=EXACT_CONTEXT)


def format_amount(minor: int, precision: int, currency: str) -> str:
    """Format minor units for people to read, with every decimal place kept.

    Args:
        minor: the amount in minor units.
        precision: minor units per currency unit, a positive power of ten.
        currency: the currency code written after the number.

    Returns:
        Text such as ``"0.18518505 USD"`` or ``"1500 TOKENS"``.

    Raises:
        TypeError: ``minor`` is not an int.
        ConfigurationError: the precision is not a positive power of ten.
    """
    exponent = _exponent(validate_precision(precision))
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be an int, not {minor!r}")

    sign = "-" if minor < 0 else ""
    units, fraction = divmod(abs(minor), precision)
    if exponent == 0:
        return f"{sign}{units} {currency}"
    return f"{sign}{units}.{fraction:0{exponent}d} {currency}"


class Precisions(Mapping[str, int]):
    """An immutable table of precisions by currency code.

    It starts from :data:`DEFAULT_PRECISIONS` and applies the overrides on
    top. Blnk balances carry no precision of their own, so every posting in one
    currency must use the same precision. If a currency's precision changes
    after postings exist, the stored integers mean different amounts.

    Args:
        overrides: precisions to add or replace, e.g. ``{"EUR": 100}``.

    Raises:
        ConfigurationError: a currency code is empty or not a string, or a
            precision is not a positive power of ten.
    """

    __slots__ = ("_table",)

    def __init__(self, overrides: Mapping[str, int] | None = None) -> None:
        table = dict(DEFAULT_PRECISIONS)
        for currency, precision in (overrides or {}).items():
            if not isinstance(currency, str) or not currency.strip():
                raise ConfigurationError(
                    f"invalid currency code {currency!r}; use a non-empty string"
                )
            table[currency] = validate_precision(precision, currency)
        self._table: Mapping[str, int] = MappingProxyType(table)

    def __getitem__(self, currency: str) -> int:
        return self._table[currency]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Precisions({dict(self._table)!r})"

    def precision_of(self, currency: str) -> int:
        """Return the precision of a currency.

        Raises:
            ConfigurationError: the table has no precision for the currency.
        """
        try:
            return self._table[currency]
        except KeyError:
            raise ConfigurationError(
                f"no precision configured for currency {currency!r}; add it, "
                f"e.g. Precisions({{{currency!r}: 100}})"
            ) from None
