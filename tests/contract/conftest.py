"""Fixtures for the Blnk contract tests.

The tests describe the HTTP contract of Blnk v0.15 and run against two targets: the
embedded ledger from ``blnk_meter.testing`` on 127.0.0.1, and a real Blnk server when
``BLNK_URL`` names one (with ``BLNK_API_KEY`` when that server is secured). Every
test creates its own ledger, balances, indicators and references, so the tests also
hold on a shared server that already contains data.

Tests that use the ``main_branch_only`` fixture check behaviour that Blnk's main
branch added after v0.15.2, its latest release. Against a real server they run only
when ``BLNK_MAIN_BRANCH=1`` is set, to state that the server is built from that branch.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

GENERAL_LEDGER_ID = "general_ledger_id"
USD_PRECISION = 100

# Real Blnk applies queued work in background workers. The embedded ledger drains its
# queue right after each response, so its polls succeed on the first try.
POLL_TIMEOUT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.05

# Blnk writes a QUEUED row in a goroutine after it responds, and goroutines of
# separate requests run in no fixed order. A row that has not appeared this
# long after later queued work was applied is taken as never written.
QUEUE_GRACE_SECONDS = 1.0

_T = TypeVar("_T")
MakeClient = Callable[["Target", "str | None"], httpx.Client]

_TARGETS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("live", id="live", marks=pytest.mark.live_blnk),
]


@dataclass(frozen=True)
class Target:
    """A Blnk-compatible server: its base URL and the key it expects, if any."""

    url: str
    api_key: str | None
    embedded: bool = False


def _live_target() -> Target:
    url = os.environ.get("BLNK_URL", "").strip()
    if not url:
        pytest.skip("BLNK_URL is not set; set it to a Blnk base URL to run live")
    return Target(url.rstrip("/"), os.environ.get("BLNK_API_KEY") or None)


def _serve_embedded(api_key: str | None) -> Iterator[Target]:
    from blnk_meter.testing import EmbeddedLedger

    ledger = EmbeddedLedger(api_key=api_key)
    try:
        server = ledger.serve(host="127.0.0.1", port=0)
        try:
            yield Target(server.url.rstrip("/"), api_key, embedded=True)
        finally:
            server.stop()
    finally:
        ledger.close()


@pytest.fixture(scope="session", params=_TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The server under test, as it is configured."""
    if request.param == "live":
        yield _live_target()
        return
    yield from _serve_embedded(api_key=None)


@pytest.fixture(scope="session", params=_TARGETS)
def secured_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A server that requires ``X-Blnk-Key``, with its master key."""
    if request.param == "live":
        live = _live_target()
        if live.api_key is None:
            pytest.skip("BLNK_API_KEY is not set; the live server's key is unknown")
        yield live
        return
    yield from _serve_embedded(api_key=f"ct-master-{uuid.uuid4().hex}")


@pytest.fixture(scope="session", params=_TARGETS)
def open_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A server with authentication off, the Blnk default."""
    if request.param == "live":
        live = _live_target()
        if live.api_key is not None:
            pytest.skip("BLNK_API_KEY is set, so the live server is taken as secured")
        yield live
        return
    yield from _serve_embedded(api_key=None)


@pytest.fixture
def main_branch_only(target: Target) -> None:
    """Skip on a real Blnk release, which lacks the behaviour under test."""
    if not target.embedded and os.environ.get("BLNK_MAIN_BRANCH") != "1":
        pytest.skip(
            "checks behaviour of Blnk's main branch, newer than v0.15.2; set"
            " BLNK_MAIN_BRANCH=1 when the server at BLNK_URL is built from it"
        )


def open_client(target: Target, api_key: str | None = None) -> httpx.Client:
    """Open a client for ``target`` that sends ``api_key`` as ``X-Blnk-Key``.

    The proxy variables of the environment are ignored so that requests to the
    embedded ledger stay on 127.0.0.1.
    """
    headers = {"X-Blnk-Key": api_key} if api_key else {}
    return httpx.Client(
        base_url=target.url, headers=headers, timeout=10.0, trust_env=False
    )


@pytest.fixture
def client(target: Target) -> Iterator[httpx.Client]:
    """A client for the server under test, with its key when one is configured."""
    with open_client(target, target.api_key) as http:
        yield http


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """A factory of clients that send a chosen key, closed after the test."""
    opened: list[httpx.Client] = []

    def make(target: Target, api_key: str | None) -> httpx.Client:
        http = open_client(target, api_key)
        opened.append(http)
        return http

    yield make
    for http in opened:
        http.close()


def wait_until(fetch: Callable[[], _T | None], what: str) -> _T:
    """Call ``fetch`` until it returns a value other than None, for up to 10 s."""
    deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
    while True:
        value = fetch()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {POLL_TIMEOUT_SECONDS} s waiting for {what}")
        time.sleep(POLL_INTERVAL_SECONDS)


def new_reference(label: str) -> str:
    """Return a reference no other test uses.

    Blnk derives its own references by appending ``_q``, ``_<n>`` and ``_refund``, so
    ours contain no underscore.
    """
    return f"ct-{label}-{uuid.uuid4().hex}"


def new_indicator(label: str) -> str:
    """Return an indicator name, ``@`` included, that no other test uses."""
    return f"@ct-{uuid.uuid4().hex}-{label}"


class Blnk:
    """The server under test, with shortcuts for the requests the tests repeat.

    Each instance creates one ledger and one ``@...-World`` indicator on first use,
    so two tests never share a balance.
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.world = new_indicator("World")
        self._ledger_id: str | None = None

    reference = staticmethod(new_reference)
    indicator = staticmethod(new_indicator)
    wait_until = staticmethod(wait_until)

    @property
    def ledger_id(self) -> str:
        """The id of this test's own ledger."""
        if self._ledger_id is None:
            self._ledger_id = self.new_ledger()
        return self._ledger_id

    def new_ledger(self) -> str:
        """Create a ledger and return its id."""
        response = self.client.post("/ledgers", json={"name": new_reference("ledger")})
        assert response.status_code == 201, response.text
        return str(response.json()["ledger_id"])

    def new_balance(self, currency: str = "USD") -> str:
        """Create a balance in this test's ledger and return its id."""
        body = {"ledger_id": self.ledger_id, "currency": currency}
        response = self.client.post("/balances", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["balance_id"])

    def balance(self, balance_id: str) -> dict[str, Any]:
        """Fetch a balance object."""
        response = self.client.get(f"/balances/{balance_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def indicator_balance(self, indicator: str, currency: str) -> dict[str, Any]:
        """Fetch the general-ledger balance of an indicator in one currency."""
        path = f"/balances/indicator/{indicator}/currency/{currency}"
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def transaction(
        self,
        source: str,
        destination: str,
        precise_amount: int,
        currency: str = "USD",
        **fields: Any,
    ) -> dict[str, Any]:
        """Build a ``skip_queue`` transaction body with a fresh reference.

        ``fields`` add to or replace the defaults (precision 100, a description).
        """
        body: dict[str, Any] = {
            "source": source,
            "destination": destination,
            "precise_amount": precise_amount,
            "precision": USD_PRECISION,
            "currency": currency,
            "reference": new_reference("txn"),
            "description": "contract test",
            "skip_queue": True,
        }
        body.update(fields)
        return body

    def post_transaction(self, body: dict[str, Any]) -> dict[str, Any]:
        """Post a transaction that must succeed and return the stored row."""
        response = self.client.post("/transactions", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def fund(
        self, balance_id: str, precise_amount: int, currency: str = "USD"
    ) -> dict[str, Any]:
        """Move ``precise_amount`` from this test's World indicator to a balance."""
        body = self.transaction(
            self.world, balance_id, precise_amount, currency, allow_overdraft=True
        )
        return self.post_transaction(body)

    def find_reference(self, reference: str) -> dict[str, Any] | None:
        """Fetch the transaction with ``reference``, or None when there is none."""
        response = self.client.get(f"/transactions/reference/{reference}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for_reference(self, reference: str) -> dict[str, Any]:
        """Poll until a transaction with ``reference`` exists and return it."""
        return wait_until(
            lambda: self.find_reference(reference), f"reference {reference!r}"
        )

    def appears_within(self, path: str, seconds: float = QUEUE_GRACE_SECONDS) -> bool:
        """Return whether ``GET path`` returns 200 within ``seconds`` of polling."""
        deadline = time.monotonic() + seconds
        while True:
            response = self.client.get(path)
            if response.status_code == 200:
                return True
            assert response.status_code == 404, response.text
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_INTERVAL_SECONDS)

    def wait_for_balance(self, balance_id: str, expected: int) -> dict[str, Any]:
        """Poll until the ``balance`` field of a balance equals ``expected``."""

        def fetch() -> dict[str, Any] | None:
            balance = self.balance(balance_id)
            return balance if balance["balance"] == expected else None

        return wait_until(fetch, f"balance {balance_id} to reach {expected}")

    def filter_transactions(self, body: dict[str, Any]) -> Any:
        """Run ``POST /transactions/filter`` that must succeed and return its body."""
        response = self.client.post("/transactions/filter", json=body)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def blnk(client: httpx.Client) -> Blnk:
    """Shortcuts for the server under test, scoped to one test's own ledger."""
    return Blnk(client)
