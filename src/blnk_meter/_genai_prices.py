"""Build a PriceBook from the price data of the optional genai-prices package.

genai-prices (github.com/pydantic/genai-prices) describes each model's prices
with match rules, date-dependent prices, tiers and units beyond text tokens.
Only flat rates for text tokens can become a :class:`ModelPrice` exactly, so
every other model is left out and named in one warning.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

from ._prices import ModelPrice, PriceBook
from .errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import MatchLogic, ModelInfo, Provider

__all__ = ["price_book_from_genai_prices"]

logger = logging.getLogger("blnk_meter.prices")

_TOKEN_KEYS = frozenset({"input_mtok", "cache_read_mtok", "output_mtok"})
# Per-call fees of hosted tools (web and file search). They leave the token
# rates unchanged, so such models convert; the fees themselves are not priced.
_TOOL_FEE_KEYS = frozenset({"web_searches_kcount", "storage_searches_kcount"})
_INSTALL_HINT = "pip install 'blnk-meter[genai-prices]'"


def price_book_from_genai_prices(
    *, provider: str = "openai", at: datetime | None = None
) -> PriceBook:
    """Build a price book from genai-prices' data for one provider.

    Standard-tier rates are taken. Rates that genai-prices records for other
    service tiers (flex, priority) or for the Batch API are not applied.

    Args:
        provider: the genai-prices provider id, e.g. ``"openai"``.
        at: the moment whose prices apply when a price changed on a date;
            ``None`` means now. Naive datetimes are UTC.

    Returns:
        A USD book with the provider's flat text-token prices, the models of
        its fallback providers, and fine-tuned rates keyed by base model.

    Raises:
        ConfigurationError: genai-prices is not installed, or it has no such
            provider.
        TypeError: ``at`` is not a datetime.
    """
    snapshot, version = _load_snapshot()
    moment = _as_utc(at)
    try:
        source = snapshot.find_provider(None, provider, None)
    except LookupError as exc:
        raise ConfigurationError(
            f"genai-prices {version} has no provider {provider!r}; use a provider "
            "id such as 'openai'"
        ) from exc

    models: dict[str, ModelPrice] = {}
    fine_tuned: dict[str, ModelPrice] = {}
    skipped: dict[str, str] = {}
    for info in _provider_models(source, snapshot):
        price = _flat_price(info, moment)
        if isinstance(price, str):
            skipped[info.id] = price
            continue

        base = _fine_tuned_base(info.id)
        if base is not None:
            fine_tuned.setdefault(base, price)
            continue
        for name in _model_names(info, source, snapshot):
            models.setdefault(name, price)

    if skipped:
        _warn_skipped(source.id, skipped)
    origin = "auto-updated" if snapshot.from_auto_update else "bundled"
    return PriceBook(
        models,
        fine_tuned=fine_tuned,
        currency="USD",
        source=(
            f"genai-prices {version} ({origin} data), provider {source.id!r}, "
            "standard-tier rates"
        ),
        as_of=moment.date().isoformat(),
    )


def _load_snapshot() -> tuple[DataSnapshot, str]:
    try:
        import genai_prices
        from genai_prices import data_snapshot
    except ImportError as exc:
        raise ConfigurationError(
            "building a price book from genai-prices needs the 'genai-prices' "
            f"package, which is not installed; install it with {_INSTALL_HINT}"
        ) from exc
    return data_snapshot.get_snapshot(), genai_prices.__version__


def _as_utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(timezone.utc)
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a datetime or None, not {at!r}")
    if at.tzinfo is None:
        return at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc)


def _provider_models(provider: Provider, snapshot: DataSnapshot) -> Iterator[ModelInfo]:
    # genai-prices looks a name up in the provider's own models first, then
    # in each fallback provider (Azure falls back to OpenAI, for example).
    from genai_prices.data_snapshot import find_provider_by_id

    yield from provider.models
    for provider_id in provider.fallback_model_providers or ():
        fallback = find_provider_by_id(snapshot.providers, provider_id)
        if fallback is not None:
            yield from fallback.models


def _flat_price(info: ModelInfo, moment: datetime) -> ModelPrice | str:
    """Return the model's flat token price at ``moment``, or why it has none."""
    from genai_prices.types import TieredPrices, TimeOfDateConstraint

    if isinstance(info.prices, list) and any(
        isinstance(price.constraint, TimeOfDateConstraint) for price in info.prices
    ):
        return "price depends on the time of day"

    rates = {
        key: value
        for key, value in vars(info.get_prices(moment)).items()
        if value is not None and not key.startswith("_")
    }
    if any(isinstance(value, TieredPrices) for value in rates.values()):
        return "tiered by prompt size"
    other_units = set(rates) - _TOKEN_KEYS - _TOOL_FEE_KEYS
    if other_units:
        return f"priced by {', '.join(sorted(other_units))}"
    if "input_mtok" not in rates:
        return "no input token price"

    # A missing output rate means output is free in genai-prices' own
    # calculation, as for embedding models.
    return ModelPrice(
        input=rates["input_mtok"],
        cached_input=rates.get("cache_read_mtok"),
        output=rates.get("output_mtok", Decimal(0)),
    )


def _fine_tuned_base(model_id: str) -> str | None:
    """Return the base model of a genai-prices fine-tuned entry, if it is one.

    genai-prices names fine-tuned entries ``ft:<base>`` (``ft:gpt-4o``,
    ``ft:gpt-3.5-turbo-``) or ``<base>.ft-`` (``gpt-4o-mini-2024-07-18.ft-``).
    """
    if model_id.startswith("ft:"):
        return model_id.removeprefix("ft:").rstrip("-") or None
    if ".ft-" in model_id:
        return model_id.split(".ft-")[0] or None
    return None


def _model_names(
    info: ModelInfo, provider: Provider, snapshot: DataSnapshot
) -> list[str]:
    """Return the exact names that genai-prices resolves to this model.

    Candidates are the model id and every name its match rule compares for
    equality. A candidate counts only if genai-prices itself matches it to
    this model, so an earlier model that claims the same name keeps it.
    """
    names = [info.id, *_equal_names(info.match)]
    return [
        name
        for name in dict.fromkeys(names)
        if provider.find_model(name, all_providers=snapshot.providers) is info
    ]


def _equal_names(rule: MatchLogic) -> Iterator[str]:
    from genai_prices.types import ClauseEquals, ClauseOr

    if isinstance(rule, ClauseEquals):
        yield rule.equals
    elif isinstance(rule, ClauseOr):
        for clause in rule.or_:
            yield from _equal_names(clause)


def _warn_skipped(provider_id: str, skipped: dict[str, str]) -> None:
    listing = "; ".join(
        f"{model} ({reason})" for model, reason in sorted(skipped.items())
    )
    logger.warning(
        "genai-prices: %d %s models have no flat per-token price and are left "
        "out of the price book, so they raise UnknownModelError until priced "
        "with PriceBook.with_prices: %s",
        len(skipped),
        provider_id,
        listing,
    )
