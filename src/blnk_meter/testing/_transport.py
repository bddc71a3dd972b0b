"""httpx transports that send requests straight to an embedded ledger.

No socket is opened: the request goes to ``EmbeddedLedger.handle`` in the same
process. Injected faults apply as they would on the network: an outage raises
``httpx.ConnectError`` and a dropped response raises
``httpx.RemoteProtocolError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import httpx

from ._faults import ADMIN_PATH, Admin, Faults, RawResponse

__all__ = ["AsyncLedgerTransport", "LedgerTransport"]

Handle = Callable[[str, str, Mapping[str, str], bytes], RawResponse]


def _target(request: httpx.Request) -> tuple[str, str]:
    target = request.url.raw_path.decode("ascii")
    return target, target.split("?", 1)[0]


def _response(request: httpx.Request, response: RawResponse) -> httpx.Response:
    status, headers, body = response
    return httpx.Response(status, headers=headers, content=body, request=request)


def _refused(request: httpx.Request) -> httpx.ConnectError:
    return httpx.ConnectError(
        "connection refused: the embedded ledger is down (injected fault)",
        request=request,
    )


def _dropped(request: httpx.Request) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(
        "Server disconnected without sending a response (injected fault).",
        request=request,
    )


class LedgerTransport(httpx.BaseTransport):
    """A synchronous transport to an embedded ledger in this process."""

    def __init__(self, handle: Handle, faults: Faults, admin: Admin) -> None:
        self._handle = handle
        self._faults = faults
        self._admin = admin

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request to the ledger, applying the injected faults."""
        body = request.read()
        target, path = _target(request)
        if path == ADMIN_PATH:
            response, after = self._admin(request.method, request.headers, body)
            if after is not None:
                after()
            return _response(request, response)
        if self._faults.is_down:
            raise _refused(request)
        plan = self._faults.plan(request.method, path)
        if plan.delay:
            time.sleep(plan.delay)
        if plan.response is not None:
            return _response(request, plan.response)
        response = self._handle(request.method, target, request.headers, body)
        if plan.drop:
            raise _dropped(request)
        return _response(request, response)


class AsyncLedgerTransport(httpx.AsyncBaseTransport):
    """An asyncio transport to an embedded ledger in this process.

    The ledger's blocking SQLite work runs in a worker thread so that a busy
    database never stalls the event loop.
    """

    def __init__(self, handle: Handle, faults: Faults, admin: Admin) -> None:
        self._handle = handle
        self._faults = faults
        self._admin = admin

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request to the ledger, applying the injected faults."""
        body = await request.aread()
        target, path = _target(request)
        if path == ADMIN_PATH:
            response, after = self._admin(request.method, request.headers, body)
            if after is not None:
                after()
            return _response(request, response)
        if self._faults.is_down:
            raise _refused(request)
        plan = self._faults.plan(request.method, path)
        if plan.delay:
            await asyncio.sleep(plan.delay)
        if plan.response is not None:
            return _response(request, plan.response)
        response = await asyncio.to_thread(
            self._handle, request.method, target, dict(request.headers), body
        )
        if plan.drop:
            raise _dropped(request)
        return _response(request, response)
