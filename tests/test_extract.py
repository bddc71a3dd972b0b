"""Tests for reading usage from response bodies, SDK objects and streams."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from blnk_meter import _extract
from blnk_meter._extract import as_document, outcome_from_body
from blnk_meter._stream_usage import (
    Interruption,
    SseParser,
    StreamUsage,
    outcome_from_bytes,
)
from blnk_meter._usage import Endpoint, ProviderCall, UnmeteredCall, Usage
from blnk_meter.errors import InvalidUsageError, MissingUsageError

PATHS: dict[Endpoint, str] = {
    "responses": "/responses",
    "responses.compact": "/responses/compact",
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


def make_call(
    endpoint: Endpoint = "chat.completions",
    *,
    model: str | None = "gpt-4o-mini",
    stream: bool = False,
) -> ProviderCall:
    return ProviderCall(
        endpoint=endpoint,
        method="POST",
        path=PATHS[endpoint],
        requested_model=model,
        stream=stream,
        is_async=False,
    )


def response_body(usage: Any = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-4o-2024-08-06",
        "status": "completed",
        "output": [],
        "usage": usage
        if usage is not None
        else {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 7},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 30},
            "total_tokens": 170,
        },
    }
    body.update(fields)
    return body


def chat_body(usage: Any = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": usage
        if usage is not None
        else {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    body.update(fields)
    return body


def expect_usage(outcome: object) -> Usage:
    assert isinstance(outcome, Usage), outcome
    return outcome


def expect_unmetered(outcome: object) -> UnmeteredCall:
    assert isinstance(outcome, UnmeteredCall), outcome
    return outcome


def test_responses_body_reads_every_count() -> None:
    usage = expect_usage(
        outcome_from_body(response_body(), make_call("responses"), request_id="req_9")
    )

    assert usage.endpoint == "responses"
    assert usage.model == "gpt-4o-2024-08-06"
    assert usage.requested_model == "gpt-4o-mini"
    assert usage.response_id == "resp_1"
    assert usage.input_tokens == 120
    assert usage.cached_input_tokens == 20
    assert usage.output_tokens == 50
    assert usage.reasoning_tokens == 30
    assert usage.status == "completed"
    assert usage.streamed is False


def test_raw_usage_keeps_cache_writes() -> None:
    body = response_body()

    usage = expect_usage(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert usage.raw_usage == body["usage"]
    assert usage.raw_usage is not body["usage"]
    assert usage.raw_usage is not None
    assert usage.raw_usage["input_tokens_details"]["cache_write_tokens"] == 7


def test_responses_body_keeps_tool_usage() -> None:
    tool_usage = {"web_search": {"num_requests": 2}}
    body = response_body(tool_usage=tool_usage)

    usage = expect_usage(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert usage.tool_usage == tool_usage


def test_chat_body_reads_every_count() -> None:
    usage = expect_usage(outcome_from_body(chat_body(), make_call(), request_id=None))

    assert usage.model == "gpt-4o-mini-2024-07-18"
    assert usage.response_id == "chatcmpl-1"
    assert usage.input_tokens == 12
    assert usage.cached_input_tokens == 4
    assert usage.output_tokens == 5
    assert usage.reasoning_tokens == 2
    assert usage.status is None


def test_embeddings_body_has_no_output() -> None:
    body = {
        "object": "list",
        "data": [],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }

    usage = expect_usage(
        outcome_from_body(body, make_call("embeddings"), request_id="req_emb")
    )

    assert usage.input_tokens == 9
    assert usage.output_tokens == 0
    assert usage.response_id == "req_emb"


def test_compacted_body_bills_requested_model(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_extract, "_warned", set())
    body = response_body()
    del body["model"]
    call = make_call("responses.compact", model="gpt-4.1")

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        usage = expect_usage(outcome_from_body(body, call, request_id=None))

    assert usage.model == "gpt-4.1"
    assert "names no model" in caplog.text


@pytest.mark.parametrize(
    ("model_type", "body", "endpoint"),
    [
        pytest.param(Response, response_body(), "responses", id="response"),
        pytest.param(ChatCompletion, chat_body(), "chat.completions", id="chat"),
        pytest.param(
            Completion,
            chat_body(object="text_completion", id="cmpl-1"),
            "completions",
            id="completion",
        ),
        pytest.param(
            CreateEmbeddingResponse,
            {
                "object": "list",
                "data": [],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            },
            "embeddings",
            id="embeddings",
        ),
    ],
)
def test_sdk_object_reads_like_raw_body(
    model_type: Any, body: dict[str, Any], endpoint: Endpoint
) -> None:
    call = make_call(endpoint)

    from_raw = outcome_from_body(body, call, request_id="req_1")
    from_sdk = outcome_from_body(model_type.construct(**body), call, request_id="req_1")

    assert from_sdk == from_raw
    assert isinstance(from_sdk, Usage)


def test_as_document_leaves_unsent_fields_out() -> None:
    completion = ChatCompletion.construct(**chat_body(usage={"prompt_tokens": 3}))

    document = as_document(completion)

    assert isinstance(document, dict)
    assert document["usage"] == {"prompt_tokens": 3}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("prompt_tokens", None, id="null-input"),
        pytest.param("prompt_tokens", -5, id="negative-input"),
        pytest.param("prompt_tokens", 7.5, id="fractional-input"),
        pytest.param("prompt_tokens", 12.0, id="float-input"),
        pytest.param("prompt_tokens", "12", id="string-input"),
        pytest.param("prompt_tokens", True, id="bool-input"),
        pytest.param("completion_tokens", -1, id="negative-output"),
        pytest.param("completion_tokens", "5", id="string-output"),
    ],
)
def test_invalid_count_is_not_billed(field: str, value: Any) -> None:
    body = chat_body()
    body["usage"][field] = value

    unmetered = expect_unmetered(outcome_from_body(body, make_call(), request_id=None))

    assert unmetered.reason == "invalid_usage"
    assert isinstance(unmetered.error, InvalidUsageError)
    assert "'chatcmpl-1'" in unmetered.message
    assert f"usage.{field}" in unmetered.message
    assert repr(value) in unmetered.message
    assert unmetered.raw_usage == body["usage"]
    assert unmetered.error.response_id == "chatcmpl-1"


@pytest.mark.parametrize(
    ("details", "key", "value"),
    [
        pytest.param("prompt_tokens_details", "cached_tokens", None, id="null-cached"),
        pytest.param("prompt_tokens_details", "cached_tokens", -2, id="negative"),
        pytest.param("prompt_tokens_details", "cached_tokens", False, id="bool"),
        pytest.param(
            "completion_tokens_details", "reasoning_tokens", "2", id="string-reasoning"
        ),
    ],
)
def test_invalid_breakdown_is_not_billed(details: str, key: str, value: Any) -> None:
    body = chat_body()
    body["usage"][details][key] = value

    unmetered = expect_unmetered(outcome_from_body(body, make_call(), request_id=None))

    assert unmetered.reason == "invalid_usage"
    assert f"usage.{details}.{key}" in unmetered.message


def test_missing_count_is_not_billed() -> None:
    body = response_body()
    del body["usage"]["output_tokens"]

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert unmetered.reason == "invalid_usage"
    assert "usage.output_tokens is missing" in unmetered.message


def test_non_object_usage_is_invalid() -> None:
    unmetered = expect_unmetered(
        outcome_from_body(chat_body(usage="lots"), make_call(), request_id=None)
    )

    assert unmetered.reason == "invalid_usage"
    assert "'lots'" in unmetered.message


def test_cached_above_input_is_rejected() -> None:
    body = chat_body()
    body["usage"]["prompt_tokens_details"]["cached_tokens"] = 13

    unmetered = expect_unmetered(outcome_from_body(body, make_call(), request_id=None))

    assert unmetered.reason == "invalid_usage"
    assert "cached_tokens (13) exceeds usage.prompt_tokens (12)" in unmetered.message


def test_reasoning_above_output_is_rejected() -> None:
    body = response_body()
    body["usage"]["output_tokens_details"]["reasoning_tokens"] = 51

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert unmetered.reason == "invalid_usage"
    assert "reasoning_tokens (51) exceeds usage.output_tokens (50)" in unmetered.message


@pytest.mark.parametrize("details", [None, "absent"], ids=["null", "absent"])
def test_absent_breakdown_counts_zero(details: str | None) -> None:
    usage_object: dict[str, Any] = {"prompt_tokens": 8, "completion_tokens": 3}
    if details is None:
        usage_object["prompt_tokens_details"] = None
        usage_object["completion_tokens_details"] = None

    usage = expect_usage(
        outcome_from_body(chat_body(usage=usage_object), make_call(), request_id=None)
    )

    assert usage.cached_input_tokens == 0
    assert usage.reasoning_tokens == 0


@pytest.mark.parametrize("usage_value", ["absent", None], ids=["absent", "null"])
def test_body_without_usage_is_missing(usage_value: str | None) -> None:
    body = chat_body()
    if usage_value == "absent":
        del body["usage"]
    else:
        body["usage"] = None

    unmetered = expect_unmetered(outcome_from_body(body, make_call(), request_id=None))

    assert unmetered.reason == "missing_usage"
    assert unmetered.response_id == "chatcmpl-1"
    assert unmetered.model == "gpt-4o-mini-2024-07-18"


def test_non_object_body_is_missing() -> None:
    unmetered = expect_unmetered(
        outcome_from_body("plain text", make_call(), request_id="req_7")
    )

    assert unmetered.reason == "missing_usage"
    assert unmetered.response_id == "req_7"


def test_missing_usage_error_names_response() -> None:
    body = chat_body()
    body["usage"] = None

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call(), request_id="req_9")
    )

    error = unmetered.error
    assert isinstance(error, MissingUsageError)
    assert error.response_id == "chatcmpl-1"
    assert error.raw_usage is None
    assert "response 'chatcmpl-1' from /chat/completions" in str(error)
    assert str(error) == unmetered.message


def test_non_object_body_names_request() -> None:
    unmetered = expect_unmetered(
        outcome_from_body(["a"], make_call(), request_id="req_7")
    )

    error = unmetered.error
    assert isinstance(error, MissingUsageError)
    assert error.response_id == "req_7"
    assert "request id 'req_7' from /chat/completions" in str(error)


def test_background_response_names_background() -> None:
    body = response_body(background=True, status="queued")
    body["usage"] = None

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert unmetered.reason == "missing_usage"
    assert unmetered.response_id == "resp_1"
    assert "background=True" in unmetered.message
    assert "status 'queued'" in unmetered.message
    assert "does not meter background responses" in unmetered.message
    assert isinstance(unmetered.error, MissingUsageError)


def test_foreground_response_does_not_name_background() -> None:
    body = response_body(background=False)
    body["usage"] = None

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert "background" not in unmetered.message


def test_body_without_id_uses_request_id() -> None:
    body = chat_body()
    del body["id"]

    usage = expect_usage(outcome_from_body(body, make_call(), request_id="req_abc"))

    assert usage.response_id == "req_abc"


def test_body_without_any_id_gets_local_id(caplog: pytest.LogCaptureFixture) -> None:
    body = chat_body()
    del body["id"]

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        first = expect_usage(outcome_from_body(body, make_call(), request_id=None))
        second = expect_usage(outcome_from_body(body, make_call(), request_id=None))

    assert first.response_id.startswith("local-")
    assert second.response_id != first.response_id
    assert caplog.text.count("neither an id nor an x-request-id") == 2


def test_body_without_model_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    body = chat_body(model=None)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        usage = expect_usage(
            outcome_from_body(body, make_call(model="gpt-4o"), request_id=None)
        )

    assert usage.model == "gpt-4o"
    assert usage.requested_model == "gpt-4o"


def test_azure_body_without_model_warns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_extract, "_warned", set())
    call = replace(make_call(model="prod-chat"), is_azure=True)
    body = chat_body(model=None)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        usage = expect_usage(outcome_from_body(body, call, request_id=None))

    assert usage.model == "prod-chat"
    assert "Azure deployment name" in caplog.text
    assert "'prod-chat'" in caplog.text
    assert "Pricing fails" in caplog.text


def test_modelless_body_names_no_azure(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_extract, "_warned", set())
    body = chat_body(model=None)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        outcome_from_body(body, make_call(model="gpt-4o"), request_id=None)

    assert "names no model" in caplog.text
    assert "Azure" not in caplog.text


def test_body_without_any_model_is_invalid() -> None:
    body = chat_body(model=None)

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call(model=None), request_id=None)
    )

    assert unmetered.reason == "invalid_usage"
    assert "names a model" in unmetered.message


def test_missing_usage_message_names_request_id() -> None:
    body = chat_body()
    del body["id"]
    body["usage"] = None

    message = expect_unmetered(
        outcome_from_body(body, make_call(), request_id="req_abc")
    ).message

    assert "response with request id 'req_abc'" in message
    assert "response 'req_abc'" not in message
    assert "/chat/completions" in message


def test_invalid_usage_message_names_endpoint() -> None:
    body = chat_body()
    body["usage"]["prompt_tokens"] = -1

    message = expect_unmetered(
        outcome_from_body(body, make_call(), request_id="req_1")
    ).message

    assert "invalid usage in response 'chatcmpl-1' from /chat/completions" in message


def test_invalid_usage_message_names_request_id() -> None:
    body = chat_body()
    del body["id"]
    body["usage"]["prompt_tokens"] = -1

    unmetered = expect_unmetered(
        outcome_from_body(body, make_call(), request_id="req_2")
    )

    assert "response with request id 'req_2'" in unmetered.message
    assert unmetered.response_id == "req_2"


def test_non_object_message_names_request_id() -> None:
    message = expect_unmetered(
        outcome_from_body("plain text", make_call(), request_id="req_7")
    ).message

    assert "response with request id 'req_7' from /chat/completions" in message
    assert "plain text" not in message


def test_invalid_tool_usage_is_dropped() -> None:
    body = response_body(tool_usage=["web_search"])

    usage = expect_usage(
        outcome_from_body(body, make_call("responses"), request_id=None)
    )

    assert usage.tool_usage is None


# Streams -------------------------------------------------------------------


def response_event(kind: str, response: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": kind, "sequence_number": 0, "response": response}


def test_response_stream_bills_terminal_event() -> None:
    tracker = StreamUsage(make_call("responses"), request_id=None, expects_usage=False)
    in_progress = response_body(usage=None, status="in_progress")
    in_progress["usage"] = None

    tracker.observe(response_event("response.created", in_progress))
    assert tracker.outcome is None
    tracker.observe({"type": "response.output_text.delta", "delta": "Hi"})
    tracker.observe(response_event("response.completed", response_body()))

    usage = expect_usage(tracker.outcome)
    assert usage.streamed is True
    assert usage.input_tokens == 120
    assert tracker.ended() is usage


@pytest.mark.parametrize("kind", ["response.incomplete", "response.failed"])
def test_response_stream_bills_unfinished_terminal(kind: str) -> None:
    tracker = StreamUsage(make_call("responses"), request_id=None, expects_usage=False)
    status = kind.removeprefix("response.")

    tracker.observe(response_event(kind, response_body(status=status)))

    usage = expect_usage(tracker.ended())
    assert usage.status == status


def test_failed_stream_without_usage_errors() -> None:
    tracker = StreamUsage(make_call("responses"), request_id=None, expects_usage=False)
    failed = response_body(status="failed")
    failed["usage"] = None

    tracker.observe(response_event("response.failed", failed))

    unmetered = expect_unmetered(tracker.ended())
    assert unmetered.reason == "stream_error"
    assert unmetered.response_id == "resp_1"


def test_completed_stream_null_usage_reported() -> None:
    tracker = StreamUsage(make_call("responses"), request_id=None, expects_usage=False)
    completed = response_body()
    completed["usage"] = None

    tracker.observe(response_event("response.completed", completed))

    unmetered = expect_unmetered(tracker.ended())
    assert unmetered.reason == "stream_without_usage"
    assert isinstance(unmetered.error, MissingUsageError)
    assert str(unmetered.error) == unmetered.message


def test_response_error_event_is_stream_error() -> None:
    tracker = StreamUsage(make_call("responses"), request_id=None, expects_usage=False)

    tracker.observe(response_event("response.created", {"id": "resp_2", "usage": None}))
    tracker.observe({"type": "error", "code": "server_error", "message": "boom"})

    unmetered = expect_unmetered(tracker.ended())
    assert unmetered.reason == "stream_error"
    assert unmetered.response_id == "resp_2"
    assert "server_error" in unmetered.message


def test_stream_without_terminal_is_interrupted() -> None:
    tracker = StreamUsage(
        make_call("responses"), request_id="req_5", expects_usage=False
    )

    tracker.observe({"type": "response.output_text.delta", "delta": "Hi"})

    unmetered = expect_unmetered(tracker.ended())
    assert unmetered.reason == "stream_interrupted"
    assert unmetered.response_id == "req_5"


def test_stream_message_names_request_id() -> None:
    tracker = StreamUsage(
        make_call("responses"), request_id="req_5", expects_usage=False
    )

    message = expect_unmetered(tracker.interrupted(Interruption())).message

    assert "stream of response with request id 'req_5' from /responses" in message
    assert "response 'req_5'" not in message


def test_stream_message_prefers_response_id() -> None:
    tracker = StreamUsage(
        make_call("responses"), request_id="req_5", expects_usage=False
    )
    tracker.observe(response_event("response.created", {"id": "resp_2", "usage": None}))

    message = expect_unmetered(tracker.interrupted(Interruption())).message

    assert "stream of response 'resp_2' from /responses" in message
    assert "req_5" not in message


def test_stream_message_is_two_sentences() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)

    message = expect_unmetered(tracker.interrupted(Interruption())).message

    assert "was closed before any usage arrived. The call is not billed" in message
    assert ";" not in message


def test_dropped_stream_message_explains_drop() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)

    unmetered = expect_unmetered(tracker.interrupted(Interruption(is_dropped=True)))

    assert "dropped without being closed" in unmetered.message
    assert "the rest of it could not be read" in unmetered.message
    assert "Error" not in unmetered.message
    assert unmetered.error is None


def test_failed_read_message_names_error_type() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)
    error = ConnectionResetError("peer said no")

    unmetered = expect_unmetered(tracker.interrupted(Interruption(error)))

    assert "because reading it failed (ConnectionResetError)" in unmetered.message
    assert "peer said no" not in unmetered.message
    assert unmetered.error is error


def test_cancelled_stream_message_says_cancelled() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)

    unmetered = expect_unmetered(
        tracker.interrupted(Interruption(asyncio.CancelledError()))
    )

    assert "because its task was cancelled" in unmetered.message


def test_terminal_without_usage_names_endpoint() -> None:
    tracker = StreamUsage(make_call("responses"), request_id=None, expects_usage=False)
    completed = response_body()
    completed["usage"] = None

    tracker.observe(response_event("response.completed", completed))

    message = expect_unmetered(tracker.ended()).message
    assert "stream of response 'resp_1' from /responses" in message


def chunk(usage: Any = None, choices: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": "Hi"}}]
        if choices is None
        else choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def test_chat_stream_bills_usage_chunk() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)

    assert tracker.observe(chunk()) is False
    usage_chunk = chunk(usage={"prompt_tokens": 4, "completion_tokens": 1}, choices=[])
    assert tracker.observe(usage_chunk) is False

    usage = expect_usage(tracker.ended())
    assert usage.response_id == "chatcmpl-7"
    assert usage.input_tokens == 4
    assert usage.streamed is True


def test_chat_stream_hides_injected_usage_chunk() -> None:
    tracker = StreamUsage(
        make_call(stream=True),
        request_id=None,
        expects_usage=True,
        hides_usage_chunk=True,
    )

    assert tracker.observe(chunk()) is False
    usage_chunk = chunk(usage={"prompt_tokens": 4, "completion_tokens": 1}, choices=[])
    assert tracker.observe(usage_chunk) is True


def test_chat_stream_keeps_usage_on_content_chunk() -> None:
    tracker = StreamUsage(
        make_call(stream=True),
        request_id=None,
        expects_usage=True,
        hides_usage_chunk=True,
    )

    hidden = tracker.observe(chunk(usage={"prompt_tokens": 4, "completion_tokens": 1}))

    assert hidden is False
    assert isinstance(tracker.outcome, Usage)


def test_chat_stream_unrequested_usage_reported() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=False)

    tracker.observe(chunk())

    unmetered = expect_unmetered(tracker.ended())
    assert unmetered.reason == "stream_without_usage"
    assert "include_usage" in unmetered.message


def test_chat_stream_missing_usage_interrupted() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)

    tracker.observe(chunk())

    assert expect_unmetered(tracker.ended()).reason == "stream_interrupted"


def test_chat_stream_keeps_first_usage(caplog: pytest.LogCaptureFixture) -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)

    with caplog.at_level(logging.WARNING, logger="blnk_meter"):
        tracker.observe(chunk(usage={"prompt_tokens": 4, "completion_tokens": 1}))
        tracker.observe(chunk(usage={"prompt_tokens": 9, "completion_tokens": 9}))

    assert expect_usage(tracker.ended()).input_tokens == 4
    assert "reported usage twice" in caplog.text


def test_stream_usage_survives_later_failure() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)
    tracker.observe(chunk(usage={"prompt_tokens": 4, "completion_tokens": 1}))

    assert isinstance(tracker.failed(RuntimeError("late")), Usage)
    assert isinstance(tracker.interrupted(None), Usage)


def test_early_stream_failure_is_stream_error() -> None:
    tracker = StreamUsage(make_call(stream=True), request_id=None, expects_usage=True)
    error = RuntimeError("error chunk")

    unmetered = expect_unmetered(tracker.failed(error))

    assert unmetered.reason == "stream_error"
    assert unmetered.error is error


def test_sse_parser_joins_split_events() -> None:
    parser = SseParser()
    text = 'event: a\ndata: {"n": 1}\n\ndata: {"n":\ndata: 2}\r\n\r\ndata: [DONE]\n\n'

    events = [event for piece in text for event in parser.feed(piece)]

    assert events == [{"n": 1}, {"n": 2}]


def test_sse_parser_skips_non_json_data() -> None:
    assert SseParser().feed("data: not json\n\ndata: 3\n\n") == [3]


def test_event_stream_bytes_bill_usage_chunk() -> None:
    content = (
        b'data: {"id": "chatcmpl-3", "model": "m", "choices": [], '
        b'"usage": {"prompt_tokens": 2, "completion_tokens": 1}}\n\n'
        b"data: [DONE]\n\n"
    )

    outcome = outcome_from_bytes(
        content,
        make_call(stream=True),
        request_id=None,
        is_event_stream=True,
        expects_usage=True,
    )

    assert expect_usage(outcome).response_id == "chatcmpl-3"


def test_partial_event_stream_is_interrupted() -> None:
    content = b'data: {"id": "chatcmpl-3", "model": "m", "choices": []}\n\n'

    outcome = outcome_from_bytes(
        content,
        make_call(stream=True),
        request_id=None,
        is_event_stream=True,
        expects_usage=False,
        interruption=Interruption(),
    )

    assert expect_unmetered(outcome).reason == "stream_interrupted"


def test_json_bytes_bill_body() -> None:
    content = (
        b'{"id": "chatcmpl-4", "model": "m", '
        b'"usage": {"prompt_tokens": 1, "completion_tokens": 0}}'
    )

    outcome = outcome_from_bytes(
        content,
        make_call(),
        request_id=None,
        is_event_stream=False,
        expects_usage=False,
    )

    assert expect_usage(outcome).response_id == "chatcmpl-4"


def test_invalid_json_bytes_are_missing_usage() -> None:
    outcome = outcome_from_bytes(
        b"{not json",
        make_call(),
        request_id="req_3",
        is_event_stream=False,
        expects_usage=False,
    )

    unmetered = expect_unmetered(outcome)
    assert unmetered.reason == "missing_usage"
    assert isinstance(unmetered.error, MissingUsageError)
    assert isinstance(unmetered.error.__cause__, ValueError)


def test_partial_json_bytes_are_interrupted() -> None:
    outcome = outcome_from_bytes(
        b'{"id": "chat',
        make_call(),
        request_id="req_3",
        is_event_stream=False,
        expects_usage=False,
        interruption=Interruption(),
    )

    unmetered = expect_unmetered(outcome)
    assert unmetered.reason == "stream_interrupted"
    assert (
        "response with request id 'req_3' from /chat/completions" in unmetered.message
    )


def test_invalid_json_message_names_request_id() -> None:
    outcome = outcome_from_bytes(
        b"{not json",
        make_call(),
        request_id="req_3",
        is_event_stream=False,
        expects_usage=False,
    )

    message = expect_unmetered(outcome).message
    assert "response with request id 'req_3' from /chat/completions" in message
    assert "not json" not in message
