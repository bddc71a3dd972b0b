"""The module-level default meter and the bridge from the instrumentation to meters.

The OpenAI instrumentation is global, so one dispatcher receives every call
and hands it to the meter of the innermost scope, or to the default meter.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypedDict, overload

from ._meter import Meter, _Call
from ._recorder import CallOutcome
from ._scope import current_scope
from ._usage import ProviderCall
from .errors import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._failures import MeterFailure
    from ._meter import OutsideScopePolicy, UnknownModelPolicy, WalletSource
    from ._posting import MoneyMap
    from ._prices import PriceBook
    from ._transports import AsyncTransport, Transport

__all__ = [
    "configure",
    "get_default_meter",
    "instrument",
    "set_default_meter",
    "uninstrument",
]

logger = logging.getLogger(__name__)


class MeterSettings(TypedDict, total=False):
    """The keyword arguments of :class:`Meter`, so type checkers catch typos."""

    transport: Transport | AsyncTransport | None
    ledger_url: str | None
    api_key: str | None
    async_transport: AsyncTransport | None
    prices: PriceBook | None
    money_map: MoneyMap | None
    wallets: WalletSource | None
    precisions: Mapping[str, int] | None
    outside_scope: OutsideScopePolicy
    default_customer: str | None
    unknown_model: UnknownModelPolicy
    max_tokens_per_call: int
    on_error: Callable[[MeterFailure], None] | None


_default_meter: Meter | None = None
_warned_without_meter = threading.Event()


def get_default_meter() -> Meter | None:
    """Return the meter used where no scope names one, or ``None``."""
    return _default_meter


def set_default_meter(meter: Meter | None) -> None:
    """Replace the default meter; ``None`` removes it."""
    global _default_meter
    _default_meter = meter


@overload
def configure(meter: Meter, /) -> Meter: ...


@overload
def configure(**settings: Unpack[MeterSettings]) -> Meter: ...


def configure(
    meter: Meter | None = None, /, **settings: Unpack[MeterSettings]
) -> Meter:
    """Set the default meter and instrument the OpenAI SDK, in one call.

    Either pass a :class:`Meter`, or the keyword arguments of one. Without a
    transport or ``ledger_url``, the ledger address comes from the
    environment variable ``BLNK_URL``; without ``api_key``, the key of that
    address comes from ``BLNK_API_KEY``::

        blnk_meter.configure(ledger_url="http://localhost:5001")

    Returns:
        The default meter.

    Raises:
        ConfigurationError: the settings are invalid, or no ledger is named.
        TypeError: both a meter and settings were passed.
    """
    if meter is not None and settings:
        raise TypeError("pass either a Meter or its settings to configure(), not both")
    if meter is None:
        if "transport" not in settings and "ledger_url" not in settings:
            url = os.environ.get("BLNK_URL")
            if url:
                settings["ledger_url"] = url
        if "ledger_url" in settings and "api_key" not in settings:
            settings["api_key"] = os.environ.get("BLNK_API_KEY") or None
        meter = Meter(**settings)
    set_default_meter(meter)
    instrument()
    logger.info("blnk_meter configured: %r", meter)
    return meter


def instrument(
    *, inject_stream_usage: bool = True, drain_on_close: bool = True
) -> None:
    """Patch the OpenAI SDK so every billable call reaches a meter.

    Safe to call more than once, and before or after ``openai`` is imported.

    Args:
        inject_stream_usage: ask for usage on chat and completion streams
            (``stream_options.include_usage``) when the caller did not, and
            hide the extra usage chunk from the events the caller iterates.
            Raw byte readers (``with_streaming_response`` with ``iter_bytes``
            or ``iter_lines``) still see it. Without injection, such streams
            carry no usage and are reported as unmetered.
        drain_on_close: when a caller stops reading a stream before the usage
            arrived, read the rest of it so the tokens the provider bills are
            known. The provider then generates, and bills, the whole response,
            and ``close()`` waits for it. Without it, closing stops sooner and
            such calls are reported as unmetered.
    """
    from . import _instrument

    _instrument.install(
        _DISPATCHER,
        inject_stream_usage=inject_stream_usage,
        drain_on_close=drain_on_close,
    )


def uninstrument() -> None:
    """Remove the OpenAI SDK patches."""
    from . import _instrument

    _instrument.uninstall()


class _Dispatcher:
    """Routes each instrumented call to the meter in charge of it."""

    def begin(self, call: ProviderCall) -> _Call | None:
        scope = current_scope()
        meter = scope.meter if scope is not None and scope.meter is not None else None
        meter = meter or _default_meter
        if meter is None:
            if scope is not None and scope.customer is not None:
                raise ConfigurationError(
                    f"OpenAI call to {call.path} for customer {scope.customer!r} "
                    "was not sent: no meter is configured to bill it; call "
                    "blnk_meter.configure(...) or pass metered(meter=...)"
                )
            if not _warned_without_meter.is_set():
                _warned_without_meter.set()
                logger.warning(
                    "OpenAI call to %s not metered: no meter is configured and "
                    "no customer is in scope; call blnk_meter.configure(...). "
                    "Later such calls are logged at DEBUG",
                    call.path,
                )
            else:
                logger.debug("OpenAI call to %s not metered: no meter", call.path)
            return None
        return meter.begin(call, scope)

    async def abegin(self, call: ProviderCall) -> _Call | None:
        return self.begin(call)

    def finish(self, token: object, outcome: CallOutcome) -> None:
        assert isinstance(token, _Call)
        token.meter.finish(token, outcome)

    async def afinish(self, token: object, outcome: CallOutcome) -> None:
        assert isinstance(token, _Call)
        await token.meter.afinish(token, outcome)

    def cancel(self, token: object, error: BaseException | None) -> None:
        assert isinstance(token, _Call)
        token.meter.cancel(token, error)

    async def acancel(self, token: object, error: BaseException | None) -> None:
        assert isinstance(token, _Call)
        await token.meter.acancel(token, error)


_DISPATCHER = _Dispatcher()
