"""Tests for the OpenAI instrumentation: patches, non-stream calls, raw responses.

Every test drives the real SDK against the fake OpenAI API and checks what a
recorder heard. Streams are tested in ``test_instrument_streams.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest

import blnk_meter
from blnk_meter import (
    MemoryTransport,
    Meter,
    _billable,
    _extract,
    _instrument,
    _raw_response,
    _worker,
    metered,
)
from blnk_meter.errors import MissingCustomerError
from blnk_meter.testing._provider import (
    OMIT,
    REPLY,
    FakeOpenAI,
    Scenario,
    count_tokens,
)
from metering_recorder import RecordingRecorder, collect_garbage

MESSAGES: Any = [{"role": "user", "content": "one two three"}]
REPLY_TOKENS = count_tokens(REPLY)


class City(pydantic.BaseModel):
    name: str
    population: int


def install_with(recorder: RecordingRecorder) -> RecordingRecorder:
    _instrument.install(recorder)
    return recorder


@pytest.fixture
def custom_recorder() -> Iterator[Callable[[RecordingRecorder], RecordingRecorder]]:
    yield install_with
    _instrument.uninstall()


# Installing ------------------------------------------------------------------


def patched_attributes() -> dict[str, object]:
    from openai._base_client import AsyncAPIClient, BaseClient, SyncAPIClient
    from openai._legacy_response import LegacyAPIResponse
    from openai._response import APIResponse, AsyncAPIResponse
    from openai._streaming import AsyncStream, Stream

    owners = {
        "SyncAPIClient.request": (SyncAPIClient, "request"),
        "AsyncAPIClient.request": (AsyncAPIClient, "request"),
        "SyncAPIClient._send_request": (SyncAPIClient, "_send_request"),
        "AsyncAPIClient._send_request": (AsyncAPIClient, "_send_request"),
        "BaseClient._process_response_data": (BaseClient, "_process_response_data"),
        "Stream.__stream__": (Stream, "__stream__"),
        "AsyncStream.__stream__": (AsyncStream, "__stream__"),
        "LegacyAPIResponse.parse": (LegacyAPIResponse, "parse"),
        "APIResponse.parse": (APIResponse, "parse"),
        "APIResponse.close": (APIResponse, "close"),
        "AsyncAPIResponse.parse": (AsyncAPIResponse, "parse"),
        "AsyncAPIResponse.read": (AsyncAPIResponse, "read"),
    }
    return {name: vars(owner)[attribute] for name, (owner, attribute) in owners.items()}


def test_install_patches_once(fake: FakeOpenAI) -> None:
    recorder = RecordingRecorder()
    _instrument.install(recorder)
    _instrument.install(recorder)
    try:
        fake.sync_client().responses.create(model="gpt-4o-mini", input="a b")
    finally:
        _instrument.uninstall()

    assert len(recorder.begun) == 1
    assert recorder.only().usage.input_tokens == 2


def test_install_replaces_recorder(fake: FakeOpenAI) -> None:
    first, second = RecordingRecorder(), RecordingRecorder()
    _instrument.install(first)
    _instrument.install(second)
    try:
        fake.sync_client().responses.create(model="gpt-4o-mini", input="a b")
    finally:
        _instrument.uninstall()

    assert first.records == []
    assert second.only().usage.input_tokens == 2


def test_uninstall_restores_sdk(fake: FakeOpenAI) -> None:
    originals = patched_attributes()
    recorder = RecordingRecorder()
    _instrument.install(recorder)
    patched = patched_attributes()

    _instrument.uninstall()
    fake.sync_client().responses.create(model="gpt-4o-mini", input="a b")

    restored = patched_attributes()
    for name, original in originals.items():
        assert patched[name] is not original, name
        assert restored[name] is original, name
    assert _instrument.is_installed() is False
    assert recorder.begun == []


async def test_uninstall_stops_async_metering(fake: FakeOpenAI) -> None:
    recorder = RecordingRecorder()
    _instrument.install(recorder)
    _instrument.uninstall()

    await fake.async_client().responses.create(model="gpt-4o-mini", input="a b")

    assert recorder.begun == []


def test_install_before_openai_import(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from blnk_meter import _billable, _instrument

        class Recorder:
            outcomes = []
            def begin(self, call):
                return call
            def finish(self, token, outcome):
                self.outcomes.append(outcome)

        recorder = Recorder()
        _instrument.install(recorder)
        imported_early = "openai" in sys.modules

        from blnk_meter.testing._provider import FakeOpenAI

        client = FakeOpenAI().sync_client()
        client.responses.create(model="gpt-4o-mini", input="one two")
        usage = recorder.outcomes[0]
        print(json.dumps({
            "imported_early": imported_early,
            "input_tokens": usage.input_tokens,
            "model": usage.model,
        }))
        """
    )
    env = {key: value for key, value in os.environ.items() if "OPENAI" not in key}

    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )

    result = json.loads(completed.stdout)
    assert result["imported_early"] is False
    assert result["input_tokens"] == 2
    assert result["model"] == "gpt-4o-mini-2024-07-18"


# Begin, finish and cancel ----------------------------------------------------


def test_begin_none_leaves_call_alone(
    fake: FakeOpenAI,
    custom_recorder: Callable[[RecordingRecorder], RecordingRecorder],
) -> None:
    recorder = custom_recorder(RecordingRecorder(on_begin=lambda call: False))
    client = fake.sync_client()

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    assert len(recorder.begun) == 1
    assert recorder.records == []
    assert "stream_options" not in fake.requests[-1].body
    assert all(chunk.choices for chunk in chunks)


def refuse(call: object) -> bool:
    raise MissingCustomerError("no customer is in scope; wrap the call in metered()")


def test_begin_error_stops_call(
    fake: FakeOpenAI,
    custom_recorder: Callable[[RecordingRecorder], RecordingRecorder],
) -> None:
    custom_recorder(RecordingRecorder(on_begin=refuse))

    with pytest.raises(MissingCustomerError):
        fake.sync_client().responses.create(model="gpt-4o-mini", input="a")

    assert fake.requests == []


async def test_async_begin_error_stops_call(
    fake: FakeOpenAI,
    custom_recorder: Callable[[RecordingRecorder], RecordingRecorder],
) -> None:
    custom_recorder(RecordingRecorder(on_begin=refuse))

    with pytest.raises(MissingCustomerError):
        await fake.async_client().embeddings.create(
            model="text-embedding-3-small", input="a"
        )

    assert fake.requests == []


def test_begin_failure_sends_call_unmetered(
    fake: FakeOpenAI,
    custom_recorder: Callable[[RecordingRecorder], RecordingRecorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(call: object) -> bool:
        raise RuntimeError("recorder bug")

    recorder = custom_recorder(RecordingRecorder(on_begin=fail))

    with caplog.at_level(logging.ERROR, logger="blnk_meter"):
        response = fake.sync_client().responses.create(model="gpt-4o-mini", input="a")

    assert response.output_text == REPLY
    assert recorder.records == []
    assert "recorder begin() failed" in caplog.text


def test_finish_failure_spares_caller(
    fake: FakeOpenAI,
    custom_recorder: Callable[[RecordingRecorder], RecordingRecorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = custom_recorder(RecordingRecorder(finish_error=RuntimeError("down")))

    with caplog.at_level(logging.ERROR, logger="blnk_meter"):
        response = fake.sync_client().responses.create(model="gpt-4o-mini", input="a")

    assert response.output_text == REPLY
    assert recorder.only().usage.response_id == response.id
    assert "recorder finish() failed" in caplog.text


async def test_async_finish_failure_spares_caller(
    fake: FakeOpenAI,
    custom_recorder: Callable[[RecordingRecorder], RecordingRecorder],
) -> None:
    recorder = custom_recorder(RecordingRecorder(finish_error=RuntimeError("down")))

    response = await fake.async_client().responses.create(
        model="gpt-4o-mini", input="a"
    )

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.response_id == response.id


def test_http_error_cancels_call(fake: FakeOpenAI, recorder: RecordingRecorder) -> None:
    fake.enqueue(Scenario(status_code=500))

    with pytest.raises(openai.InternalServerError) as raised:
        fake.sync_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert recorder.only().method == "cancel"
    assert recorder.only().cancel_error is raised.value


async def test_async_http_error_cancels_call(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(status_code=429))

    with pytest.raises(openai.RateLimitError):
        await fake.async_client().responses.create(model="gpt-4o", input="a")

    assert recorder.only().method == "acancel"


def test_connection_error_cancels_call(recorder: RecordingRecorder) -> None:
    def refuse_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http_client = httpx.Client(transport=httpx.MockTransport(refuse_connection))
    client = FakeOpenAI().sync_client(http_client=http_client)

    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model="gpt-4o-mini", input="a")

    assert isinstance(recorder.only().cancel_error, openai.APIConnectionError)


def test_retried_call_begins_once(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(status_code=503))

    response = fake.sync_client(max_retries=1).responses.create(
        model="gpt-4o-mini", input="a b"
    )

    assert len(fake.requests) == 2
    assert recorder.only().usage.response_id == response.id


SyncCall = Callable[[openai.OpenAI], Any]
AsyncCall = Callable[[openai.AsyncOpenAI], Awaitable[Any]]

# Errors the SDK raises after a successful response ----------------------------

STRICT = {"_strict_response_validation": True}

FAILED_AFTER_RESPONSE: list[Any] = [
    pytest.param(
        Scenario(status="incomplete"),
        {},
        lambda client: client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=City
        ),
        openai.LengthFinishReasonError,
        3,
        id="chat-parse-length",
    ),
    pytest.param(
        Scenario(finish_reason="content_filter"),
        {},
        lambda client: client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=City
        ),
        openai.ContentFilterFinishReasonError,
        3,
        id="chat-parse-content-filter",
    ),
    pytest.param(
        Scenario(),
        {},
        lambda client: client.responses.parse(
            model="gpt-4o-mini", input="a b", text_format=City, max_output_tokens=2
        ),
        pydantic.ValidationError,
        2,
        id="responses-parse-invalid-json",
    ),
    pytest.param(
        Scenario(model=OMIT),
        STRICT,
        lambda client: client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        ),
        openai.APIResponseValidationError,
        3,
        id="strict-validation",
    ),
]


@pytest.mark.parametrize(
    ("scenario", "options", "make_call", "error", "input_tokens"),
    FAILED_AFTER_RESPONSE,
)
def test_error_after_response_is_billed(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    scenario: Scenario,
    options: dict[str, Any],
    make_call: SyncCall,
    error: type[BaseException],
    input_tokens: int,
) -> None:
    fake.enqueue(scenario)

    with pytest.raises(error):
        make_call(fake.sync_client(**options))

    record = recorder.only()
    assert record.method == "finish"
    assert record.usage.input_tokens == input_tokens


@pytest.mark.parametrize(
    ("scenario", "options", "make_call", "error", "input_tokens"),
    FAILED_AFTER_RESPONSE,
)
async def test_async_error_after_response_is_billed(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    scenario: Scenario,
    options: dict[str, Any],
    make_call: AsyncCall,
    error: type[BaseException],
    input_tokens: int,
) -> None:
    fake.enqueue(scenario)

    with pytest.raises(error):
        await make_call(fake.async_client(**options))

    record = recorder.only()
    assert record.method == "afinish"
    assert record.usage.input_tokens == input_tokens


def test_length_error_keeps_response_id(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(status="incomplete"))

    with pytest.raises(openai.LengthFinishReasonError) as raised:
        fake.sync_client().chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=City
        )

    completion = raised.value.completion
    assert completion.usage is not None
    usage = recorder.only().usage
    assert usage.response_id == completion.id
    assert usage.output_tokens == completion.usage.completion_tokens


def test_error_after_response_without_usage(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(status="incomplete", usage=OMIT))

    with pytest.raises(openai.LengthFinishReasonError):
        fake.sync_client().chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=City
        )

    assert recorder.only().method == "finish"
    assert recorder.only().unmetered.reason == "missing_usage"


def gateway_page(request: httpx.Request) -> httpx.Response:
    headers = {"content-type": "text/html", "x-request-id": "req_html"}
    return httpx.Response(200, text="<html>gateway</html>", headers=headers)


def check_non_json_unmetered(recorder: RecordingRecorder) -> None:
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "missing_usage"
    assert unmetered.response_id == "req_html"
    assert "is not valid JSON" in unmetered.message


def test_strict_non_json_response_is_unmetered(recorder: RecordingRecorder) -> None:
    http_client = httpx.Client(transport=httpx.MockTransport(gateway_page))
    client = FakeOpenAI().sync_client(**STRICT, http_client=http_client)

    with pytest.raises(openai.APIResponseValidationError):
        client.responses.create(model="gpt-4o-mini", input="a")

    assert recorder.only().method == "finish"
    check_non_json_unmetered(recorder)


async def test_async_strict_non_json_response_unmetered(
    recorder: RecordingRecorder,
) -> None:
    http_client = httpx.AsyncClient(transport=httpx.MockTransport(gateway_page))
    client = FakeOpenAI().async_client(**STRICT, http_client=http_client)

    with pytest.raises(openai.APIResponseValidationError):
        await client.responses.create(model="gpt-4o-mini", input="a")

    assert recorder.only().method == "afinish"
    check_non_json_unmetered(recorder)


# Plain responses ---------------------------------------------------------------

PLAIN_CALLS: list[Any] = [
    pytest.param(
        lambda client: client.responses.create(model="gpt-4o-mini", input="one two"),
        "responses",
        2,
        id="responses-create",
    ),
    pytest.param(
        lambda client: client.responses.parse(
            model="gpt-4o-mini", input="one two", text_format=City
        ),
        "responses",
        2,
        id="responses-parse",
    ),
    pytest.param(
        lambda client: client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        ),
        "chat.completions",
        3,
        id="chat-create",
    ),
    pytest.param(
        lambda client: client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=City
        ),
        "chat.completions",
        3,
        id="chat-parse",
    ),
    pytest.param(
        lambda client: client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="one two three four"
        ),
        "completions",
        4,
        id="completions",
    ),
    pytest.param(
        lambda client: client.embeddings.create(
            model="text-embedding-3-small", input=["one two", "three"]
        ),
        "embeddings",
        3,
        id="embeddings",
    ),
]


def check_plain_usage(
    recorder: RecordingRecorder,
    result: Any,
    endpoint: str,
    input_tokens: int,
) -> None:
    record = recorder.only()
    usage = record.usage
    assert record.call.endpoint == endpoint
    assert record.call.stream is False
    assert usage.endpoint == endpoint
    assert usage.input_tokens == input_tokens
    assert usage.model == result.model
    assert usage.requested_model == record.call.requested_model
    assert usage.streamed is False
    if endpoint == "embeddings":
        assert usage.output_tokens == 0
        assert usage.response_id == result._request_id
    else:
        assert (
            usage.output_tokens
            == result.usage.to_dict()[
                "output_tokens" if endpoint == "responses" else "completion_tokens"
            ]
        )
        assert usage.response_id == result.id


@pytest.mark.parametrize(("make_call", "endpoint", "input_tokens"), PLAIN_CALLS)
def test_plain_call_is_metered(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    make_call: SyncCall,
    endpoint: str,
    input_tokens: int,
) -> None:
    result = make_call(fake.sync_client())

    check_plain_usage(recorder, result, endpoint, input_tokens)
    assert recorder.only().method == "finish"


@pytest.mark.parametrize(("make_call", "endpoint", "input_tokens"), PLAIN_CALLS)
async def test_async_plain_call_is_metered(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    make_call: AsyncCall,
    endpoint: str,
    input_tokens: int,
) -> None:
    result = await make_call(fake.async_client())

    check_plain_usage(recorder, result, endpoint, input_tokens)
    assert recorder.only().method == "afinish"
    assert recorder.only().call.is_async is True


def test_compact_bills_requested_model(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    compacted = fake.sync_client().responses.compact(model="gpt-4.1", input="a b c")

    usage = recorder.only().usage
    assert recorder.only().call.endpoint == "responses.compact"
    assert usage.model == "gpt-4.1"
    assert usage.response_id == compacted.id
    assert usage.input_tokens == 3
    assert usage.output_tokens == compacted.usage.output_tokens


def test_detailed_usage_is_metered(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    tool_usage = {"web_search": {"num_requests": 2}}
    fake.enqueue(
        Scenario(
            cached_tokens=2,
            reasoning_tokens=5,
            cache_write_tokens=1,
            tool_usage=tool_usage,
        )
    )

    fake.sync_client().responses.create(model="o4-mini", input="a b c")

    usage = recorder.only().usage
    assert usage.model == "o4-mini-2025-04-16"
    assert usage.cached_input_tokens == 2
    assert usage.reasoning_tokens == 5
    assert usage.output_tokens == count_tokens(REPLY) + 5
    assert usage.tool_usage == tool_usage
    assert usage.raw_usage is not None
    assert usage.raw_usage["input_tokens_details"]["cache_write_tokens"] == 1


def test_incomplete_response_is_billed(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    response = fake.sync_client().responses.create(
        model="gpt-4o-mini", input="a", max_output_tokens=3
    )

    assert response.status == "incomplete"
    assert recorder.only().usage.status == "incomplete"
    assert recorder.only().usage.output_tokens == 3


def test_coerced_count_is_invalid(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(usage_patch={"prompt_tokens": "12"}))

    completion = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )

    # The SDK validated the usage loosely and turned "12" into 12.
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "invalid_usage"
    assert unmetered.response_id == completion.id
    assert "usage.prompt_tokens is '12'" in unmetered.message


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"input_tokens": -5}, id="negative"),
        pytest.param({"input_tokens": 7.5}, id="fractional"),
        pytest.param({"output_tokens": None}, id="null"),
        pytest.param({"output_tokens": True}, id="bool"),
    ],
)
def test_invalid_count_is_reported(
    fake: FakeOpenAI, recorder: RecordingRecorder, patch: dict[str, Any]
) -> None:
    fake.enqueue(Scenario(usage_patch=patch))

    fake.sync_client().responses.create(model="gpt-4o-mini", input="a")

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "invalid_usage"
    assert unmetered.raw_usage is not None


@pytest.mark.parametrize("usage", [OMIT, None], ids=["absent", "null"])
def test_missing_usage_is_reported(
    fake: FakeOpenAI, recorder: RecordingRecorder, usage: Any
) -> None:
    fake.enqueue(Scenario(usage=usage))

    response = fake.sync_client().responses.create(model="gpt-4o-mini", input="a")

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "missing_usage"
    assert unmetered.response_id == response.id


def test_response_without_id_uses_request_id(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(include_id=False))

    completion = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )

    assert completion._request_id is not None
    assert recorder.only().usage.response_id == completion._request_id


def test_retrieve_is_not_billed(fake: FakeOpenAI, recorder: RecordingRecorder) -> None:
    client = fake.sync_client()
    created = client.responses.create(model="gpt-4o-mini", input="a b")

    retrieved = client.responses.retrieve(created.id)

    assert retrieved.usage == created.usage
    assert recorder.only().usage.response_id == created.id


def test_background_response_is_reported(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()
    created = client.responses.create(model="gpt-4o-mini", input="a b", background=True)

    retrieved = client.responses.retrieve(created.id)

    unmetered = recorder.only().unmetered
    assert created.status == "queued"
    assert retrieved.usage is not None
    assert unmetered.reason == "missing_usage"
    assert unmetered.response_id == created.id
    assert "created with background=True (status 'queued')" in unmetered.message
    assert "does not meter background responses" in unmetered.message


# Raw responses -----------------------------------------------------------------


def test_raw_response_billed_before_parse(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    raw = fake.sync_client().responses.with_raw_response.create(
        model="gpt-4o-mini", input="a b"
    )

    assert recorder.only().usage.input_tokens == 2
    response = raw.parse()
    raw.parse()
    assert recorder.only().usage.response_id == response.id


async def test_async_raw_response_billed_once(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    raw = await fake.async_client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )

    completion = raw.parse()

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.response_id == completion.id


def test_streaming_response_billed_on_parse(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="a b"
    ) as raw:
        assert recorder.only().is_settled is False
        response = raw.parse()

    assert recorder.only().usage.response_id == response.id


READERS: list[Any] = [
    pytest.param(lambda raw: raw.json(), id="json"),
    pytest.param(lambda raw: raw.text(), id="text"),
    pytest.param(lambda raw: raw.read(), id="read"),
    pytest.param(lambda raw: list(raw.iter_bytes(7)), id="iter_bytes"),
    pytest.param(lambda raw: list(raw.iter_text(7)), id="iter_text"),
    pytest.param(lambda raw: list(raw.iter_lines()), id="iter_lines"),
]


@pytest.mark.parametrize("read_body", READERS)
def test_streaming_response_read_is_billed(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    read_body: Callable[[Any], object],
) -> None:
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as raw:
        read_body(raw)
        assert recorder.only().is_settled is True

    assert recorder.only().usage.input_tokens == 3


def test_streaming_response_exit_reads_rest(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as raw:
        assert recorder.only().is_settled is False
    del raw
    collect_garbage()

    usage = recorder.only().usage
    assert usage.input_tokens == 3
    assert usage.output_tokens == REPLY_TOKENS


def test_streaming_response_close_reads_rest(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.embeddings.with_streaming_response.create(
        model="text-embedding-3-small", input="a b c"
    ) as raw:
        raw.close()
        assert recorder.only().usage.input_tokens == 3
        assert raw.is_closed is True

    assert recorder.only().method == "finish"


PARTIAL_READERS: list[Any] = [
    pytest.param(lambda raw: next(raw.iter_bytes(5)), id="iter_bytes"),
    pytest.param(lambda raw: next(raw.iter_text(5)), id="iter_text"),
    pytest.param(lambda raw: next(raw.iter_lines()), id="iter_lines"),
]


@pytest.mark.parametrize("read_part", PARTIAL_READERS)
def test_streaming_response_partial_read_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder, read_part: Callable[[Any], object]
) -> None:
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as raw:
        read_part(raw)
        assert recorder.only().is_settled is False

    assert recorder.only().usage.input_tokens == 3


def test_dropped_streaming_response_is_drained(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()
    manager = client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    raw = manager.__enter__()

    del raw, manager
    collect_garbage()

    assert recorder.only().usage.input_tokens == 3


def test_streaming_response_close_without_drain(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    _instrument.install(recorder, drain_on_close=False)
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as raw:
        request_id = raw.request_id

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert unmetered.response_id == request_id
    assert f"response with request id {request_id!r}" in unmetered.message
    assert "was closed before any usage arrived" in unmetered.message


def test_billed_streaming_response_frees_text(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as raw:
        lines = list(raw.iter_lines())
        body = _raw_response._open_bodies[raw]

    assert lines
    assert recorder.only().usage.input_tokens == 3
    assert body._text == []


@pytest.fixture
def failing_raw_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading the outcome of a raw body fail."""

    def fail(body: object, interruption: object = None) -> None:
        raise RuntimeError("failed on purpose")

    monkeypatch.setattr(_raw_response.RawBody, "outcome_of_fed", fail)


def test_raw_metering_error_stays_hidden(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    failing_raw_outcome: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as raw:
        lines = list(raw.iter_lines())

    assert lines[-2] == "data: [DONE]"
    assert recorder.only().is_settled is False
    assert "failed to meter a raw response of /chat/completions" in caplog.text


async def test_async_raw_metering_error_hidden(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    failing_raw_outcome: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = fake.async_client()

    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as raw:
        lines = [line async for line in raw.iter_lines()]

    assert lines[-2] == "data: [DONE]"
    assert recorder.only().is_settled is False
    assert "failed to meter a raw response of /chat/completions" in caplog.text


async def test_async_streaming_response_billed(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.embeddings.with_streaming_response.create(
        model="text-embedding-3-small", input="a b c"
    ) as raw:
        chunks = [chunk async for chunk in raw.iter_bytes()]

    assert chunks
    assert recorder.only().method == "afinish"
    assert recorder.only().usage.input_tokens == 3


async def test_async_streaming_response_parse(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="a b"
    ) as raw:
        response = await raw.parse()

    assert recorder.only().usage.response_id == response.id


async def test_async_streaming_response_exit_reads_rest(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ):
        assert recorder.only().is_settled is False

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.output_tokens == REPLY_TOKENS


async def test_async_streaming_response_partial_read_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.embeddings.with_streaming_response.create(
        model="text-embedding-3-small", input="a b c"
    ) as raw:
        async for _chunk in raw.iter_bytes(5):
            break
        assert recorder.only().is_settled is False

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.input_tokens == 3


async def test_async_streaming_response_close_without_drain(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    _instrument.install(recorder, drain_on_close=False)
    client = fake.async_client()

    async with client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="a b"
    ):
        pass

    assert recorder.only().method == "afinish"
    assert recorder.only().unmetered.reason == "stream_interrupted"


def test_async_raw_dropped_at_loop_end(recorder: RecordingRecorder) -> None:
    fake = FakeOpenAI()

    async def drop_raw_response() -> None:
        raw = await fake.async_client().responses.with_raw_response.create(
            model="gpt-4o-mini", input="a b", stream=True
        )
        del raw
        collect_garbage()

    asyncio.run(drop_raw_response())
    assert _worker.wait_idle(5)

    record = recorder.only()
    unmetered = record.unmetered
    assert record.method == "finish"
    assert unmetered.reason == "stream_interrupted"
    assert "its event loop ended before the rest of it" in unmetered.message
    assert unmetered.response_id is not None
    assert unmetered.response_id.startswith("req_")


def test_async_raw_dropped_on_stopped_loop(
    recorder: RecordingRecorder,
) -> None:
    fake = FakeOpenAI()
    loop = asyncio.new_event_loop()
    raw = loop.run_until_complete(
        fake.async_client().chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    # The drain is scheduled on a loop that never runs again.
    del raw
    collect_garbage()
    assert recorder.only().is_settled is False
    loop.close()
    collect_garbage()

    assert recorder.only().method == "finish"
    assert recorder.only().unmetered.reason == "stream_interrupted"


@pytest.fixture
def memory_meter() -> Iterator[Meter]:
    meter = blnk_meter.configure(Meter(MemoryTransport()))
    yield meter
    blnk_meter.uninstrument()
    blnk_meter.set_default_meter(None)


def test_raw_loop_end_reaches_failures(memory_meter: Meter) -> None:
    fake = FakeOpenAI()

    async def drop_raw_response() -> None:
        with metered(customer="acme"):
            raw = await fake.async_client().responses.with_raw_response.create(
                model="gpt-4o-mini", input="a b", stream=True
            )
            del raw
            collect_garbage()

    asyncio.run(drop_raw_response())
    assert _worker.wait_idle(5)

    failures = memory_meter.failures
    assert memory_meter.stats.calls == 1
    assert len(failures) == 1
    assert failures[0].kind == "unmetered"
    assert failures[0].customer == "acme"
    assert "event loop ended" in failures[0].message


# Azure OpenAI ------------------------------------------------------------------

AZURE_DEPLOYMENT = "prod-chat"
AZURE_SERVED_MODEL = "gpt-4o-mini-2024-07-18"


AZURE_OPTIONS: dict[str, Any] = {
    "api_key": "azure-test-key",
    "api_version": "2024-10-21",
    "azure_endpoint": "http://127.0.0.1:9",
    "max_retries": 0,
}


def test_azure_call_is_marked(fake: FakeOpenAI, recorder: RecordingRecorder) -> None:
    fake.enqueue(Scenario(model=AZURE_SERVED_MODEL))
    transport = httpx.MockTransport(fake.handler)
    client = openai.AzureOpenAI(
        **AZURE_OPTIONS, http_client=httpx.Client(transport=transport)
    )

    completion = client.chat.completions.create(
        model=AZURE_DEPLOYMENT, messages=MESSAGES
    )

    record = recorder.only()
    assert record.call.is_azure is True
    assert record.call.requested_model == AZURE_DEPLOYMENT
    assert record.usage.model == AZURE_SERVED_MODEL
    assert record.usage.response_id == completion.id
    assert record.usage.input_tokens == 3


async def test_async_azure_call_is_marked(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(model=AZURE_SERVED_MODEL))
    transport = httpx.MockTransport(fake.handler)
    client = openai.AsyncAzureOpenAI(
        **AZURE_OPTIONS, http_client=httpx.AsyncClient(transport=transport)
    )

    await client.responses.create(model=AZURE_DEPLOYMENT, input="a b")

    record = recorder.only()
    assert record.call.is_azure is True
    assert record.call.is_async is True
    assert record.usage.model == AZURE_SERVED_MODEL


def test_azure_response_without_model_warns(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_extract, "_warned", set())
    fake.enqueue(Scenario(model=OMIT))
    transport = httpx.MockTransport(fake.handler)
    client = openai.AzureOpenAI(
        **AZURE_OPTIONS, http_client=httpx.Client(transport=transport)
    )

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        client.chat.completions.create(model=AZURE_DEPLOYMENT, messages=MESSAGES)

    assert recorder.only().usage.model == AZURE_DEPLOYMENT
    assert f"requested name {AZURE_DEPLOYMENT!r}" in caplog.text
    assert "is an Azure deployment name, not a model" in caplog.text


def test_openai_call_is_not_azure(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.sync_client().embeddings.create(model="text-embedding-3-small", input="a")

    assert recorder.only().call.is_azure is False


# Endpoints that are not metered ------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_billable, "_warned_endpoints", set())


def generic_body(request: httpx.Request) -> httpx.Response:
    body = {"id": "obj_1", "object": "thing", "status": "completed"}
    return httpx.Response(200, json=body, headers={"x-request-id": "req_1"})


UNMETERED_CALLS: list[Any] = [
    pytest.param(
        lambda client: client.decisions.create(
            model="gpt-6-luna", input="a", questions=[]
        ),
        "/decisions",
        id="decisions",
    ),
    pytest.param(
        lambda client: client.beta.threads.create_and_run(assistant_id="asst_1"),
        "/threads/runs",
        id="threads-create-and-run",
    ),
    pytest.param(
        lambda client: client.beta.threads.runs.create(
            thread_id="thread_1", assistant_id="asst_1"
        ),
        "/threads/{thread_id}/runs",
        id="threads-runs-create",
    ),
    pytest.param(
        lambda client: client.beta.threads.runs.submit_tool_outputs(
            run_id="run_1", thread_id="thread_1", tool_outputs=[]
        ),
        "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
        id="threads-runs-submit-tool-outputs",
    ),
    pytest.param(
        lambda client: client.evals.runs.create(
            eval_id="eval_1",
            data_source={"type": "jsonl", "source": {"type": "file_id", "id": "f"}},
        ),
        "/evals/{eval_id}/runs",
        id="evals-runs-create",
    ),
    pytest.param(
        lambda client: client.fine_tuning.alpha.graders.run(
            grader={
                "type": "string_check",
                "name": "exact",
                "input": "a",
                "operation": "eq",
                "reference": "a",
            },
            model_sample="a",
        ),
        "/fine_tuning/alpha/graders/run",
        id="graders-run",
    ),
    pytest.param(
        lambda client: client.beta.agents.sessions.create(
            environment={"type": "cloud"}
        ),
        "/agents/sessions",
        id="agents-sessions-create",
    ),
    pytest.param(
        lambda client: client.beta.agents.automations.invocations.create(
            automation_id="auto_1"
        ),
        "/agents/automations/{automation_id}/invocations",
        id="agents-automations-invoke",
    ),
    pytest.param(
        lambda client: client.beta.chatkit.sessions.create(
            user="user_1", workflow={"id": "wf_1"}
        ),
        "/chatkit/sessions",
        id="chatkit-sessions-create",
    ),
    pytest.param(
        lambda client: client.images.generate(model="gpt-image-1", prompt="a fox"),
        "/images/generations",
        id="images-generate",
    ),
]


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("make_call", "endpoint"), UNMETERED_CALLS)
def test_unmetered_endpoint_warns_once(
    recorder: RecordingRecorder,
    caplog: pytest.LogCaptureFixture,
    make_call: SyncCall,
    endpoint: str,
) -> None:
    http_client = httpx.Client(transport=httpx.MockTransport(generic_body))
    client = FakeOpenAI().sync_client(http_client=http_client)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        make_call(client)
        make_call(client)

    warnings = [
        record
        for record in caplog.records
        if record.getMessage().startswith(f"OpenAI {endpoint} calls cost money")
    ]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert recorder.begun == []


@pytest.mark.usefixtures("fresh_warnings")
def test_free_endpoint_does_not_warn(
    recorder: RecordingRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    http_client = httpx.Client(transport=httpx.MockTransport(generic_body))
    client = FakeOpenAI().sync_client(http_client=http_client)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        client.moderations.create(input="a")
        client.fine_tuning.alpha.graders.validate(
            grader={
                "type": "string_check",
                "name": "exact",
                "input": "a",
                "operation": "eq",
                "reference": "a",
            }
        )

    assert caplog.records == []
    assert recorder.begun == []


@pytest.mark.usefixtures("fresh_warnings")
def test_websocket_connect_is_not_metered(
    fake: FakeOpenAI, recorder: RecordingRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    client = fake.sync_client()

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        client.realtime.connect(model="gpt-realtime")
        client.realtime.connect(model="gpt-realtime")

    warnings = [r for r in caplog.records if "realtime" in r.getMessage()]
    assert len(warnings) == 1
    assert recorder.begun == []
    assert fake.requests == []


@pytest.mark.usefixtures("fresh_warnings")
def test_live_connect_is_not_metered(
    fake: FakeOpenAI, recorder: RecordingRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    client = fake.sync_client()

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        client.live.connect()
        client.live.forks.connect(session_id="sess_1")

    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("OpenAI live calls") for message in messages)
    assert any(message.startswith("OpenAI live forks calls") for message in messages)
    assert recorder.begun == []
    assert fake.requests == []


def test_logs_leave_out_content_and_keys(
    fake: FakeOpenAI, recorder: RecordingRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = "zebra quartz prompt"
    client = fake.sync_client()
    fake.enqueue(
        Scenario(usage_patch={"prompt_tokens": "3"}),
        Scenario(status_code=400),
        Scenario(stream_end="error"),
    )

    with caplog.at_level(logging.DEBUG, logger="blnk_meter"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
        )
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="gpt-4o-mini", input=prompt)
        with pytest.raises(openai.APIError):
            list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": prompt}],
                    stream=True,
                )
            )
        list(client.responses.create(model="gpt-4o-mini", input=prompt, stream=True))

    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("blnk_meter")
    )
    assert "/chat/completions" in logged
    assert prompt not in logged
    assert REPLY not in logged
    assert "The fake provider" not in logged
    assert client.api_key not in logged
    assert len(recorder.records) == 4
