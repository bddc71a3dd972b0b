"""The embedded ledger: Blnk's HTTP API over SQLite, in this process."""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal

import httpx

from ..errors import ConfigurationError
from ._apierror import ApiError, error_body
from ._balance_routes import BALANCE_ROUTES
from ._client import ConvenienceMixin
from ._faults import JSON_HEADERS, Faults, RawResponse, not_found
from ._queue import has_due_work, run_next
from ._routes import ROUTES, Request, Route, parse_target
from ._server import LedgerServer
from ._sqlfunctions import register_functions
from ._store import Store, is_lock_error
from ._transport import AsyncLedgerTransport, LedgerTransport
from ._txn_routes import TXN_ROUTES

__all__ = ["EmbeddedLedger"]

logger = logging.getLogger(__name__)

QueueMode = Literal["immediate", "manual"]

_ALL_ROUTES: list[Route] = [*ROUTES, *BALANCE_ROUTES, *TXN_ROUTES]
_OPEN_PATHS: tuple[list[str], ...] = ([], ["health"])


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


class EmbeddedLedger(ConvenienceMixin):
    """A ledger that speaks Blnk's HTTP API, stored in SQLite, for tests and demos.

    It follows Blnk v0.15.2, the latest release: the same paths, bodies,
    error codes and statuses, queued and synchronous processing, inflight
    holds, bulk compensation, refunds and filters. A few request fields and
    checks come from Blnk's main branch and are in no release yet; the list
    below names them. Every request goes through :meth:`handle`;
    :meth:`transport`, :meth:`async_transport` and :meth:`serve` put it
    behind httpx or a real HTTP port, where :attr:`faults` can make it fail
    on purpose.

    Differences from Blnk v0.15.2, all deliberate:

    - Request fields of Blnk's main branch after v0.15.2. ``dry_run`` works
      on ``POST /transactions``, ``POST /transactions/bulk``,
      ``PUT /transactions/inflight/{id}``, the bulk inflight commit and void,
      and refunds. A refund takes ``description`` and ``meta_data``, and
      ``POST /balances`` takes ``indicator``. A v0.15.2 server ignores these
      fields, so it posts a dry run for real, gives a refund the original's
      description and meta_data, and creates a balance without the
      indicator.
    - Checks of Blnk's main branch after v0.15.2. A negative ``amount``,
      ``precise_amount`` or ``precision``, and a transaction whose source is
      its destination, get 400 ``TXN_VALIDATION_ERROR``. v0.15.2 accepts a
      negative amount with a negative precision and stores both as sent, and
      fails a self-transfer only while processing it (409 with
      ``skip_queue``).
    - Commit and void rows carry no ``inflight`` key in ``meta_data``, as on
      Blnk's main branch. v0.15.2 copies it from the hold.
    - No Typesense search (``/search``, ``/multi-search``), webhooks, hooks,
      balance monitors, identities, accounts, reconciliation, fund lineage,
      balance snapshots, backups, metrics, ledger updates, metadata updates
      or queued-transaction recovery. Those paths return 404.
    - Authentication accepts only the master key: no scoped API keys, so no
      403 responses and no ``BLNK_GENERATED_BY`` meta_data.
    - Split transactions (``sources``/``destinations``) are rejected with
      400 ``GEN_BAD_REQUEST``.
    - Timed work (inflight expiry, ``inflight_commit_date``,
      ``scheduled_for``) runs lazily: at the start of the first request after
      it falls due, or in :meth:`process_queue`.
    - Queued work runs in order, one entry at a time, right after the request
      that queued it (``queue="immediate"``) or in :meth:`process_queue`
      (``queue="manual"``). A queued transaction that fails for a reason
      other than a used reference is rejected at once; Blnk retries some
      failures before rejecting.
    - The QUEUED row of a queued transaction is written before the response is
      sent; Blnk writes it just after.
    - A refund request, or a synchronous commit or void of several legs,
      writes nothing when one of its rows fails; Blnk keeps what it did
      before the failure.
    - Expiring a hold voids the INFLIGHT legs under the expired id. A hold
      that is still waiting in the manual queue when it expires is not
      voided.
    - Amounts, balances and precisions must fit in a signed 64-bit integer;
      larger values are rejected with 400 ``TXN_INVALID_AMOUNT``.
    - Request bodies over 5 MiB are rejected, as with Blnk's default limit,
      which Blnk lets its configuration change.
    - A duplicate reference that names a new ``@indicator`` creates no
      balance; Blnk creates the balance before it finds the duplicate.
    - Faults on purpose are checked before the API key, so a request without
      a key can meet, and use up, an armed fault.
    - Within one process, requests reach the database one at a time through
      one SQLite connection. A write that waits for another process's lock
      therefore holds up every other request of its own process, reads
      included. After 30 seconds it gets 423 ``GEN_RESOURCE_LOCKED``. The
      ledger holds no lock between requests.
    - Dry runs execute the request inside a rolled-back savepoint, so their
      projection is exact, but a bulk dry run reports no combined balances.
    - ``GET /balances/{id}/at`` always computes from the transactions, since
      there are no snapshots; ``from_source`` only changes the echoed flag.
    - ``GET /balances/{id}`` supports ``include=ledger`` but not
      ``include=identity``.
    - A request whose ``Content-Length`` or chunked body cannot be read gets
      400 ``GEN_BAD_REQUEST`` in Blnk's JSON error shape. Go's HTTP server
      rejects a bad ``Content-Length`` with a plain-text 400 instead.

    As in Blnk, a batch posted without ``skip_queue`` can be left half
    applied, even with ``atomic: true``. The batch's ``atomic`` flag is not
    copied to its legs, which are queued and applied one by one, so a
    rejected leg leaves the others applied. A leg that carries its own
    ``atomic: true`` refunds the legs applied before it, but the legs queued
    after it are still applied.

    Args:
        path: ``None`` for an in-memory ledger, or a SQLite file (WAL mode)
            that survives the process being killed and that several
            processes may open at once.
        api_key: ``None`` for no authentication (Blnk's default); a string
            to require it in the ``X-Blnk-Key`` header.
        queue: ``"immediate"`` processes queued work right after each
            request; ``"manual"`` keeps it queued until :meth:`process_queue`.
        clock: returns the current time as an aware datetime; tests pass
            their own to move time forward.

    Raises:
        ConfigurationError: an argument is invalid.
        sqlite3.DatabaseError: ``path`` is not SQLite, or its tables are
            another program's.
        sqlite3.OperationalError: another process held the file's write lock
            for longer than 30 seconds, or SQLite failed otherwise.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        api_key: str | None = None,
        queue: QueueMode = "immediate",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if queue not in ("immediate", "manual"):
            raise ConfigurationError(
                f"queue mode {queue!r} is invalid; use 'immediate' or 'manual'"
            )
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ConfigurationError(
                "api_key must be a non-empty string, or None to turn authentication off"
            )
        self._path = os.fspath(path) if path is not None else None
        self._api_key = api_key
        self._queue_mode: QueueMode = queue
        self._clock = clock or _utc_now
        self._servers: list[LedgerServer] = []
        self.faults = Faults()
        """Faults injected into :meth:`transport`, :meth:`async_transport` and
        :meth:`serve`; they do not affect :meth:`handle`."""
        self._store = Store(self._path, self._now, setup=register_functions)

    def __repr__(self) -> str:
        auth = "on" if self._api_key else "off"
        return (
            f"EmbeddedLedger(path={self._path!r}, queue={self._queue_mode!r},"
            f" auth={auth})"
        )

    def _now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ConfigurationError(
                f"clock returned the naive datetime {moment!r}; return an aware"
                " datetime such as datetime.now(timezone.utc)"
            )
        return moment

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Handle one HTTP request as Blnk would and return the response.

        This is the single entry point of the ledger: transports, the HTTP
        server and the convenience methods all call it. Injected faults do
        not apply here.

        Args:
            method: the HTTP method.
            target: the path with an optional ``?query``.
            headers: the request headers (only ``X-Blnk-Key`` is read).
            body: the raw request body.

        Returns:
            The status, the response headers and the response body.
        """
        try:
            request = parse_target(method, target, body)
            self._authenticate(request, headers)
            response = self._dispatch(request)
        except ApiError as exc:
            response = (exc.status, dict(JSON_HEADERS), error_body(exc))
        except Exception as exc:
            response = self._internal_error(method, target, exc)
        if self._queue_mode == "immediate":
            try:
                self._drain(timed_only=False)
            except Exception:
                logger.exception("queued work after %s %s failed", method, target)
        return response

    @staticmethod
    def _internal_error(method: str, target: str, exc: Exception) -> RawResponse:
        if is_lock_error(exc):
            error = ApiError("GEN_RESOURCE_LOCKED", f"failed to acquire lock: {exc}")
        else:
            logger.exception("%s %s failed inside the embedded ledger", method, target)
            error = ApiError("GEN_INTERNAL", "internal server error")
        return error.status, dict(JSON_HEADERS), error_body(error)

    def _authenticate(self, request: Request, headers: Mapping[str, str]) -> None:
        if request.segments not in _OPEN_PATHS:
            self._check_key(headers)

    def _check_key(self, headers: Mapping[str, str]) -> None:
        if self._api_key is None:
            return
        key = _header(headers, "x-blnk-key")
        if not key:
            raise ApiError(
                "AUTH_MISSING_API_KEY", "Authentication required. Use X-Blnk-Key header"
            )
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise ApiError("AUTH_INVALID_API_KEY", "Invalid API key")

    def _admin(
        self, method: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[RawResponse, Callable[[], None] | None]:
        """Serve the fault controls to clients that hold the API key, if any."""
        try:
            self._check_key(headers)
        except ApiError as exc:
            return (exc.status, dict(JSON_HEADERS), error_body(exc)), None
        return self.faults.admin(method, body)

    def _dispatch(self, request: Request) -> RawResponse:
        for route in _ALL_ROUTES:
            captured = route.match(request)
            if captured is not None:
                break
        else:
            return not_found()
        self._drain(timed_only=True)
        opened = self._store.write() if route.writes else self._store.read()
        with opened as session:
            status, payload = route.handler(session, request, *captured)
        return status, dict(JSON_HEADERS), json.dumps(payload).encode()

    def _has_work(self, timed_only: bool) -> bool:
        with self._store.read() as session:
            if timed_only:
                return has_due_work(session)
            row = session.conn.execute(
                "SELECT 1 FROM queue WHERE due_at IS NULL OR due_at <= ? LIMIT 1",
                (session.now(),),
            ).fetchone()
            return row is not None

    def _drain(self, *, timed_only: bool) -> int:
        processed = 0
        while self._has_work(timed_only):
            with self._store.write() as session:
                if not run_next(session, timed_only=timed_only):
                    break
            processed += 1
        return processed

    def process_queue(self) -> int:
        """Run all queued work and the timed work that has come due.

        Work queued while processing (refunds of a rejected atomic leg, for
        example) runs too.

        Returns:
            The number of queue entries processed.
        """
        return self._drain(timed_only=False)

    def transport(self) -> httpx.BaseTransport:
        """Return an httpx transport that reaches this ledger without sockets."""
        return LedgerTransport(self.handle, self.faults, self._admin)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """Return an asyncio httpx transport to this ledger, without sockets."""
        return AsyncLedgerTransport(self.handle, self.faults, self._admin)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> LedgerServer:
        """Start a real HTTP server for this ledger in background threads.

        Args:
            host: the address to listen on.
            port: the port; 0 lets the OS choose a free one.

        Returns:
            The server, already listening; see ``server.url``.
        """
        server = LedgerServer(self.handle, self.faults, self._admin, host, port)
        self._servers.append(server)
        return server

    def close(self) -> None:
        """Stop the servers started by :meth:`serve` and close the database."""
        for server in self._servers:
            server.stop()
        self._servers.clear()
        self.faults.clear()
        self._store.close()

    def __enter__(self) -> EmbeddedLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["X-Blnk-Key"] = self._api_key
        return headers

    def _call(self, method: str, target: str, body: Any = None) -> Any:
        raw = b"" if body is None else json.dumps(body).encode()
        status, _, response = self.handle(method, target, self._auth_headers(), raw)
        return self._decode(method, target, status, response, body)
