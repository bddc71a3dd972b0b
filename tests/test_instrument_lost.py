"""Tests for requests that were sent but whose response never arrived.

The provider may have processed and billed such a request, so the call is
reported as ``response_lost`` instead of being cancelled. The network edge is
an ``httpx.MockTransport`` that fails the way a real connection does, or a
loopback server on 127.0.0.1 where the timing must be real.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

import blnk_meter
from blnk_meter import MemoryTransport, Meter, metered
from blnk_meter.testing._provider import FakeOpenAI
from metering_recorder import RecordingRecorder

MESSAGES: Any = [{"role": "user", "content": "one two three"}]


@pytest.fixture
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the SDK retry at once instead of after half a second."""
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.0)


def failing_client(
    error: type[BaseException], *, answer_after: int | None = None, retries: int = 0
) -> openai.OpenAI:
    """Return a client whose requests fail with ``error``.

    Args:
        error: raised instead of sending each request.
        answer_after: how many requests fail before the fake API responds.
        retries: the SDK's ``max_retries``.
    """
    fake = FakeOpenAI()
    failed = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal failed
        if answer_after is not None and failed >= answer_after:
            return fake.handler(request)
        failed += 1
        if issubclass(error, httpx.RequestError):
            raise error("failed on purpose", request=request)
        raise error()

    http_client = httpx.Client(transport=httpx.MockTransport(handle))
    return fake.sync_client(http_client=http_client, max_retries=retries)


def create_chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


LOST_ERRORS: list[Any] = [
    pytest.param(
        httpx.ReadTimeout, openai.APITimeoutError, "timed out", id="read-timeout"
    ),
    pytest.param(
        httpx.ReadError, openai.APIConnectionError, "connection failed", id="read-error"
    ),
    pytest.param(
        httpx.RemoteProtocolError,
        openai.APIConnectionError,
        "connection failed",
        id="remote-protocol-error",
    ),
]


@pytest.mark.parametrize(("error", "raised_type", "cause"), LOST_ERRORS)
def test_sent_request_failure_reports_response_lost(
    recorder: RecordingRecorder,
    error: type[Exception],
    raised_type: type[Exception],
    cause: str,
) -> None:
    with pytest.raises(openai.APIConnectionError) as raised:
        create_chat(failing_client(error))

    record = recorder.only()
    unmetered = record.unmetered
    assert type(raised.value) is raised_type
    assert record.method == "finish"
    assert unmetered.reason == "response_lost"
    assert isinstance(unmetered.error, error)
    assert raised.value.__cause__ is unmetered.error
    assert "the request to /chat/completions" in unmetered.message
    assert "for model 'gpt-4o-mini'" in unmetered.message
    assert cause in unmetered.message
    assert "sent the request again" not in unmetered.message


UNSENT_ERRORS: list[Any] = [
    pytest.param(httpx.ConnectError, id="connect-error"),
    pytest.param(httpx.ConnectTimeout, id="connect-timeout"),
    pytest.param(httpx.PoolTimeout, id="pool-timeout"),
    pytest.param(httpx.WriteTimeout, id="write-timeout"),
]


@pytest.mark.parametrize("error", UNSENT_ERRORS)
def test_unsent_request_failure_cancels(
    recorder: RecordingRecorder, error: type[Exception]
) -> None:
    with pytest.raises(openai.APIConnectionError) as raised:
        create_chat(failing_client(error))

    assert recorder.only().method == "cancel"
    assert recorder.only().cancel_error is raised.value


def test_interrupted_wait_reports_response_lost(
    recorder: RecordingRecorder,
) -> None:
    with pytest.raises(KeyboardInterrupt):
        create_chat(failing_client(KeyboardInterrupt))

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "response_lost"
    assert isinstance(unmetered.error, KeyboardInterrupt)
    assert "interrupted (KeyboardInterrupt)" in unmetered.message


def test_retried_lost_attempt_is_reported(
    recorder: RecordingRecorder, no_retry_delay: None
) -> None:
    client = failing_client(httpx.ReadTimeout, answer_after=1, retries=1)

    completion = create_chat(client)

    billed, lost = recorder.records
    assert billed.usage.response_id == completion.id
    assert lost.method == "finish"
    assert lost.call == billed.call
    assert lost.unmetered.reason == "response_lost"
    assert isinstance(lost.unmetered.error, httpx.ReadTimeout)
    assert "and the SDK sent the request again" in lost.unmetered.message


def test_each_retried_lost_attempt_is_reported(
    recorder: RecordingRecorder, no_retry_delay: None
) -> None:
    client = failing_client(httpx.ReadTimeout, retries=2)

    with pytest.raises(openai.APITimeoutError):
        create_chat(client)

    last, *retried = recorder.records
    assert len(retried) == 2
    assert last.unmetered.reason == "response_lost"
    assert "sent the request again" not in last.unmetered.message
    for record in retried:
        assert record.unmetered.reason == "response_lost"
        assert "and the SDK sent the request again" in record.unmetered.message


def test_lost_attempt_then_http_error(
    recorder: RecordingRecorder, no_retry_delay: None
) -> None:
    fake = FakeOpenAI()
    attempts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise httpx.ReadTimeout("failed on purpose", request=request)
        return httpx.Response(400, json={"error": {"message": "bad request"}})

    http_client = httpx.Client(transport=httpx.MockTransport(handle))
    client = fake.sync_client(http_client=http_client, max_retries=1)

    with pytest.raises(openai.BadRequestError):
        create_chat(client)

    answered, lost = recorder.records
    assert answered.method == "cancel"
    assert lost.unmetered.reason == "response_lost"


class StalledTransport(httpx.AsyncBaseTransport):
    """Accepts every request and never responds to it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_async_cancelled_wait_reports_response_lost(
    recorder: RecordingRecorder,
) -> None:
    http_client = httpx.AsyncClient(transport=StalledTransport())
    client = FakeOpenAI().async_client(http_client=http_client)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
            timeout=0.05,
        )

    record = recorder.only()
    assert record.method == "afinish"
    assert record.unmetered.reason == "response_lost"
    assert isinstance(record.unmetered.error, asyncio.CancelledError)
    assert "the task waiting for it was cancelled" in record.unmetered.message


async def test_async_read_timeout_reports_response_lost(
    recorder: RecordingRecorder,
) -> None:
    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("failed on purpose", request=request)

    http_client = httpx.AsyncClient(transport=httpx.MockTransport(time_out))
    client = FakeOpenAI().async_client(http_client=http_client)

    with pytest.raises(openai.APITimeoutError):
        await client.responses.create(model="gpt-4o-mini", input="a b")

    record = recorder.only()
    assert record.method == "afinish"
    assert record.unmetered.reason == "response_lost"


# A real socket, through the SDK's default HTTP client ----------------------------


class SilentHandler(BaseHTTPRequestHandler):
    """Reads each request, then waits until the test ends without responding."""

    release: threading.Event

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.release.wait(5)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def silent_server() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (SilentHandler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    release.set()
    server.shutdown()
    server.server_close()


def default_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test", base_url=base_url, timeout=0.2, max_retries=0
    )


def test_loopback_timeout_reports_response_lost(
    recorder: RecordingRecorder, silent_server: str
) -> None:
    with pytest.raises(openai.APITimeoutError):
        create_chat(default_client(silent_server))

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "response_lost"
    assert type(unmetered.error).__name__ == "ReadTimeout"


def unused_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_loopback_refused_connection_cancels(recorder: RecordingRecorder) -> None:
    client = default_client(f"http://127.0.0.1:{unused_port()}/v1")

    with pytest.raises(openai.APIConnectionError):
        create_chat(client)

    assert recorder.only().method == "cancel"


# Through a meter ----------------------------------------------------------------


@pytest.fixture
def memory_meter() -> Iterator[Meter]:
    meter = blnk_meter.configure(Meter(MemoryTransport()))
    yield meter
    blnk_meter.uninstrument()
    blnk_meter.set_default_meter(None)


def test_lost_response_reaches_meter_failures(memory_meter: Meter) -> None:
    client = failing_client(httpx.ReadTimeout)

    with metered(customer="acme"), pytest.raises(openai.APITimeoutError):
        create_chat(client)

    failures = memory_meter.failures
    assert memory_meter.stats.cancelled == 0
    assert memory_meter.stats.unmetered == 1
    assert len(failures) == 1
    assert failures[0].kind == "unmetered"
    assert failures[0].customer == "acme"
    assert failures[0].unmetered is not None
    assert failures[0].unmetered.reason == "response_lost"
