"""Token prices per model and the exact charge for one usage event.

A :class:`PriceBook` maps model names to Decimal rates per 1,000,000 tokens,
resolves the names OpenAI serves (dated snapshots, fine-tuned models) to those
rates, and prices a :class:`~blnk_meter.Usage` exactly. A model it cannot price
raises :class:`~blnk_meter.errors.UnknownModelError`; it never returns zero.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation, localcontext
from importlib import resources
from os import PathLike
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from ._money import EXACT_CONTEXT, to_minor_units, validate_precision
from .errors import ConfigurationError, UnknownModelError

if TYPE_CHECKING:
    from datetime import datetime

    from ._usage import Usage

__all__ = ["Charge", "ModelPrice", "PriceBook", "ResolvedPrice"]

logger = logging.getLogger("blnk_meter.prices")

Rate: TypeAlias = Decimal | str | int
"""A rate as callers may pass it: a Decimal, a decimal string or an int."""

PRICE_UNIT = "per 1M tokens"
_RATE_EXPONENT = 6  # rates are per 10**6 tokens
_PRICE_FIELDS = frozenset({"input", "cached_input", "output"})
_FILE_FIELDS = frozenset(
    {"currency", "unit", "source", "as_of", "models", "fine_tuned"}
)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

_DECIMAL_TEXT = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
"""A plain decimal number. Python's ``Decimal`` also reads ``1_5`` as 15."""

_MAX_RATE_DIGITS = 40
"""Significant digits a rate may have. A Decimal built from an inexact float
has more: ``Decimal(0.15)`` has 55, and every two-decimal price below 100
that a float cannot hold exactly has at least 45."""

_RATE_MAGNITUDES = (-18, 9)
"""The powers of ten a nonzero rate must lie between, per 1M tokens."""

# A dated snapshot ends in -YYYY-MM-DD (gpt-4o-2024-08-06) or in the older
# -MMDD form (gpt-4-0613, gpt-3.5-turbo-1106).
_SNAPSHOT_SUFFIX = re.compile(
    r"^(?P<family>.+?)-(?:"
    r"(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r")$"
)


def _parse_rate(value: object, name: str, *, positive: bool = False) -> Decimal:
    if isinstance(value, float):
        raise TypeError(
            f"{name} {value!r} is a float, which cannot hold a price exactly; "
            f"pass a string or a Decimal, e.g. '{value}'"
        )
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int)):
        raise TypeError(
            f"{name} must be a string or a Decimal such as '2.50', not {value!r}"
        )
    bound = "> 0" if positive else ">= 0"
    invalid = (
        f"invalid {name} {value!r}; write a finite decimal number {bound}, "
        "such as '1.25'"
    )
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise ConfigurationError(invalid)

    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise ConfigurationError(invalid) from None
    if not rate.is_finite() or rate < 0 or (positive and rate == 0):
        raise ConfigurationError(invalid)
    if rate == 0:
        return rate.copy_abs()  # "-0" is zero, written without its sign
    _check_rate_size(rate, name)
    return rate


def _check_rate_size(rate: Decimal, name: str) -> None:
    # Counted without normalize(), which would round to the context's precision.
    digits = len("".join(map(str, rate.as_tuple().digits)).strip("0"))
    if digits > _MAX_RATE_DIGITS:
        raise ConfigurationError(
            f"invalid {name}: it has {digits} significant digits, more than "
            f"{_MAX_RATE_DIGITS}; a Decimal built from a float carries its "
            "binary error, so pass a string such as '0.15'"
        )
    low, high = _RATE_MAGNITUDES
    if not low <= rate.adjusted() <= high:
        raise ConfigurationError(
            f"invalid {name} {rate:.3E}; a rate per 1M tokens must lie between "
            f"1E{low} and 1E{high + 1}"
        )


@dataclass(frozen=True, init=False)
class ModelPrice:
    """Rates of one model per 1,000,000 tokens, in the price book's currency.

    Rates are exact: pass them as strings or Decimals, never floats.

    Attributes:
        input: rate for input tokens not read from the prompt cache.
        cached_input: rate for input tokens read from the prompt cache;
            ``None`` means they cost the input rate.
        output: rate for output tokens, reasoning tokens included.
    """

    input: Decimal
    cached_input: Decimal | None
    output: Decimal

    def __init__(
        self,
        *,
        input: Rate,
        output: Rate,
        cached_input: Rate | None = None,
    ) -> None:
        """Validate and store the rates.

        Raises:
            TypeError: a rate is a float, a bool or not a number.
            ConfigurationError: a rate is negative, NaN, infinite or not a
                decimal number.
        """
        cached = (
            None
            if cached_input is None
            else _parse_rate(cached_input, "cached_input rate")
        )
        object.__setattr__(self, "input", _parse_rate(input, "input rate"))
        object.__setattr__(self, "cached_input", cached)
        object.__setattr__(self, "output", _parse_rate(output, "output rate"))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, model: str = "") -> ModelPrice:
        """Build a price from ``{"input": ..., "cached_input": ..., "output": ...}``.

        Args:
            data: the rates; ``cached_input`` may be missing or ``None``.
            model: the model the rates belong to, named in errors.

        Raises:
            TypeError: a rate is a float or not a number.
            ConfigurationError: a field is missing or unknown, or a rate is
                invalid.
        """
        subject = f"price of model {model!r}" if model else "price"
        unknown = set(data) - _PRICE_FIELDS
        if unknown:
            raise ConfigurationError(
                f"{subject} has unknown fields {sorted(unknown)!r}; "
                "use 'input', 'cached_input' and 'output'"
            )
        missing = {"input", "output"} - set(data)
        if missing:
            raise ConfigurationError(
                f"{subject} is missing {sorted(missing)!r}; give 'input' and "
                "'output' rates per 1M tokens (write '0' for a free part)"
            )

        try:
            return cls(
                input=data["input"],
                output=data["output"],
                cached_input=data.get("cached_input"),
            )
        except (TypeError, ConfigurationError) as exc:
            raise type(exc)(f"{subject}: {exc}") from exc

    def to_dict(self) -> dict[str, str | None]:
        """Return the rates as strings, in the price file's layout."""
        cached = None if self.cached_input is None else str(self.cached_input)
        return {
            "input": str(self.input),
            "cached_input": cached,
            "output": str(self.output),
        }

    def _scaled(self, factor: Decimal) -> ModelPrice:
        with localcontext(EXACT_CONTEXT):
            cached = None if self.cached_input is None else self.cached_input * factor
            return ModelPrice(
                input=self.input * factor,
                cached_input=cached,
                output=self.output * factor,
            )


PriceEntry: TypeAlias = ModelPrice | Mapping[str, Any]
"""A model's prices: a ModelPrice or a mapping such as ``{"input": "2.50", ...}``."""


@dataclass(frozen=True)
class ResolvedPrice:
    """The rates a price book chose for a model name, and how it chose them.

    Attributes:
        model_key: the key of the rates used, in the model table, or in the
            fine-tuned table when ``fine_tuned`` is true.
        price: the rates.
        fine_tuned: whether the name is a fine-tuned model priced from the
            fine-tuned table.
        via_family: whether the name itself is not listed and the rates are
            those of its family, the name without its date suffix.
    """

    model_key: str
    price: ModelPrice
    fine_tuned: bool = False
    via_family: bool = False


@dataclass(frozen=True)
class Charge:
    """The price of one usage event, exact and in integer minor units.

    Attributes:
        amount: the cost in minor units, rounded once, half to even.
        precision: minor units per currency unit used for ``amount``.
        currency: the price book's currency, e.g. ``"USD"``.
        cost: the exact, unrounded cost in currency units.
        model_key: the key of the rates used (see :class:`ResolvedPrice`).
        price: the rates used.
        fine_tuned: whether fine-tuned rates were used.
        via_family: whether the rates are those of the model's family.
    """

    amount: int
    precision: int
    currency: str
    cost: Decimal
    model_key: str
    price: ModelPrice
    fine_tuned: bool
    via_family: bool


def _cost_of(usage: Usage, price: ModelPrice) -> Decimal:
    # Reasoning tokens are part of output_tokens, so they are priced once.
    cached_rate = price.input if price.cached_input is None else price.cached_input
    with localcontext(EXACT_CONTEXT):
        total = (
            usage.uncached_input_tokens * price.input
            + usage.cached_input_tokens * cached_rate
            + usage.output_tokens * price.output
        )
        return total.scaleb(-_RATE_EXPONENT)


def _fine_tuned_base(model: str) -> str | None:
    # Fine-tuned names read ft:<base>:<org>:<suffix>:<id>.
    if not model.startswith("ft:"):
        return None
    base = model.split(":")[1]
    return base or None


def _is_iso_date(value: object) -> bool:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _snapshot_family(model: str) -> str | None:
    match = _SNAPSHOT_SUFFIX.match(model)
    return match.group("family") if match else None


def _overlay(
    table: Mapping[str, ModelPrice], overrides: Mapping[str, ModelPrice]
) -> dict[str, ModelPrice]:
    """Apply overrides, repricing snapshots that share their family's rates.

    A snapshot listed at rates of its own (``gpt-4o-2024-05-13`` costs more
    than ``gpt-4o``) keeps them; a snapshot listed at its family's rates
    follows the family's new rates.
    """
    merged = dict(table)
    for name, price in table.items():
        family = _snapshot_family(name)
        if family is None or family not in overrides or name in overrides:
            continue
        if price == table.get(family):
            merged[name] = overrides[family]
    merged.update(overrides)
    return merged


def _price_table(
    entries: Mapping[str, PriceEntry] | None, table: str
) -> dict[str, ModelPrice]:
    if entries is None:
        return {}
    if not isinstance(entries, Mapping):
        raise ConfigurationError(
            f"{table} must map model names to prices, not {type(entries).__name__}"
        )

    prices: dict[str, ModelPrice] = {}
    for model, entry in entries.items():
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(
                f"invalid model name {model!r} in {table}; use a non-empty string"
            )
        if isinstance(entry, ModelPrice):
            prices[model] = entry
        elif isinstance(entry, Mapping):
            prices[model] = ModelPrice.from_mapping(entry, model=model)
        else:
            raise ConfigurationError(
                f"price of model {model!r} in {table} must be a ModelPrice or a "
                f"mapping such as {{'input': '2.50', 'output': '10'}}, not {entry!r}"
            )
    return prices


class PriceBook:
    """Immutable token rates per model, and the rules that resolve model names.

    Resolution order for a model name:

    1. the name itself in the model table;
    2. a fine-tuned name ``ft:<base>:<org>:<suffix>:<id>`` uses the fine-tuned
       table, first ``<base>`` and then ``<base>`` without its date suffix. It
       never uses the base model's ordinary rates;
    3. a dated snapshot (``gpt-4o-2024-08-06``, ``gpt-4-0613``) that is not
       listed uses its family, the name without the date, and logs a warning
       once per name on the ``blnk_meter.prices`` logger;
    4. anything else raises :class:`UnknownModelError`.

    Args:
        models: rates by model name, each a :class:`ModelPrice` or a mapping
            such as ``{"input": "2.50", "cached_input": "1.25", "output": "10"}``.
        fine_tuned: rates for fine-tuned models, keyed by base model name.
        currency: the currency of every rate, e.g. ``"USD"``.
        source: where the rates come from, for people reading charges.
        as_of: the date the rates were taken, as ``YYYY-MM-DD``.

    Raises:
        TypeError: a rate is a float or not a number.
        ConfigurationError: a name, rate, currency or description is invalid.
    """

    __slots__ = (
        "_as_of",
        "_currency",
        "_fine_tuned",
        "_models",
        "_source",
        "_warned",
        "_warned_lock",
    )

    def __init__(
        self,
        models: Mapping[str, PriceEntry] | None = None,
        *,
        fine_tuned: Mapping[str, PriceEntry] | None = None,
        currency: str = "USD",
        source: str = "custom prices",
        as_of: str | None = None,
    ) -> None:
        if not isinstance(currency, str) or not currency.strip():
            raise ConfigurationError(
                f"invalid currency {currency!r}; use a code such as 'USD'"
            )
        if not isinstance(source, str):
            raise ConfigurationError(f"source must be a string, not {source!r}")
        if as_of is not None and not _is_iso_date(as_of):
            raise ConfigurationError(
                f"invalid as_of {as_of!r}; use a 'YYYY-MM-DD' date or None"
            )

        self._models = MappingProxyType(_price_table(models, "models"))
        self._fine_tuned = MappingProxyType(_price_table(fine_tuned, "fine_tuned"))
        self._currency = currency
        self._source = source
        self._as_of = as_of
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    @property
    def currency(self) -> str:
        """The currency of every rate in the book."""
        return self._currency

    @property
    def source(self) -> str:
        """Where the rates come from."""
        return self._source

    @property
    def as_of(self) -> str | None:
        """The date the rates were taken, as ``YYYY-MM-DD``, when known."""
        return self._as_of

    @property
    def models(self) -> Mapping[str, ModelPrice]:
        """Rates by model name, read-only."""
        return self._models

    @property
    def fine_tuned(self) -> Mapping[str, ModelPrice]:
        """Rates for fine-tuned models by base model name, read-only."""
        return self._fine_tuned

    def __repr__(self) -> str:
        return (
            f"PriceBook(currency={self._currency!r}, source={self._source!r}, "
            f"as_of={self._as_of!r}, models={len(self._models)}, "
            f"fine_tuned={len(self._fine_tuned)})"
        )

    @classmethod
    def default(cls) -> PriceBook:
        """Return the OpenAI price book shipped with blnk_meter.

        The book is loaded once and shared, which is safe because it is
        immutable. Its ``source`` and ``as_of`` name where and when the rates
        were taken.
        """
        return _default_book()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriceBook:
        """Build a book from the price file layout.

        The layout is ``{"currency": "USD", "unit": "per 1M tokens",
        "source": ..., "as_of": "YYYY-MM-DD", "models": {name: {"input": ...,
        "cached_input": ... or None, "output": ...}}, "fine_tuned": {base:
        {...}}}``. Only ``models`` is required. Write rates as strings,
        because floats are rejected.

        Raises:
            TypeError: a rate is a float or not a number.
            ConfigurationError: the layout or a value is invalid.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                f"price data must be a mapping, not {type(data).__name__}"
            )
        unknown = set(data) - _FILE_FIELDS
        if unknown:
            raise ConfigurationError(
                f"price data has unknown fields {sorted(unknown)!r}; expected "
                f"some of {sorted(_FILE_FIELDS)!r}"
            )
        if data.get("models") is None:
            raise ConfigurationError(
                "price data has no 'models' table; add one such as "
                '{"gpt-4o-mini": {"input": "0.15", "output": "0.60"}}'
            )
        unit = data.get("unit", PRICE_UNIT)
        if unit != PRICE_UNIT:
            raise ConfigurationError(
                f"unsupported price unit {unit!r}; rates must be {PRICE_UNIT!r}"
            )

        return cls(
            data["models"],
            fine_tuned=data.get("fine_tuned"),
            currency=data.get("currency", "USD"),
            source=data.get("source", "custom prices"),
            as_of=data.get("as_of"),
        )

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> PriceBook:
        """Load a book from a JSON price file in the :meth:`from_dict` layout.

        JSON numbers are read as exact Decimals, but strings are the
        recommended way to write rates.

        Raises:
            ConfigurationError: the file cannot be read, is not JSON, or its
                layout or a value is invalid.
        """
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read price file {str(path)!r}: {exc.strerror}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"price file {str(path)!r} is not UTF-8 text (byte {exc.start}); "
                "save it as UTF-8 JSON"
            ) from None

        try:
            return cls.from_dict(_parse_price_json(text))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"price file {str(path)!r}: {exc}") from exc
        except RecursionError:
            raise ConfigurationError(
                f"price file {str(path)!r} is nested too deeply to be a price file"
            ) from None

    @classmethod
    def from_genai_prices(
        cls, *, provider: str = "openai", at: datetime | None = None
    ) -> PriceBook:
        """Build a book from the price data of the ``genai-prices`` package.

        Only flat per-token prices are taken. Models whose prices depend on
        the prompt size, the time of day or on units other than text tokens
        are left out and listed in one warning.

        Args:
            provider: the genai-prices provider id, e.g. ``"openai"``.
            at: the moment whose prices apply when genai-prices records a
                price change; ``None`` means now. Naive datetimes are UTC.

        Raises:
            ConfigurationError: genai-prices is not installed, or it has no
                such provider.
            TypeError: ``at`` is not a datetime.
        """
        from ._genai_prices import price_book_from_genai_prices

        return price_book_from_genai_prices(provider=provider, at=at)

    def to_dict(self) -> dict[str, Any]:
        """Return the book in the price file layout, rates as strings."""
        return {
            "currency": self._currency,
            "unit": PRICE_UNIT,
            "source": self._source,
            "as_of": self._as_of,
            "models": {name: p.to_dict() for name, p in self._models.items()},
            "fine_tuned": {name: p.to_dict() for name, p in self._fine_tuned.items()},
        }

    def _derive(
        self, models: Mapping[str, ModelPrice], fine_tuned: Mapping[str, ModelPrice]
    ) -> PriceBook:
        return PriceBook(
            models,
            fine_tuned=fine_tuned,
            currency=self._currency,
            source=self._source,
            as_of=self._as_of,
        )

    def with_prices(
        self,
        overrides: Mapping[str, PriceEntry],
        *,
        fine_tuned: Mapping[str, PriceEntry] | None = None,
    ) -> PriceBook:
        """Return a new book with models added or replaced.

        Overriding a family name also reprices the dated snapshots of that
        family that this book lists at the family's rates, because the
        provider reports the snapshot it served (``gpt-4o-mini-2024-07-18``),
        not the alias. Snapshots listed at rates of their own keep them; to
        change one, list it in ``overrides`` too.
        The new book keeps this book's currency, ``source`` and ``as_of``.

        Args:
            overrides: rates by model name, in the book's currency, e.g.
                ``{"my-model": {"input": "1.00", "output": "4.00"}}``.
            fine_tuned: rates for fine-tuned models by base model name.

        Raises:
            TypeError: a rate is a float or not a number.
            ConfigurationError: a name or rate is invalid.
        """
        models = _overlay(self._models, _price_table(overrides, "overrides"))
        tuned = _overlay(self._fine_tuned, _price_table(fine_tuned, "fine_tuned"))
        return self._derive(models, tuned)

    def with_markup(self, factor: Rate) -> PriceBook:
        """Return a new book with every rate multiplied by ``factor``, exactly.

        Args:
            factor: a positive multiplier as a string or Decimal: ``"1.2"``
                adds 20 %, ``"0.9"`` gives a 10 % discount.

        Raises:
            TypeError: the factor is a float or not a number.
            ConfigurationError: the factor is not a finite number > 0.
        """
        multiplier = _parse_rate(factor, "markup factor", positive=True)
        return self.with_adjustment(lambda _, price: price._scaled(multiplier))

    def with_adjustment(
        self, adjust: Callable[[str, ModelPrice], ModelPrice]
    ) -> PriceBook:
        """Return a new book with every price replaced by ``adjust(name, price)``.

        ``adjust`` is called with each model name, and with ``"ft:<base>"`` for
        each entry of the fine-tuned table, so one rule can tell them apart.

        Raises:
            TypeError: ``adjust`` returned something other than a ModelPrice.
        """
        models = {name: _adjusted(adjust, name, p) for name, p in self._models.items()}
        tuned = {
            base: _adjusted(adjust, f"ft:{base}", p)
            for base, p in self._fine_tuned.items()
        }
        return self._derive(models, tuned)

    def has_price(self, model: str) -> bool:
        """Return whether :meth:`resolve` finds rates for ``model``, without logging."""
        return self._lookup(model) is not None

    def resolve(self, model: str) -> ResolvedPrice:
        """Find the rates for a model name (see the class docstring for the order).

        Raises:
            UnknownModelError: no rates apply to the name.
        """
        resolved = self._lookup(model)
        if resolved is None:
            raise self._unknown_model(model)
        if resolved.via_family:
            self._warn_family_once(model, resolved)
        return resolved

    def cost(self, usage: Usage) -> Decimal:
        """Return the exact, unrounded cost of a usage event in the book's currency.

        The cost is ``(uncached input * input rate + cached input * cached
        rate + output * output rate) / 1,000,000``. Cached tokens are not
        priced again at the input rate, and reasoning tokens are already part
        of the output tokens.

        Raises:
            UnknownModelError: no rates apply to ``usage.model``.
        """
        return _cost_of(usage, self.resolve(usage.model).price)

    def charge(self, usage: Usage, precision: int) -> Charge:
        """Price a usage event in integer minor units.

        Args:
            usage: the tokens of one provider response.
            precision: minor units per currency unit, e.g. ``10**8``; use the
                same precision for every posting in the book's currency.

        Returns:
            The charge, its amount rounded once, half to even.

        Raises:
            UnknownModelError: no rates apply to ``usage.model``.
            ConfigurationError: the precision is not a positive power of ten.
        """
        validate_precision(precision, self._currency)
        resolved = self.resolve(usage.model)
        cost = _cost_of(usage, resolved.price)
        return Charge(
            amount=to_minor_units(cost, precision),
            precision=precision,
            currency=self._currency,
            cost=cost,
            model_key=resolved.model_key,
            price=resolved.price,
            fine_tuned=resolved.fine_tuned,
            via_family=resolved.via_family,
        )

    def _lookup(self, model: str) -> ResolvedPrice | None:
        if not isinstance(model, str):
            raise TypeError(f"model must be a string, not {model!r}")

        price = self._models.get(model)
        if price is not None:
            return ResolvedPrice(model, price)

        base = _fine_tuned_base(model)
        if base is not None:
            return self._lookup_fine_tuned(base)

        family = _snapshot_family(model)
        if family is not None and family in self._models:
            return ResolvedPrice(family, self._models[family], via_family=True)
        return None

    def _lookup_fine_tuned(self, base: str) -> ResolvedPrice | None:
        price = self._fine_tuned.get(base)
        if price is not None:
            return ResolvedPrice(base, price, fine_tuned=True)

        family = _snapshot_family(base)
        if family is not None and family in self._fine_tuned:
            price = self._fine_tuned[family]
            return ResolvedPrice(family, price, fine_tuned=True, via_family=True)
        return None

    def _warn_family_once(self, model: str, resolved: ResolvedPrice) -> None:
        with self._warned_lock:
            if model in self._warned:
                return
            self._warned.add(model)

        if resolved.fine_tuned:
            logger.warning(
                "fine-tuned model %r has no rates for its base model; pricing it "
                "at the fine-tuned rates of %r, the base name without its date. "
                "Add fine-tuned rates for the base model if they differ",
                model,
                resolved.model_key,
            )
            return
        logger.warning(
            "model %r has no price of its own; pricing it at the rates of %r, "
            "its name without the date suffix. Add %r to the price book if "
            "its rates differ",
            model,
            resolved.model_key,
            model,
        )

    def _unknown_model(self, model: str) -> UnknownModelError:
        base = _fine_tuned_base(model)
        if base is not None:
            return UnknownModelError(
                f"no fine-tuned price for model {model!r} (base model {base!r}) "
                f"in the price book ({self._source}); fine-tuned models are never "
                "priced at the base model's ordinary rates. Add the rates with "
                f"PriceBook.with_prices({{}}, fine_tuned={{{base!r}: {{'input': "
                "'...', 'output': '...'}}) or the 'fine_tuned' table of a price "
                "file",
                model=model,
            )
        return UnknownModelError(
            f"unknown model {model!r}: the price book ({self._source}) has no "
            f"price for it. Add one with PriceBook.with_prices({{{model!r}: "
            "{'input': '...', 'output': '...'}}) or load a price file with "
            "PriceBook.from_file(path)",
            model=model,
        )


def _adjusted(
    adjust: Callable[[str, ModelPrice], ModelPrice], name: str, price: ModelPrice
) -> ModelPrice:
    adjusted = adjust(name, price)
    if not isinstance(adjusted, ModelPrice):
        raise TypeError(
            f"price adjustment returned {adjusted!r} for {name!r}; "
            "return a ModelPrice, e.g. dataclasses.replace(price, output=Decimal('12'))"
        )
    return adjusted


def _reject_json_constant(name: str) -> Decimal:
    raise ConfigurationError(f"{name} is not a valid rate; write rates as strings")


def _parse_price_json(text: str) -> Any:
    # parse_float keeps JSON numbers exact, so no rate ever passes through a float.
    return json.loads(
        text,
        parse_float=Decimal,
        parse_constant=_reject_json_constant,
        object_pairs_hook=_unique_keys,
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated model name would otherwise keep its last price without a word.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice; keep one entry")
        result[key] = value
    return result


@functools.cache
def _default_book() -> PriceBook:
    data = resources.files("blnk_meter").joinpath("prices/openai.json")
    return PriceBook.from_dict(_parse_price_json(data.read_text(encoding="utf-8")))
