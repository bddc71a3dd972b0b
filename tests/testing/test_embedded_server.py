"""The embedded ledger's HTTP server on 127.0.0.1, spoken to over raw sockets."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from blnk_meter.testing import EmbeddedLedger, LedgerServer


@pytest.fixture
def server(ledger: EmbeddedLedger) -> Iterator[LedgerServer]:
    with ledger.serve() as running:
        yield running


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions that escaped a server thread, which prints them to stderr."""
    errors: list[BaseException | None] = []

    def record(args: threading.ExceptHookArgs) -> None:
        errors.append(args.exc_value)

    monkeypatch.setattr(threading, "excepthook", record)
    return errors


def exchange(server: LedgerServer, request: bytes) -> bytes:
    """Send raw bytes, end the request stream and return all the server sends."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Return the status line, the headers (lower-case names) and the body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize(
    ("framing", "detail"),
    [
        pytest.param(
            b"Content-Length: abc\r\n\r\n{}", "Content-Length 'abc'", id="length-text"
        ),
        pytest.param(
            b"Content-Length: -2\r\n\r\n{}", "Content-Length '-2'", id="length-negative"
        ),
        pytest.param(
            "Content-Length: \u00b2\r\n\r\n{}".encode("latin-1"),
            "Content-Length '\u00b2'",
            id="length-superscript",
        ),
        pytest.param(
            b"Content-Length: 10\r\n\r\n{}", "before its 10 bytes", id="body-short"
        ),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            "chunk size 'zz'",
            id="chunk-size",
        ),
    ],
)
def test_malformed_framing_gets_400(
    server: LedgerServer,
    thread_errors: list[BaseException | None],
    caplog: pytest.LogCaptureFixture,
    framing: bytes,
    detail: str,
) -> None:
    request = b"POST /ledgers HTTP/1.1\r\nHost: ledger\r\n" + framing

    with caplog.at_level(logging.WARNING, logger="blnk_meter.testing"):
        status, headers, body = split_response(exchange(server, request))

    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["connection"] == "close"
    assert json.loads(body)["error_detail"]["code"] == "GEN_BAD_REQUEST"
    assert detail in json.loads(body)["error"]
    assert thread_errors == []
    assert len(caplog.records) == 1
    assert detail in caplog.messages[0]


def test_malformed_request_keeps_server_up(server: LedgerServer) -> None:
    exchange(server, b"POST /ledgers HTTP/1.1\r\nContent-Length: x\r\n\r\n")

    raw = exchange(server, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")

    assert raw.startswith(b"HTTP/1.1 200 OK")


def test_chunked_body_is_read(server: LedgerServer) -> None:
    body = b'{"name": "chunked"}'
    request = (
        b"POST /ledgers HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        + f"{len(body[:5]):x}\r\n".encode()
        + body[:5]
        + b"\r\n"
        + f"{len(body[5:]):x}\r\n".encode()
        + body[5:]
        + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )

    status, _, response = split_response(exchange(server, request))

    assert status == "HTTP/1.1 201 Created"
    assert json.loads(response)["name"] == "chunked"


def test_head_is_404_without_body(server: LedgerServer) -> None:
    raw = exchange(server, b"HEAD /health HTTP/1.1\r\nConnection: close\r\n\r\n")

    status, headers, body = split_response(raw)

    assert status == "HTTP/1.1 404 Not Found"
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == str(len(b"404 page not found"))
    assert body == b""


def test_unknown_method_is_plain_404(server: LedgerServer) -> None:
    raw = exchange(server, b"OPTIONS /ledgers HTTP/1.1\r\nConnection: close\r\n\r\n")

    status, _, body = split_response(raw)

    assert status == "HTTP/1.1 404 Not Found"
    assert body == b"404 page not found"


def test_head_without_key_is_401() -> None:
    with EmbeddedLedger(api_key="server-key") as ledger, ledger.serve() as server:
        raw = exchange(server, b"HEAD /ledgers HTTP/1.1\r\nConnection: close\r\n\r\n")

    status, _, body = split_response(raw)

    assert status == "HTTP/1.1 401 Unauthorized"
    assert body == b""
