"""Tests for metering OpenAI streams through the real SDK and the fake API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from blnk_meter import _instrument
from blnk_meter.testing._provider import REPLY, FakeOpenAI, Scenario, count_tokens
from metering_recorder import RecordingRecorder, collect_garbage

MESSAGES: Any = [{"role": "user", "content": "one two three"}]
REPLY_TOKENS = count_tokens(REPLY)


def reinstall(recorder: RecordingRecorder, **settings: bool) -> None:
    _instrument.install(recorder, **settings)


async def settle_async(recorder: RecordingRecorder) -> None:
    """Let the event loop run finalizer tasks until the call is settled."""
    for _ in range(20):
        collect_garbage()
        if recorder.only().is_settled:
            return
        await asyncio.sleep(0)


# Responses streams -------------------------------------------------------------


def test_response_stream_billed_at_end(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = fake.sync_client().responses.create(
        model="gpt-4o-mini", input="a b", stream=True
    )

    first = next(iter(stream))
    assert first.type == "response.created"
    assert recorder.only().is_settled is False
    events = [first, *stream]

    usage = recorder.only().usage
    assert events[-1].type == "response.completed"
    assert usage.response_id == events[-1].response.id
    assert usage.streamed is True
    assert usage.input_tokens == 2
    assert usage.output_tokens == REPLY_TOKENS
    assert usage.status == "completed"
    assert recorder.only().call.stream is True


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed"])
async def test_async_response_stream_terminals(
    fake: FakeOpenAI, recorder: RecordingRecorder, status: Any
) -> None:
    fake.enqueue(Scenario(status=status))

    stream = await fake.async_client().responses.create(
        model="gpt-4o-mini", input="a b", stream=True
    )
    events = [event async for event in stream]

    assert events[-1].type == f"response.{status}"
    assert recorder.only().method == "afinish"
    assert recorder.only().usage.status == status


def test_response_helper_billed_once(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.responses.stream(model="gpt-4o-mini", input="a b c") as stream:
        final = stream.get_final_response()

    assert len(recorder.begun) == 1
    assert recorder.only().usage.response_id == final.id
    assert recorder.only().usage.input_tokens == 3


@pytest.mark.parametrize("status", ["incomplete", "failed"])
def test_response_helper_raises_but_bills(
    fake: FakeOpenAI, recorder: RecordingRecorder, status: Any
) -> None:
    fake.enqueue(Scenario(status=status))
    client = fake.sync_client()

    with (
        client.responses.stream(model="gpt-4o-mini", input="a b") as stream,
        pytest.raises(RuntimeError, match=r"response\.completed"),
    ):
        stream.get_final_response()

    assert recorder.only().usage.status == status


async def test_async_response_helper_incomplete_bills(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(status="incomplete"))
    client = fake.async_client()

    async with client.responses.stream(model="gpt-4o-mini", input="a") as stream:
        with pytest.raises(RuntimeError):
            await stream.get_final_response()

    assert recorder.only().usage.status == "incomplete"


def test_response_error_event_is_stream_error(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="error"))

    events = list(
        fake.sync_client().responses.create(model="gpt-4o-mini", input="a", stream=True)
    )

    assert events[-1].type == "error"
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_error"
    assert unmetered.response_id == events[0].response.id


@pytest.mark.parametrize(
    ("stream_end", "raised"),
    [("cut", None), ("disconnect", openai.APIConnectionError)],
)
def test_cut_response_stream_is_interrupted(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    stream_end: Any,
    raised: type[Exception] | None,
) -> None:
    fake.enqueue(Scenario(stream_end=stream_end))
    stream = fake.sync_client().responses.create(
        model="gpt-4o-mini", input="a", stream=True
    )

    if raised is None:
        list(stream)
    else:
        with pytest.raises(raised):
            list(stream)

    assert recorder.only().unmetered.reason == "stream_interrupted"


def test_stream_failing_after_usage_is_billed(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="late_disconnect"))
    stream = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )

    with pytest.raises(openai.APIConnectionError):
        list(stream)

    assert recorder.only().usage.input_tokens == 3


def test_stream_resume_is_not_billed(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()
    created = client.responses.create(model="gpt-4o-mini", input="a b")

    with client.responses.stream(response_id=created.id, starting_after=2) as stream:
        final = stream.get_final_response()

    assert final.id == created.id
    assert recorder.only().usage.response_id == created.id
    assert recorder.only().call.stream is False


# Chat and completion streams ---------------------------------------------------


def test_chat_stream_usage_is_injected_and_hidden(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream_options: Any = {"include_obfuscation": False}

    chunks = list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options=stream_options,
        )
    )

    assert stream_options == {"include_obfuscation": False}
    sent = fake.requests[-1].body["stream_options"]
    assert sent == {"include_obfuscation": False, "include_usage": True}
    assert all(chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == REPLY
    usage = recorder.only().usage
    assert usage.input_tokens == 3
    assert usage.output_tokens == REPLY_TOKENS
    assert usage.response_id == chunks[0].id


def test_extra_body_stream_options_get_usage(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    extra_body = {"stream_options": {"include_obfuscation": True}}

    list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_body=extra_body,
        )
    )

    assert extra_body == {"stream_options": {"include_obfuscation": True}}
    sent = fake.requests[-1].body["stream_options"]
    assert sent == {"include_obfuscation": True, "include_usage": True}
    assert recorder.only().usage.input_tokens == 3


def test_callers_usage_chunk_is_kept(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    chunks = list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert recorder.only().usage.output_tokens == chunks[-1].usage.completion_tokens


def test_injected_usage_adds_no_chunk_key(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    chunks = list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    assert chunks
    assert [chunk for chunk in chunks if "usage" in chunk.to_dict()] == []
    assert [chunk for chunk in chunks if '"usage"' in chunk.to_json()] == []
    unset = [chunk.model_dump(exclude_unset=True) for chunk in chunks]
    assert [dump for dump in unset if "usage" in dump] == []
    assert recorder.only().usage.input_tokens == 3


async def test_async_injected_usage_no_key(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = await fake.async_client().completions.create(
        model="gpt-3.5-turbo-instruct", prompt="one two", stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert chunks
    assert [chunk for chunk in chunks if "usage" in chunk.to_dict()] == []
    assert recorder.only().usage.input_tokens == 2


def test_requested_usage_keeps_null_usage_key(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    chunks = list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    content_chunks = chunks[:-1]
    assert content_chunks
    assert all(chunk.to_dict()["usage"] is None for chunk in content_chunks)
    assert recorder.only().usage.input_tokens == 3


def test_chat_stream_without_injection_is_unmetered(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    reinstall(recorder, inject_stream_usage=False)

    list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    assert "stream_options" not in fake.requests[-1].body
    assert recorder.only().unmetered.reason == "stream_without_usage"


def test_chat_helper_billed_once(fake: FakeOpenAI, recorder: RecordingRecorder) -> None:
    client = fake.sync_client()

    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES
    ) as stream:
        final = stream.get_final_completion()

    assert final.choices[0].message.content == REPLY
    # The usage chunk was requested by the instrumentation, so it stays hidden.
    assert final.usage is None
    assert len(recorder.begun) == 1
    assert recorder.only().usage.response_id == final.id


async def test_async_chat_helper_billed_once(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = await stream.get_final_completion()

    assert final.usage is not None
    assert recorder.only().method == "afinish"
    assert recorder.only().usage.input_tokens == final.usage.prompt_tokens


def test_chat_error_chunk_is_stream_error(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="error"))
    stream = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )

    with pytest.raises(openai.APIError) as raised:
        list(stream)

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_error"
    assert unmetered.error is raised.value


def test_streaming_response_error_chunk(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="error"))
    client = fake.sync_client()

    with create_chat_streaming_response(client) as raw:
        lines = list(raw.iter_lines())

    assert lines
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_error"
    assert "ended with an error event (error)" in unmetered.message


def test_dropped_stream_error_chunk(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="error"))
    stream = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    next(stream)

    del stream
    collect_garbage()

    assert recorder.only().unmetered.reason == "stream_error"


def test_cut_chat_stream_is_interrupted(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="cut"))

    chunks = list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    assert chunks
    assert recorder.only().unmetered.reason == "stream_interrupted"


def test_completion_stream_is_metered(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    chunks = list(
        fake.sync_client().completions.create(
            model="gpt-3.5-turbo-instruct", prompt="one two", stream=True
        )
    )

    assert all(chunk.choices for chunk in chunks)
    usage = recorder.only().usage
    assert usage.endpoint == "completions"
    assert usage.input_tokens == 2
    assert usage.response_id == chunks[0].id


async def test_async_completion_stream_is_metered(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = await fake.async_client().completions.create(
        model="gpt-3.5-turbo-instruct", prompt="one two", stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert all(chunk.choices for chunk in chunks)
    assert recorder.only().method == "afinish"
    assert recorder.only().usage.input_tokens == 2


# Raw stream responses ----------------------------------------------------------


def test_raw_stream_billed_after_parse(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    raw = fake.sync_client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert recorder.only().is_settled is False

    chunks = list(raw.parse())

    assert all(chunk.choices for chunk in chunks)
    assert recorder.only().usage.response_id == chunks[0].id


def create_raw_chat_stream(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )


def create_raw_response_stream(client: openai.OpenAI) -> Any:
    return client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="a b", stream=True
    )


# The number of each is the input tokens of its request.
RAW_STREAMS: list[Any] = [
    pytest.param(create_raw_chat_stream, 3, id="chat"),
    pytest.param(create_raw_response_stream, 2, id="responses"),
]


@pytest.mark.parametrize(("create", "input_tokens"), RAW_STREAMS)
def test_dropped_raw_stream_is_drained(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    create: Callable[[openai.OpenAI], Any],
    input_tokens: int,
) -> None:
    raw = create(fake.sync_client())
    assert recorder.only().is_settled is False

    del raw
    collect_garbage()

    assert recorder.only().method == "finish"
    usage = recorder.only().usage
    assert usage.input_tokens == input_tokens
    assert usage.output_tokens == REPLY_TOKENS
    assert usage.streamed is True


def test_dropped_raw_stream_without_drain(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    reinstall(recorder, drain_on_close=False)
    raw = create_raw_response_stream(fake.sync_client())

    del raw
    collect_garbage()

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert "was closed before any usage arrived" in unmetered.message


async def test_async_dropped_raw_stream_is_drained(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    raw = await fake.async_client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert recorder.only().is_settled is False

    del raw
    await settle_async(recorder)

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.output_tokens == REPLY_TOKENS


def test_async_raw_stream_dropped_after_loop(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    async def create() -> Any:
        client = fake.async_client()
        return await client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="a b", stream=True
        )

    raw = asyncio.run(create())
    del raw
    collect_garbage()

    # With its event loop closed, nothing can read the rest of the body.
    assert recorder.only().method == "finish"
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert "dropped without being closed" in unmetered.message


def test_streaming_response_stream_parse(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="a b", stream=True
    ) as raw:
        events = list(raw.parse())

    assert recorder.only().usage.response_id == events[-1].response.id


def test_streaming_response_lines_billed(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as raw:
        lines = list(raw.iter_lines())

    assert lines[-2] == "data: [DONE]"
    assert recorder.only().usage.input_tokens == 3


def create_chat_streaming_response(client: openai.OpenAI | openai.AsyncOpenAI) -> Any:
    return client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )


def create_response_streaming_response(
    client: openai.OpenAI | openai.AsyncOpenAI,
) -> Any:
    return client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="a b", stream=True
    )


STREAMING_RESPONSES: list[Any] = [
    pytest.param(create_chat_streaming_response, 3, id="chat"),
    pytest.param(create_response_streaming_response, 2, id="responses"),
]


@pytest.mark.parametrize(("create", "input_tokens"), STREAMING_RESPONSES)
def test_streaming_response_stream_exit_drains(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    create: Callable[[openai.OpenAI], Any],
    input_tokens: int,
) -> None:
    with create(fake.sync_client()) as raw:
        assert recorder.only().is_settled is False
    del raw
    collect_garbage()

    usage = recorder.only().usage
    assert usage.input_tokens == input_tokens
    assert usage.output_tokens == REPLY_TOKENS


def test_streaming_response_lines_partly_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="a b", stream=True
    ) as raw:
        first_line = next(raw.iter_lines())
        assert recorder.only().is_settled is False

    assert first_line.startswith("event: response.created")
    assert recorder.only().usage.input_tokens == 2


def test_streaming_response_parsed_exit_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with create_chat_streaming_response(client) as raw:
        next(raw.parse())

    assert recorder.only().usage.output_tokens == REPLY_TOKENS


def test_streaming_response_drain_failure_interrupts(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="disconnect"))

    with create_response_streaming_response(fake.sync_client()):
        pass

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert isinstance(unmetered.error, httpx.ReadError)
    assert "because reading it failed (ReadError)" in unmetered.message


def test_streaming_response_late_failure_bills(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="late_disconnect"))

    with create_chat_streaming_response(fake.sync_client()):
        pass

    assert recorder.only().usage.input_tokens == 3


@pytest.mark.parametrize(("create", "input_tokens"), STREAMING_RESPONSES)
async def test_async_streaming_response_exit_drains(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    create: Callable[[Any], Any],
    input_tokens: int,
) -> None:
    async with create(fake.async_client()) as raw:
        assert recorder.only().is_settled is False
    del raw
    await settle_async(recorder)

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.input_tokens == input_tokens


async def test_async_streaming_response_lines_drain(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with create_chat_streaming_response(client) as raw:
        async for _line in raw.iter_lines():
            break

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.output_tokens == REPLY_TOKENS


async def test_async_streaming_response_drain_failure(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    fake.enqueue(Scenario(stream_end="disconnect"))

    async with create_chat_streaming_response(fake.async_client()):
        pass

    assert recorder.only().method == "afinish"
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert isinstance(unmetered.error, httpx.ReadError)


async def test_async_streaming_response_stream(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as raw:
        stream = await raw.parse()
        chunks = [chunk async for chunk in stream]

    assert all(chunk.choices for chunk in chunks)
    assert recorder.only().method == "afinish"
    assert recorder.only().usage.input_tokens == 3


class SplitBody(httpx.SyncByteStream):
    """A body sent in pieces of a fixed size, wherever they fall."""

    def __init__(self, content: bytes, size: int) -> None:
        self._content = content
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._content), self._size):
            yield self._content[start : start + self._size]


def split_client(fake: FakeOpenAI, size: int, line_end: bytes) -> openai.OpenAI:
    """Return a client whose streams arrive in ``size``-byte pieces."""

    def split(request: httpx.Request) -> httpx.Response:
        response = fake.handler(request)
        content = b"".join(response.iter_bytes()).replace(b"\n", line_end)
        body = SplitBody(content, size)
        return httpx.Response(200, headers=response.headers, stream=body)

    http_client = httpx.Client(transport=httpx.MockTransport(split))
    return fake.sync_client(http_client=http_client)


SPLITS: list[Any] = [
    pytest.param(1, b"\n", id="1-byte-lf"),
    pytest.param(1, b"\r\n", id="1-byte-crlf"),
    pytest.param(7, b"\r\n", id="7-byte-crlf"),
    pytest.param(100_000, b"\n", id="whole-body"),
]


@pytest.mark.parametrize(("size", "line_end"), SPLITS)
def test_split_stream_reads_every_event(
    fake: FakeOpenAI, recorder: RecordingRecorder, size: int, line_end: bytes
) -> None:
    expected = list(
        fake.sync_client().chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    chunks = list(
        split_client(fake, size, line_end).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )

    texts = [chunk.choices[0].delta.content for chunk in chunks]
    assert texts == [chunk.choices[0].delta.content for chunk in expected]
    assert recorder.records[1].usage.output_tokens == REPLY_TOKENS


@pytest.mark.parametrize(("size", "line_end"), SPLITS)
@pytest.mark.parametrize("read", [1, 3])
def test_dropped_split_stream_is_drained(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    size: int,
    line_end: bytes,
    read: int,
) -> None:
    stream = split_client(fake, size, line_end).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    for _ in range(read):
        next(stream)

    del stream
    collect_garbage()

    usage = recorder.only().usage
    assert usage.input_tokens == 3
    assert usage.output_tokens == REPLY_TOKENS


class StalledBody(httpx.AsyncByteStream):
    """A body that sends its first bytes, then nothing until it is cancelled."""

    def __init__(self, first: bytes) -> None:
        self._first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._first
        await asyncio.Event().wait()


async def test_async_cancelled_drain_is_interrupted(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        response = fake.handler(request)
        first = b"".join(response.iter_bytes())[:40]
        return httpx.Response(200, headers=response.headers, stream=StalledBody(first))

    transport = httpx.MockTransport(stall)
    client = fake.async_client(http_client=httpx.AsyncClient(transport=transport))

    async def close_unread() -> None:
        async with create_chat_streaming_response(client):
            pass

    task = asyncio.create_task(close_unread())
    while not fake.requests:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert recorder.only().method == "afinish"
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert isinstance(unmetered.error, asyncio.CancelledError)
    assert "because its task was cancelled" in unmetered.message


# Stopping early ----------------------------------------------------------------


def stop_with_break_and_close(stream: Any) -> None:
    for _chunk in stream:
        break
    stream.close()


def stop_with_close(stream: Any) -> None:
    next(stream)
    stream.close()


def stop_with_context_exit(stream: Any) -> None:
    with stream:
        next(stream)


def stop_by_dropping(stream: Any) -> None:
    for _chunk in stream:
        break


# The flag of each stop is whether the stream settles only when it is collected.
EARLY_STOPS: list[Any] = [
    pytest.param(stop_with_break_and_close, False, id="break-close"),
    pytest.param(stop_with_close, False, id="close"),
    pytest.param(stop_with_context_exit, False, id="with-exit"),
    pytest.param(stop_by_dropping, True, id="garbage-collected"),
]


@pytest.mark.parametrize(("stop", "collects"), EARLY_STOPS)
def test_early_stop_drains_stream(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    stop: Callable[[Any], None],
    collects: bool,
) -> None:
    stream = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )

    stop(stream)
    assert recorder.only().is_settled is not collects
    del stream
    collect_garbage()

    usage = recorder.only().usage
    assert usage.input_tokens == 3
    assert usage.output_tokens == REPLY_TOKENS


@pytest.mark.parametrize(("stop", "collects"), EARLY_STOPS)
def test_early_stop_without_drain_interrupts(
    fake: FakeOpenAI,
    recorder: RecordingRecorder,
    stop: Callable[[Any], None],
    collects: bool,
) -> None:
    reinstall(recorder, drain_on_close=False)
    stream = fake.sync_client().responses.create(
        model="gpt-4o-mini", input="a", stream=True
    )

    stop(stream)
    assert recorder.only().is_settled is not collects
    del stream
    collect_garbage()

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert unmetered.response_id is not None


def test_early_stop_after_usage_bills(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )

    for chunk in stream:
        if chunk.usage is not None:
            break
    stream.close()

    assert recorder.only().usage.input_tokens == 3


def test_response_helper_break_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.sync_client()

    with client.responses.stream(model="gpt-4o-mini", input="a b") as stream:
        for _event in stream:
            break
        assert recorder.only().is_settled is False

    assert recorder.only().usage.input_tokens == 2


async def stop_async_with_break_and_close(stream: Any) -> None:
    async for _chunk in stream:
        break
    await stream.close()


async def stop_async_with_close(stream: Any) -> None:
    await stream.__anext__()
    await stream.close()


async def stop_async_with_context_exit(stream: Any) -> None:
    async with stream:
        await stream.__anext__()


ASYNC_EARLY_STOPS: list[Any] = [
    pytest.param(stop_async_with_break_and_close, id="break-close"),
    pytest.param(stop_async_with_close, id="close"),
    pytest.param(stop_async_with_context_exit, id="with-exit"),
]


@pytest.mark.parametrize("stop", ASYNC_EARLY_STOPS)
async def test_async_early_stop_drains_stream(
    fake: FakeOpenAI, recorder: RecordingRecorder, stop: Callable[[Any], Any]
) -> None:
    stream = await fake.async_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )

    await stop(stream)

    assert recorder.only().method == "afinish"
    assert recorder.only().usage.output_tokens == REPLY_TOKENS


@pytest.mark.parametrize("stop", ASYNC_EARLY_STOPS)
async def test_async_early_stop_without_drain(
    fake: FakeOpenAI, recorder: RecordingRecorder, stop: Callable[[Any], Any]
) -> None:
    reinstall(recorder, drain_on_close=False)
    stream = await fake.async_client().responses.create(
        model="gpt-4o-mini", input="a", stream=True
    )

    await stop(stream)

    assert recorder.only().method == "afinish"
    assert recorder.only().unmetered.reason == "stream_interrupted"


async def test_async_dropped_stream_is_interrupted(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = await fake.async_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )

    async for _chunk in stream:
        break
    assert recorder.only().is_settled is False
    del stream
    await settle_async(recorder)

    # A finalizer cannot await the rest of an async stream, so it is not drained.
    assert recorder.only().method == "afinish"
    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert unmetered.response_id is not None
    assert unmetered.error is None
    assert "dropped without being closed" in unmetered.message


def test_async_stream_open_at_loop_end(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    async def read_one_chunk() -> Any:
        stream = await fake.async_client().chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        async for _chunk in stream:
            break
        return stream

    # asyncio.run closes the stream's event generator before it returns.
    stream = asyncio.run(read_one_chunk())

    unmetered = recorder.only().unmetered
    assert unmetered.reason == "stream_interrupted"
    assert unmetered.error is None
    assert "dropped without being closed" in unmetered.message
    assert "RuntimeError" not in unmetered.message
    del stream


def test_stream_generator_closed_outside_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = fake.sync_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    next(stream)

    # The SDK's generator closes the response; the rest is read from the body.
    stream._iterator._events.close()

    usage = recorder.only().usage
    assert usage.input_tokens == 3
    assert usage.output_tokens == REPLY_TOKENS
    assert stream.response.is_closed is True


async def test_async_dropped_stream_after_usage_bills(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    stream = await fake.async_client().responses.create(
        model="gpt-4o-mini", input="a b", stream=True
    )

    async for event in stream:
        if event.type == "response.completed":
            break
    del stream
    await settle_async(recorder)

    assert recorder.only().usage.input_tokens == 2


async def test_async_response_helper_break_drains(
    fake: FakeOpenAI, recorder: RecordingRecorder
) -> None:
    client = fake.async_client()

    async with client.responses.stream(model="gpt-4o-mini", input="a b") as stream:
        async for _event in stream:
            break

    assert recorder.only().usage.input_tokens == 2
