"""A real HTTP/1.1 server in front of an embedded ledger, in background threads.

One thread accepts connections and one thread serves each connection. An
injected outage closes the listening socket, so clients get "connection
refused", and binds the same port again when the outage ends.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from ._apierror import ApiError, error_body
from ._faults import ADMIN_PATH, JSON_HEADERS, Admin, Faults, RawResponse
from ._requests import MAX_BODY_BYTES

__all__ = ["LedgerServer"]

logger = logging.getLogger(__name__)

Handle = Callable[[str, str, Mapping[str, str], bytes], RawResponse]

_MAX_LINE = 65_536
"""Maximum length of a chunk-size or trailer line, in bytes."""

_READ_SIZE = 1 << 20
"""Maximum number of body bytes read in one call."""

_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

_OUTAGE_SWITCH_TIMEOUT = 5.0
"""Seconds ``down()``/``up()`` wait for the accept thread to apply the change."""


class _FramingError(Exception):
    """The request's Content-Length or chunked encoding cannot be read."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server: LedgerServer  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        # Bytes past the limit are read, to keep the connection in step, but
        # not kept: the ledger rejects any body longer than MAX_BODY_BYTES.
        self._room = MAX_BODY_BYTES + 1
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunks()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not _DIGITS.fullmatch(length.strip()):
            raise _FramingError(f"Content-Length {length!r} is not a byte count")
        return self._read_exact(int(length))

    def _read_exact(self, length: int) -> bytes:
        # Bounded reads, so a huge declared length cannot allocate it at once.
        parts: list[bytes] = []
        remaining = length
        while remaining:
            part = self.rfile.read(min(remaining, _READ_SIZE))
            if not part:
                raise _FramingError(f"the body ended before its {length} bytes")
            if self._room > 0:
                parts.append(part[: self._room])
                self._room -= len(parts[-1])
            remaining -= len(part)
        return b"".join(parts)

    def _read_chunks(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(_MAX_LINE)
            size = line.split(b";")[0].strip()
            if not _HEX.fullmatch(size):
                text = size.decode("latin-1")
                raise _FramingError(f"chunk size {text!r} is not hexadecimal")
            length = int(size, 16)
            if length == 0:
                self._skip_trailers()
                return b"".join(chunks)
            chunks.append(self._read_exact(length))
            self.rfile.readline(_MAX_LINE)

    def _skip_trailers(self) -> None:
        while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
            pass

    def _reject_framing(self, error: _FramingError) -> None:
        # The end of the body is unknown, so the connection cannot carry
        # another request. Go's server rejects a bad Content-Length with a
        # plain-text 400 before Blnk sees it, but this keeps Blnk's JSON shape.
        logger.warning(
            "malformed request %s %s from %s: %s",
            self.command,
            self.path.split("?", 1)[0],
            self.address_string(),
            error,
        )
        self.close_connection = True
        body = error_body(ApiError("GEN_BAD_REQUEST", f"malformed request: {error}"))
        headers = {**JSON_HEADERS, "Connection": "close"}
        self._send((400, headers, body))

    def _send(self, response: RawResponse) -> None:
        status, headers, body = response
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A response to HEAD announces the body's length but carries no body.
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _serve_admin(self, body: bytes) -> None:
        headers = dict(self.headers.items())
        response, after = self.server.admin(self.command, headers, body)
        if after is not None:
            # Go down before responding, so the client's next request is
            # refused, but keep this connection open for the response.
            self.server.exempt.connection = self.connection
            after()
            self.server.exempt.connection = None
            self.close_connection = True
            response = (
                response[0],
                {**response[1], "Connection": "close"},
                response[2],
            )
        self._send(response)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _FramingError as exc:
            self._reject_framing(exc)
            return
        path = self.path.split("?", 1)[0]
        if path == ADMIN_PATH:
            self._serve_admin(body)
            return
        faults = self.server.faults
        if faults.is_down:
            self.close_connection = True
            return

        plan = faults.plan(self.command, path)
        if plan.delay:
            time.sleep(plan.delay)
        if plan.response is not None:
            self._send(plan.response)
            return

        headers = dict(self.headers.items())
        response = self.server.handle(self.command, self.path, headers, body)
        if plan.drop:
            self.close_connection = True
            return
        self._send(response)

    def __getattr__(self, name: str) -> Any:
        # The base class returns 501 for a method without a do_<METHOD>
        # handler. Gin returns 404 for a method without a route, such as HEAD
        # on a GET path, so every method goes to the ledger's router.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)


class LedgerServer:
    """The HTTP server of an embedded ledger, already listening.

    Use :meth:`EmbeddedLedger.serve` to start one. Usable as a context
    manager that stops it.

    Attributes:
        host: the address it listens on.
        port: the port it listens on (chosen by the OS when 0 was asked).
        faults: the faults it applies, shared with the ledger.
    """

    def __init__(
        self, handle: Handle, faults: Faults, admin: Admin, host: str, port: int
    ) -> None:
        self.handle = handle
        self.faults = faults
        self.admin = admin
        self.host = host
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = self._bind(port)
        self.port: int = self._listener.getsockname()[1]
        self._want_listening = not faults.is_down
        if not self._want_listening:
            self._listener.close()
            self._listener = None
        self._switched = threading.Event()
        self.exempt = threading.local()
        self._spared: socket.socket | None = None
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._unsubscribe = faults.subscribe(self._on_outage)
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"embedded-ledger-{self.port}", daemon=True
        )
        self._thread.start()
        logger.debug("embedded ledger HTTP server listening on %s", self.url)

    def __repr__(self) -> str:
        return f"LedgerServer(url={self.url!r})"

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:5001``."""
        return f"http://{self.host}:{self.port}"

    def _bind(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        return listener

    def _wake(self) -> None:
        self._wake_write.send(b"x")

    def _on_outage(self, is_down: bool) -> None:
        self._spared = getattr(self.exempt, "connection", None)
        self._switched.clear()
        self._want_listening = not is_down
        self._wake()
        if not self._switched.wait(_OUTAGE_SWITCH_TIMEOUT):
            logger.error("embedded ledger server did not apply the outage change")

    def _apply_outage(self) -> None:
        if not self._want_listening and self._listener is not None:
            self._listener.close()
            self._listener = None
            self._close_connections(spare=self._spared)
        elif self._want_listening and self._listener is None:
            try:
                self._listener = self._bind(self.port)
            except OSError as exc:
                logger.error("port %d could not be bound again: %s", self.port, exc)
        self._switched.set()

    def _close_connections(self, spare: socket.socket | None = None) -> None:
        with self._lock:
            connections = [c for c in self._connections if c is not spare]
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            waitables = [self._wake_read]
            if self._listener is not None:
                waitables.append(self._listener)
            ready, _, _ = select.select(waitables, [], [])
            if self._wake_read in ready:
                self._wake_read.recv(4096)
                self._apply_outage()
                continue
            if self._listener is not None:
                connection, address = self._listener.accept()
                threading.Thread(
                    target=self._serve_connection,
                    args=(connection, address),
                    daemon=True,
                ).start()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _serve_connection(self, connection: socket.socket, address: Any) -> None:
        # Headers and body leave in two writes. Without TCP_NODELAY, Nagle's
        # algorithm waits for the client's delayed ACK (about 40 ms on Linux).
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections.add(connection)
        try:
            _Handler(connection, address, self)  # type: ignore[arg-type]
        except OSError as exc:
            logger.debug("connection from %s ended: %s", address, exc)
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()

    def stop(self) -> None:
        """Stop accepting, close open connections and wait for the threads."""
        if self._stopping.is_set():
            return
        self._unsubscribe()
        self._stopping.set()
        self._wake()
        self._thread.join(_OUTAGE_SWITCH_TIMEOUT)
        self._close_connections()
        self._wake_read.close()
        self._wake_write.close()
        logger.debug("embedded ledger HTTP server on %s stopped", self.url)

    def __enter__(self) -> LedgerServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
