"""A fake OpenAI API that serves the real SDK offline, for tests and demos.

:class:`FakeOpenAI` serves the endpoints blnk_meter meters (Responses,
compaction, Chat Completions, legacy Completions, Embeddings) plus a few it
does not meter, through ``httpx.MockTransport``, so no socket is ever opened.
Token counts follow a fixed rule, so tests can predict them:

- input tokens are the whitespace-separated words of the request's text
  (``instructions``, ``input``, ``messages``, ``prompt``), see
  :func:`count_tokens`;
- output tokens are the words of the reply (:data:`REPLY` unless the request
  asks for a JSON schema), cut to the request's maximum, times ``n``, plus
  the scenario's reasoning tokens.

A :class:`Scenario` bends one answer into an edge case: a replaced or broken
usage object, an incomplete or failed response, an error event, a stream cut
short, cached and reasoning tokens, hosted-tool usage or an HTTP error.

A Responses request with ``background=True`` is answered ``queued`` and
without usage, and a retrieve of it returns it completed, with usage.

Azure OpenAI clients are served too. Their paths start with ``/openai`` and
name the deployment (``/openai/deployments/{name}/chat/completions``), and
the fake answers them as the same endpoints without a deployment.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from ._provider_bodies import (
    AUTO,
    OMIT,
    REPLY,
    Reply,
    Scenario,
    count_tokens,
    embedding_vector,
    put_field,
    served_model,
    text_of_output,
)
from ._provider_streams import (
    Event,
    chat_chunks,
    completion_chunks,
    response_events,
    sse_bytes,
)

__all__ = [
    "AUTO",
    "FAKE_API_KEY",
    "FAKE_BASE_URL",
    "OMIT",
    "REPLY",
    "FakeOpenAI",
    "FakeRequest",
    "Scenario",
    "count_tokens",
    "served_model",
]

FAKE_API_KEY = "sk-test-not-a-real-key"
"""The API key of the fake clients. The fake provider accepts any key."""

FAKE_BASE_URL = "http://127.0.0.1:9/v1"
"""The base URL of the fake clients. The mock transport responds before any
connection to it is attempted."""


@dataclass(frozen=True)
class FakeRequest:
    """A request the fake provider received, without its headers.

    Attributes:
        method: the HTTP method.
        path: the endpoint's path, e.g. ``/chat/completions``, without the
            ``/v1`` prefix or Azure's ``/openai`` and deployment prefix.
        body: the decoded JSON body, or ``None`` for other bodies.
        query: the query parameters.
    """

    method: str
    path: str
    body: Any
    query: Mapping[str, str] = field(default_factory=dict)


class FakeOpenAI:
    """A fake OpenAI API for ``httpx.MockTransport``.

    Args:
        default: the scenario of requests for which none was queued.

    Example::

        fake = FakeOpenAI()
        client = fake.sync_client()
        fake.enqueue(Scenario(status="incomplete"))
        client.responses.create(model="gpt-4o-mini", input="Hello there")
    """

    def __init__(self, default: Scenario | None = None) -> None:
        self.default = default or Scenario()
        self.requests: list[FakeRequest] = []
        """Every request received, oldest first."""
        self._queue: deque[Scenario] = deque()
        self._responses: dict[str, tuple[dict[str, Any], Scenario]] = {}
        self._lock = threading.Lock()

    def enqueue(self, *scenarios: Scenario) -> None:
        """Use ``scenarios`` for the next requests, one each, in order."""
        with self._lock:
            self._queue.extend(scenarios)

    def sync_client(self, **kwargs: Any) -> openai.OpenAI:
        """Return an ``openai.OpenAI`` client served by this fake.

        Args:
            kwargs: client options that replace the defaults (a dummy API
                key, :data:`FAKE_BASE_URL`, no retries, the mock transport).
        """
        options: dict[str, Any] = {
            "api_key": FAKE_API_KEY,
            "base_url": FAKE_BASE_URL,
            "max_retries": 0,
            **kwargs,
        }
        if "http_client" not in options:
            options["http_client"] = httpx.Client(
                transport=httpx.MockTransport(self.handler)
            )
        return openai.OpenAI(**options)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """Return an ``openai.AsyncOpenAI`` client served by this fake.

        Args:
            kwargs: client options that replace the defaults, as for
                :meth:`sync_client`.
        """
        options: dict[str, Any] = {
            "api_key": FAKE_API_KEY,
            "base_url": FAKE_BASE_URL,
            "max_retries": 0,
            **kwargs,
        }
        if "http_client" not in options:
            transport = httpx.MockTransport(self.handler)
            options["http_client"] = httpx.AsyncClient(transport=transport)
        return openai.AsyncOpenAI(**options)

    def handler(self, request: httpx.Request) -> httpx.Response:
        """Respond to one request, as the handler of ``httpx.MockTransport``."""
        path = _endpoint_path(request.url.path)
        body = _json_body(request)
        with self._lock:
            self.requests.append(
                FakeRequest(request.method, path, body, dict(request.url.params))
            )
            scenario = self._queue.popleft() if self._queue else self.default
        exchange = _Exchange(request, path, body, scenario)
        if scenario.status_code != 200:
            return exchange.error(scenario.status_code)
        route = self._route(request.method, path)
        if route is None:
            return exchange.error(404, f"Unknown request URL: POST {path}.")
        return route(exchange)

    def _route(
        self, method: str, path: str
    ) -> Callable[[_Exchange], httpx.Response] | None:
        if method == "GET" and path.startswith("/responses/"):
            return self._retrieve_response
        routes: dict[str, Callable[[_Exchange], httpx.Response]] = {
            "/responses": self._create_response,
            "/responses/compact": _compact,
            "/chat/completions": _chat,
            "/completions": _completion,
            "/embeddings": _embeddings,
            "/images/generations": _image,
            "/audio/speech": _speech,
        }
        return routes.get(path) if method == "POST" else None

    def _create_response(self, exchange: _Exchange) -> httpx.Response:
        reply = Reply(exchange.body, exchange.scenario, max_key="max_output_tokens")
        response = reply.response(exchange.body)
        with self._lock:
            self._responses[response.get("id", "")] = (response, exchange.scenario)
        if exchange.body.get("stream") is True:
            return exchange.stream(
                response_events(response, reply.words, exchange.scenario)
            )
        if exchange.body.get("background") is True:
            # The real API responds at once and reports the usage only to a
            # later retrieve, once the response is done. The fake is done at once.
            return exchange.json({**response, "status": "queued", "usage": None})
        return exchange.json(response)

    def _retrieve_response(self, exchange: _Exchange) -> httpx.Response:
        response_id = exchange.path.rsplit("/", 1)[-1]
        with self._lock:
            stored = self._responses.get(response_id)
        if stored is None:
            return exchange.error(404, f"No response found with id '{response_id}'.")
        response, created_with = stored
        query = exchange.request.url.params
        if query.get("stream") != "true":
            return exchange.json(response)
        words = text_of_output(response).split(" ")
        after = int(query.get("starting_after", "-1"))
        events = [
            event
            for event in response_events(response, words, created_with)
            if event[1]["sequence_number"] > after
        ]
        return exchange.stream(events)


class _ChunkStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body sent in chunks, which may end in a connection error.

    Like a real connection, it delivers nothing more once it is closed:
    reading on raises ``httpx.ReadError``.
    """

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self._chunks = chunks
        self._error = error
        self._is_closed = False

    def _pieces(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._is_closed:
                raise httpx.ReadError("the fake connection was closed")
            yield chunk
        if self._error is not None:
            raise self._error

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._pieces():
            yield chunk

    def close(self) -> None:
        self._is_closed = True

    async def aclose(self) -> None:
        self._is_closed = True


class _Exchange:
    """One request and the helpers that build the response to it."""

    def __init__(
        self, request: httpx.Request, path: str, body: Any, scenario: Scenario
    ) -> None:
        self.request = request
        self.path = path
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}
        self.scenario = scenario
        self.headers: dict[str, str] = {}
        if scenario.include_request_id:
            self.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"

    def json(self, data: Any, status: int = 200) -> httpx.Response:
        """Respond with JSON that the client reads as over a real connection."""
        return httpx.Response(
            status,
            headers={**self.headers, "content-type": "application/json"},
            stream=_ChunkStream([json.dumps(data).encode()]),
        )

    def stream(self, events: list[Event]) -> httpx.Response:
        """Respond with server-sent events, one chunk each."""
        error = None
        if self.scenario.stream_end in ("disconnect", "late_disconnect"):
            error = httpx.ReadError("the fake provider dropped the connection")
        return httpx.Response(
            200,
            headers={**self.headers, "content-type": "text/event-stream"},
            stream=_ChunkStream(sse_bytes(events), error),
        )

    def error(self, status: int, message: str | None = None) -> httpx.Response:
        """Respond with an OpenAI error body."""
        kind = _ERROR_TYPES.get(status, "server_error")
        error = {
            "message": message or f"The fake provider answered with status {status}.",
            "type": kind,
            "param": None,
            "code": kind,
        }
        # The SDK waits retry-after-ms before a retry, so retries stay fast.
        self.headers["retry-after-ms"] = "1"
        return self.json({"error": error}, status)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def _endpoint_path(url_path: str) -> str:
    """Return the endpoint part of an OpenAI or Azure OpenAI request path."""
    path = url_path.removeprefix("/openai").removeprefix("/v1")
    if path.startswith("/deployments/"):
        # Azure: /deployments/{deployment}/chat/completions
        path = "/" + path.removeprefix("/deployments/").partition("/")[2]
    return path


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content) if request.content else None
    except ValueError:
        return None


def _compact(exchange: _Exchange) -> httpx.Response:
    return exchange.json(
        Reply(exchange.body, exchange.scenario, max_key=None).compacted()
    )


def _chat(exchange: _Exchange) -> httpx.Response:
    body, scenario = exchange.body, exchange.scenario
    reply = Reply(body, scenario, max_key="max_completion_tokens")
    completion = reply.chat_completion()
    if body.get("stream") is True:
        return exchange.stream(chat_chunks(completion, reply.words, body, scenario))
    return exchange.json(completion)


def _completion(exchange: _Exchange) -> httpx.Response:
    body, scenario = exchange.body, exchange.scenario
    reply = Reply(body, scenario, max_key="max_tokens")
    completion = reply.text_completion()
    if body.get("stream") is True:
        return exchange.stream(
            completion_chunks(completion, reply.words, body, scenario)
        )
    return exchange.json(completion)


def _embeddings(exchange: _Exchange) -> httpx.Response:
    body, scenario = exchange.body, exchange.scenario
    inputs = body.get("input")
    texts = (
        [inputs] if isinstance(inputs, str) else [str(text) for text in inputs or []]
    )
    tokens = sum(count_tokens(text) for text in texts)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": embedding_vector(text, body),
        }
        for index, text in enumerate(texts)
    ]
    result: dict[str, Any] = {"object": "list", "data": data}
    put_field(result, "model", scenario.model, served_model(str(body.get("model"))))
    usage = {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        **(scenario.usage_patch or {}),
    }
    put_field(result, "usage", scenario.usage, usage)
    return exchange.json(result)


def _image(exchange: _Exchange) -> httpx.Response:
    tokens = count_tokens(str(exchange.body.get("prompt", "")))
    image_tokens = 1056
    result = {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(b"fake image").decode()}],
        "usage": {
            "input_tokens": tokens,
            "output_tokens": image_tokens,
            "total_tokens": tokens + image_tokens,
            "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0},
        },
    }
    return exchange.json(result)


def _speech(exchange: _Exchange) -> httpx.Response:
    headers = {**exchange.headers, "content-type": "audio/mpeg"}
    return httpx.Response(200, content=b"ID3fake-audio", headers=headers)
