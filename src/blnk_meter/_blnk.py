"""A thin client for Blnk's HTTP API: the one module that builds its URLs.

It also reads Blnk's error bodies. Requests are plain values
(:class:`ApiRequest`), so the delivery logic can be written once and driven
by the sync or the async client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from .errors import (
    ConfigurationError,
    DuplicateReferenceError,
    InsufficientFundsError,
    LedgerAuthError,
    LedgerError,
    LedgerRejectedError,
    LedgerUnavailableError,
)

__all__ = [
    "ApiRequest",
    "AsyncBlnkClient",
    "BlnkClient",
    "bulk_request",
    "error_from_response",
    "indicator_request",
    "redact_url",
    "reference_request",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_KEY_HEADER = "X-Blnk-Key"
_RETRYABLE_STATUSES = frozenset({408, 423, 429})
_RETRYABLE_CODES = frozenset(
    {"GEN_RESOURCE_LOCKED", "GEN_RATE_LIMITED", "QUEUE_BACKPRESSURE", "GEN_INTERNAL"}
)


@dataclass(frozen=True)
class ApiRequest:
    """One call to the Blnk API.

    Attributes:
        method: the HTTP method.
        path: the path below the base URL, already percent-encoded.
        body: the JSON body, or ``None``.
        missing_ok: return ``None`` instead of raising on 404.
        references: the references involved, copied into errors.
    """

    method: str
    path: str
    body: Any = None
    missing_ok: bool = False
    references: tuple[str, ...] = ()


def bulk_request(body: dict[str, Any], references: tuple[str, ...]) -> ApiRequest:
    """Build ``POST /transactions/bulk``."""
    return ApiRequest("POST", "/transactions/bulk", body, references=references)


def reference_request(reference: str) -> ApiRequest:
    """Build ``GET /transactions/reference/{reference}``; a 404 returns ``None``."""
    path = f"/transactions/reference/{quote(reference, safe=':@')}"
    return ApiRequest("GET", path, missing_ok=True, references=(reference,))


def indicator_request(indicator: str, currency: str) -> ApiRequest:
    """Build the lookup of an indicator balance; a 404 returns ``None``."""
    path = (
        f"/balances/indicator/{quote(indicator, safe='@')}"
        f"/currency/{quote(currency, safe='')}"
    )
    return ApiRequest("GET", path, missing_ok=True)


def error_from_response(
    status: int, content: bytes, *, references: tuple[str, ...] = ()
) -> LedgerError:
    """Map a Blnk error answer to the matching exception.

    Blnk v0.15 and later send ``error_detail.code``; older servers only send a
    message under ``error`` or ``errors``, which is matched by its wording.
    """
    message, code, batch_id = _parse_error_body(content)
    text = f"Blnk responded {status}: {message}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "references": references,
        "batch_id": batch_id,
    }
    lowered = message.lower()
    if code == "TXN_INSUFFICIENT_FUNDS" or "insufficient funds" in lowered:
        return InsufficientFundsError(text, **kwargs)
    if code == "TXN_DUPLICATE_REFERENCE" or "has already been used" in lowered:
        return DuplicateReferenceError(text, **kwargs)
    if status in (401, 403) or (code or "").startswith("AUTH_"):
        hint = " (check the X-Blnk-Key API key and its scopes)"
        return LedgerAuthError(text + hint, **kwargs)
    if status >= 500 or status in _RETRYABLE_STATUSES or code in _RETRYABLE_CODES:
        return LedgerUnavailableError(text, **kwargs)
    return LedgerRejectedError(text, **kwargs)


def _parse_error_body(content: bytes) -> tuple[str, str | None, str | None]:
    try:
        body = json.loads(content)
    except ValueError:
        snippet = content[:200].decode("utf-8", "replace")
        return (snippet or "empty body"), None, None
    if not isinstance(body, dict):
        return str(body)[:200], None, None
    detail = body.get("error_detail")
    code = detail.get("code") if isinstance(detail, dict) else None
    message = body.get("error", body.get("errors"))
    if message is None and isinstance(detail, dict):
        message = detail.get("message")
    batch_id = body.get("batch_id")
    return (
        str(message) if message is not None else "no error message",
        code if isinstance(code, str) else None,
        batch_id if isinstance(batch_id, str) else None,
    )


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "blnk-meter"}
    if api_key:
        headers[_KEY_HEADER] = api_key
    return headers


def _unavailable(
    request: ApiRequest, exc: httpx.HTTPError, secret: str | None
) -> LedgerUnavailableError:
    reason = str(exc)
    if secret:
        # Some transport errors quote the request's headers.
        reason = reason.replace(secret, "***")
    return LedgerUnavailableError(
        f"Blnk request {request.method} {request.path} failed: "
        f"{type(exc).__name__}: {reason}",
        references=request.references,
    )


def _clean_key(api_key: str | None) -> str | None:
    """Strip surrounding whitespace from a key, as read from a file or secret.

    Raises:
        ConfigurationError: the key contains other whitespace or control
            characters, which cannot go in an HTTP header. The key itself is
            not shown.
    """
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise ConfigurationError(
            f"the Blnk API key is a {type(api_key).__name__}; pass a string"
        )
    key = api_key.strip()
    if any(not 33 <= ord(char) <= 126 for char in key):
        raise ConfigurationError(
            f"the Blnk API key ({len(key)} characters) contains whitespace, "
            "control or non-ASCII characters, which an HTTP header cannot "
            "carry; check how the key is read"
        )
    return key or None


def _decode(request: ApiRequest, response: httpx.Response) -> Any:
    if response.status_code == 404 and request.missing_ok:
        return None
    if response.is_success:
        try:
            return response.json()
        except ValueError as exc:
            raise LedgerUnavailableError(
                f"Blnk responded {response.status_code} to {request.method} "
                f"{request.path} with a body that is not JSON",
                status=response.status_code,
                references=request.references,
            ) from exc
    raise error_from_response(
        response.status_code, response.content, references=request.references
    )


def redact_url(url: str) -> str:
    """Return ``url`` with any password in it replaced by ``***``."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rsplit("@", 1)[1]
    return parsed._replace(netloc=f"{parsed.username}:***@{host}").geturl()


class _ClientBase:
    """Common part of the sync and async clients: the address, auth and repr."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        # A user name and password in the address become HTTP basic auth, so
        # the address httpx logs for every request carries no password.
        parsed = urlsplit(base_url)
        self._auth: httpx.BasicAuth | None = None
        if parsed.username is not None or parsed.password is not None:
            self._auth = httpx.BasicAuth(
                unquote(parsed.username or ""), unquote(parsed.password or "")
            )
            host = parsed.netloc.rsplit("@", 1)[1]
            base_url = parsed._replace(netloc=host).geturl()
        self.base_url = base_url.rstrip("/")
        self._key = _clean_key(api_key)

    def __repr__(self) -> str:
        key = "<set>" if self._key else None
        auth = ", basic_auth=<set>" if self._auth is not None else ""
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={key}{auth})"

    def _http_options(self, timeout: float | httpx.Timeout) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "headers": _headers(self._key),
            "timeout": timeout,
            "auth": self._auth,
        }


class BlnkClient(_ClientBase):
    """A synchronous Blnk API client.

    Args:
        base_url: the server's address, e.g. ``http://localhost:5001``.
        api_key: the ``X-Blnk-Key`` value; ``None`` for servers without auth.
        timeout: seconds, or an ``httpx.Timeout``.
        http_transport: an httpx transport to use instead of the network,
            e.g. an embedded ledger's in-process transport.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.Client(
            **self._http_options(timeout), transport=http_transport
        )

    def call(self, request: ApiRequest) -> Any:
        """Send one request and return its decoded JSON answer.

        Raises:
            LedgerUnavailableError: no answer, or a 5xx, 408, 423 or 429.
            LedgerRejectedError: any other error answer (with subclasses for
                insufficient funds, duplicate references and auth).
        """
        try:
            response = self._http.request(
                request.method, request.path, json=request.body
            )
        except httpx.HTTPError as exc:
            error = _unavailable(request, exc, self._key)
        else:
            return _decode(request, response)
        # Raised outside the handler, so that the error does not chain the
        # HTTP client's exception, whose request carries the API key.
        raise error

    def create_ledger(self, name: str, meta_data: dict[str, Any] | None = None) -> Any:
        """Create a ledger and return it."""
        return self.call(
            ApiRequest("POST", "/ledgers", _drop_none(name=name, meta_data=meta_data))
        )

    def create_balance(
        self,
        ledger_id: str,
        currency: str,
        *,
        indicator: str | None = None,
        meta_data: dict[str, Any] | None = None,
    ) -> Any:
        """Create a balance and return it."""
        body = _drop_none(
            ledger_id=ledger_id,
            currency=currency,
            indicator=indicator,
            meta_data=meta_data,
        )
        return self.call(ApiRequest("POST", "/balances", body))

    def get_balance(self, balance_id: str) -> Any:
        """Return a balance by id."""
        return self.call(ApiRequest("GET", f"/balances/{quote(balance_id, safe='')}"))

    def get_balance_by_indicator(self, indicator: str, currency: str) -> Any:
        """Return an indicator balance, or ``None`` when it does not exist yet."""
        return self.call(indicator_request(indicator, currency))

    def get_transaction_by_reference(self, reference: str) -> Any:
        """Return a transaction by reference, or ``None`` when there is none."""
        return self.call(reference_request(reference))

    def record_transaction(self, body: dict[str, Any]) -> Any:
        """Post one transaction (``POST /transactions``) and return it."""
        reference = body.get("reference")
        references = (reference,) if isinstance(reference, str) else ()
        return self.call(
            ApiRequest("POST", "/transactions", body, references=references)
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> BlnkClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncBlnkClient(_ClientBase):
    """An asynchronous Blnk API client; the arguments match :class:`BlnkClient`.

    One client can serve several event loops, one after another
    (``asyncio.run`` per request) or at once (a loop per thread): each loop
    gets its own connection pool, because httpx connections belong to the
    loop that opened them. The pools of closed loops are dropped when the
    client is next used. A given ``http_transport`` is shared by all loops,
    so pass one that is not tied to a loop, such as an embedded ledger's.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self._options = {
            **self._http_options(timeout),
            "transport": http_transport,
        }
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()

    def _http(self) -> httpx.AsyncClient:
        """Return the HTTP client of the running event loop, creating it once."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._forget_closed_loops()
            http = self._by_loop.get(loop)
            if http is None or http.is_closed:
                http = httpx.AsyncClient(**self._options)
                self._by_loop[loop] = http
        return http

    def _forget_closed_loops(self) -> None:
        # A client's connections hold on to their loop, so the weak keys of
        # closed loops never expire by themselves. Dropping the client lets
        # the garbage collector free the loop and close its sockets; they
        # cannot be closed politely once their loop is closed.
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            del self._by_loop[loop]

    async def call(self, request: ApiRequest) -> Any:
        """Send one request; see :meth:`BlnkClient.call`."""
        try:
            response = await self._http().request(
                request.method, request.path, json=request.body
            )
        except httpx.HTTPError as exc:
            error = _unavailable(request, exc, self._key)
        else:
            return _decode(request, response)
        raise error  # outside the handler; see BlnkClient.call

    async def aclose(self) -> None:
        """Close the HTTP connections of the running event loop.

        Connections of loops that have since closed are released the next
        time any loop uses this client.
        """
        with self._lock:
            http = self._by_loop.pop(asyncio.get_running_loop(), None)
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> AsyncBlnkClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}
