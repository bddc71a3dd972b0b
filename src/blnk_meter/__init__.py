"""Meter OpenAI usage per customer and post it to the Blnk ledger.

Every OpenAI call made inside a customer scope is captured, priced exactly
and recorded as one atomic two-leg posting (tokens and money) in Blnk::

    import blnk_meter
    from blnk_meter import metered

    blnk_meter.configure(ledger_url="http://localhost:5001")

    @metered(customer=lambda user, question: user.id)
    def answer(user, question):
        return client.responses.create(model="gpt-4o-mini", input=question)

The public API is the list in ``__all__``; every other name may change
without notice.
"""

from __future__ import annotations

from . import errors
from ._blnk import AsyncBlnkClient, BlnkClient
from ._default import (
    configure,
    get_default_meter,
    instrument,
    set_default_meter,
    uninstrument,
)
from ._failures import MeterFailure, MeterStats
from ._meter import Meter
from ._money import DEFAULT_PRECISIONS, Precisions, format_amount, to_minor_units
from ._posting import Leg, MoneyMap, Posting, UsageEvent, Wallet
from ._prices import Charge, ModelPrice, PriceBook, ResolvedPrice
from ._scope import Scope, current_scope, metered
from ._transports import (
    AsyncHttpxTransport,
    AsyncTransport,
    Delivery,
    HttpxTransport,
    MemoryTransport,
    RetryPolicy,
    Transport,
)
from ._usage import ProviderCall, UnmeteredCall, Usage

__all__ = [
    "DEFAULT_PRECISIONS",
    "AsyncBlnkClient",
    "AsyncHttpxTransport",
    "AsyncTransport",
    "BlnkClient",
    "Charge",
    "Delivery",
    "HttpxTransport",
    "Leg",
    "MemoryTransport",
    "Meter",
    "MeterFailure",
    "MeterStats",
    "ModelPrice",
    "MoneyMap",
    "Posting",
    "Precisions",
    "PriceBook",
    "ProviderCall",
    "ResolvedPrice",
    "RetryPolicy",
    "Scope",
    "Transport",
    "UnmeteredCall",
    "Usage",
    "UsageEvent",
    "Wallet",
    "configure",
    "current_scope",
    "errors",
    "format_amount",
    "get_default_meter",
    "instrument",
    "metered",
    "set_default_meter",
    "to_minor_units",
    "uninstrument",
]

__version__ = "0.1.0"
