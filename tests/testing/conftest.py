from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from blnk_meter.testing import EmbeddedLedger


@pytest.fixture
def ledger() -> Iterator[EmbeddedLedger]:
    with EmbeddedLedger() as embedded:
        yield embedded


@pytest.fixture
def client(ledger: EmbeddedLedger) -> Iterator[httpx.Client]:
    with httpx.Client(transport=ledger.transport(), base_url="http://blnk") as http:
        yield http
