"""Tests for the fake OpenAI API, driven through the real SDK."""

from __future__ import annotations

import httpx
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam

from blnk_meter.testing._provider import (
    OMIT,
    REPLY,
    FakeOpenAI,
    Scenario,
    count_tokens,
    served_model,
)

REPLY_TOKENS = count_tokens(REPLY)


class City(pydantic.BaseModel):
    name: str
    population: int


def test_fake_response_counts_words() -> None:
    fake = FakeOpenAI()
    client = fake.sync_client()

    response = client.responses.create(model="gpt-4o-mini", input="one two three")

    assert response.usage is not None
    assert response.usage.input_tokens == 3
    assert response.usage.output_tokens == REPLY_TOKENS
    assert response.output_text == REPLY
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.id.startswith("resp_")
    assert response._request_id is not None
    assert response._request_id.startswith("req_")


def test_fake_ids_are_unique() -> None:
    client = FakeOpenAI().sync_client()

    first = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    second = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )

    assert first.id.startswith("chatcmpl-")
    assert first.id != second.id
    assert first.model == served_model("gpt-4o")


def test_fake_max_tokens_makes_incomplete() -> None:
    client = FakeOpenAI().sync_client()

    response = client.responses.create(
        model="gpt-4o-mini", input="hello", max_output_tokens=2
    )

    assert response.status == "incomplete"
    assert response.usage is not None
    assert response.usage.output_tokens == 2


def test_fake_finish_reason_is_set() -> None:
    fake = FakeOpenAI()
    fake.enqueue(Scenario(finish_reason="content_filter"))
    client = fake.sync_client()

    filtered = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
    )
    plain = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
    )

    assert filtered.choices[0].finish_reason == "content_filter"
    assert plain.choices[0].finish_reason == "stop"


def test_fake_background_usage_arrives_on_retrieve() -> None:
    client = FakeOpenAI().sync_client()

    created = client.responses.create(model="gpt-4o-mini", input="a b", background=True)
    retrieved = client.responses.retrieve(created.id)

    assert created.status == "queued"
    assert created.background is True
    assert created.usage is None
    assert retrieved.status == "completed"
    assert retrieved.usage is not None
    assert retrieved.usage.input_tokens == 2


def test_fake_chat_stream_sends_usage_when_asked() -> None:
    fake = FakeOpenAI()
    client = fake.sync_client()
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "a b"}]

    plain = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        )
    )
    with_usage = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert all(chunk.usage is None for chunk in plain)
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.prompt_tokens == 2
    assert with_usage[-1].usage.completion_tokens == REPLY_TOKENS
    assert (
        "".join(
            chunk.choices[0].delta.content or "" for chunk in plain if chunk.choices
        )
        == REPLY
    )


def test_fake_scenarios_apply_in_order() -> None:
    fake = FakeOpenAI()
    client = fake.sync_client()
    fake.enqueue(Scenario(cached_tokens=1, reasoning_tokens=4), Scenario(usage=OMIT))

    first = client.responses.create(model="gpt-4o-mini", input="a b c")
    second = client.responses.create(model="gpt-4o-mini", input="a b c")
    third = client.responses.create(model="gpt-4o-mini", input="a b c")

    assert first.usage is not None
    assert first.usage.input_tokens_details.cached_tokens == 1
    assert first.usage.output_tokens == REPLY_TOKENS + 4
    assert second.usage is None
    assert third.usage is not None


def test_fake_error_status_raises() -> None:
    fake = FakeOpenAI()
    fake.enqueue(Scenario(status_code=500))

    with pytest.raises(openai.InternalServerError):
        fake.sync_client().embeddings.create(model="text-embedding-3-small", input="x")


def test_fake_disconnect_cuts_stream() -> None:
    fake = FakeOpenAI()
    fake.enqueue(Scenario(stream_end="disconnect"))
    stream = fake.sync_client().responses.create(
        model="gpt-4o-mini", input="x", stream=True
    )

    with pytest.raises(openai.APIConnectionError):
        for _event in stream:
            pass


def test_fake_retrieve_replays_stream() -> None:
    fake = FakeOpenAI()
    client = fake.sync_client()
    created = client.responses.create(model="gpt-4o-mini", input="a b")

    retrieved = client.responses.retrieve(created.id)
    with client.responses.stream(response_id=created.id) as stream:
        final = stream.get_final_response()

    assert retrieved.id == created.id
    assert final.id == created.id
    assert [request.method for request in fake.requests] == ["POST", "GET", "GET"]


def test_fake_parse_fills_schema() -> None:
    client = FakeOpenAI().sync_client()

    parsed = client.responses.parse(
        model="gpt-4o-mini", input="Name a city", text_format=City
    )

    assert parsed.output_parsed == City(name="text", population=1)


async def test_fake_async_client_streams() -> None:
    client = FakeOpenAI().async_client()

    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="one two",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == REPLY
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2


def test_fake_serves_azure_paths() -> None:
    fake = FakeOpenAI()
    client = openai.AzureOpenAI(
        api_key="azure-test-key",
        api_version="2024-10-21",
        azure_endpoint="http://127.0.0.1:9",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(fake.handler)),
    )

    completion = client.chat.completions.create(
        model="prod-chat", messages=[{"role": "user", "content": "a b"}]
    )
    response = client.responses.create(model="prod-chat", input="a b")

    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2
    assert response.usage is not None
    assert response.usage.input_tokens == 2
    assert [request.path for request in fake.requests] == [
        "/chat/completions",
        "/responses",
    ]
    assert fake.requests[0].query == {"api-version": "2024-10-21"}
