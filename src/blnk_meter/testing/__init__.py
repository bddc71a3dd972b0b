"""A Blnk-compatible ledger and a fake OpenAI API for tests and demos.

The embedded ledger serves Blnk's HTTP API from SQLite, in this process or on
a local port, so applications can be tested without Blnk, PostgreSQL and
Redis, and it can fail on purpose::

    from blnk_meter.testing import EmbeddedLedger

    with EmbeddedLedger() as ledger:
        client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
        client.post("/ledgers", json={"name": "customers"})

        ledger.faults.fail_next(1)  # the next request gets a 500

Runtime code of blnk_meter never imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._faults import Faults
from ._ledger import EmbeddedLedger
from ._serve import serve_forever
from ._server import LedgerServer

if TYPE_CHECKING:
    from ._provider import AUTO, OMIT, REPLY, FakeOpenAI, FakeRequest, Scenario

__all__ = [
    "AUTO",
    "OMIT",
    "REPLY",
    "EmbeddedLedger",
    "FakeOpenAI",
    "FakeRequest",
    "Faults",
    "LedgerServer",
    "Scenario",
    "serve_forever",
]

_PROVIDER_NAMES = frozenset(
    {"AUTO", "OMIT", "REPLY", "FakeOpenAI", "FakeRequest", "Scenario"}
)


def __getattr__(name: str) -> Any:
    # The fake provider imports the openai SDK; loading it only when asked
    # keeps processes that use just the ledger quick to start.
    if name in _PROVIDER_NAMES:
        from . import _provider

        return getattr(_provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
