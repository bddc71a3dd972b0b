"""Server-sent event streams of the fake OpenAI API, in the SDK's wire format.

Each builder returns ``(event name, data)`` pairs for one stream, cut short
the way the scenario sets, and :func:`sse_bytes` encodes them one chunk per
event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._provider_bodies import Scenario

__all__ = ["chat_chunks", "completion_chunks", "response_events", "sse_bytes"]

Event = tuple[str | None, Any]
"""One server-sent event: its ``event:`` name, if any, and its data."""

_DONE = "[DONE]"

_TERMINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


def sse_bytes(events: list[Event]) -> list[bytes]:
    """Encode events as server-sent event chunks, one chunk per event."""
    chunks = []
    for name, data in events:
        payload = data if data == _DONE else json.dumps(data)
        prefix = f"event: {name}\n" if name else ""
        chunks.append(f"{prefix}data: {payload}\n\n".encode())
    return chunks


def _pieces(words: list[str]) -> list[str]:
    """Split a reply into deltas that join back to ``" ".join(words)``."""
    return [word if index == 0 else f" {word}" for index, word in enumerate(words)]


def _cut(
    events: list[Event], keep: int, scenario: Scenario, error: Event
) -> list[Event]:
    """Stop a stream after ``keep`` events unless the scenario ends it normally."""
    if scenario.stream_end == "normal":
        return events
    if scenario.stream_end == "late_disconnect":
        return [event for event in events if event[1] != _DONE]
    kept = events[:keep]
    return [*kept, error] if scenario.stream_end == "error" else kept


def response_events(
    response: Mapping[str, Any], words: list[str], scenario: Scenario
) -> list[Event]:
    """Return the Responses stream that builds up to ``response``."""
    lifecycle = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
    }
    lifecycle.pop("tool_usage", None)
    pending: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": lifecycle}),
        ("response.in_progress", {"response": lifecycle}),
    ]
    output = response.get("output") or []
    if output:
        pending += _message_events(output[0], words)
    terminal = _TERMINAL_EVENTS[str(response.get("status", "completed"))]
    pending.append((terminal, {"response": response}))
    events: list[Event] = [
        (name, {"type": name, "sequence_number": number, **data})
        for number, (name, data) in enumerate(pending)
    ]
    error = {
        "type": "error",
        "sequence_number": len(events),
        "code": "server_error",
        "message": "The fake provider failed while streaming.",
        "param": None,
    }
    return _cut(events, 5 if output else 2, scenario, ("error", error))


def _message_events(
    item: Mapping[str, Any], words: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    part = item["content"][0]
    where = {"item_id": item["id"], "output_index": 0}
    text_where = {**where, "content_index": 0}
    empty_part = {**part, "text": ""}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
        ),
        ("response.content_part.added", {**text_where, "part": empty_part}),
    ]
    for piece in _pieces(words):
        events.append(
            (
                "response.output_text.delta",
                {**text_where, "delta": piece, "logprobs": []},
            )
        )
    events += [
        (
            "response.output_text.done",
            {**text_where, "text": part["text"], "logprobs": []},
        ),
        ("response.content_part.done", {**text_where, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
    ]
    return events


def _wants_usage(body: Mapping[str, Any]) -> bool:
    stream_options = body.get("stream_options")
    return (
        isinstance(stream_options, Mapping)
        and stream_options.get("include_usage") is True
    )


def _chunk_base(
    completion: Mapping[str, Any], kind: str, wants_usage: bool
) -> dict[str, Any]:
    keys = ("id", "created", "model", "system_fingerprint")
    base = {key: completion[key] for key in keys if key in completion}
    base["object"] = kind
    if wants_usage:
        base["usage"] = None
    return base


def _finish(
    chunks: list[Event],
    base: Mapping[str, Any],
    completion: Mapping[str, Any],
    wants_usage: bool,
    scenario: Scenario,
) -> list[Event]:
    """Add the usage chunk and ``[DONE]``, then cut the stream as the scenario sets."""
    content_chunks = len(chunks)
    if wants_usage:
        usage_chunk = {key: value for key, value in base.items() if key != "usage"}
        usage_chunk["choices"] = []
        if "usage" in completion:
            usage_chunk["usage"] = completion["usage"]
        chunks.append((None, usage_chunk))
    chunks.append((None, _DONE))
    error = {
        "error": {
            "message": "The fake provider failed while streaming.",
            "type": "server_error",
        }
    }
    return _cut(chunks, min(2, content_chunks), scenario, (None, error))


def chat_chunks(
    completion: Mapping[str, Any],
    words: list[str],
    body: Mapping[str, Any],
    scenario: Scenario,
) -> list[Event]:
    """Return the Chat Completions stream of ``completion``."""
    wants_usage = _wants_usage(body)
    base = _chunk_base(completion, "chat.completion.chunk", wants_usage)
    chunks: list[Event] = []
    for choice in completion["choices"]:
        index = choice["index"]
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [first, *({"content": piece} for piece in _pieces(words)), {}]
        for number, delta in enumerate(deltas):
            is_last = number == len(deltas) - 1
            entry = {
                "index": index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": choice["finish_reason"] if is_last else None,
            }
            chunks.append((None, {**base, "choices": [entry]}))
    return _finish(chunks, base, completion, wants_usage, scenario)


def completion_chunks(
    completion: Mapping[str, Any],
    words: list[str],
    body: Mapping[str, Any],
    scenario: Scenario,
) -> list[Event]:
    """Return the legacy Completions stream of ``completion``."""
    wants_usage = _wants_usage(body)
    base = _chunk_base(completion, "text_completion", wants_usage)
    chunks: list[Event] = []
    for choice in completion["choices"]:
        pieces = _pieces(words)
        for number, piece in enumerate(pieces):
            is_last = number == len(pieces) - 1
            entry = {
                "text": piece,
                "index": choice["index"],
                "logprobs": None,
                "finish_reason": choice["finish_reason"] if is_last else None,
            }
            chunks.append((None, {**base, "choices": [entry]}))
    return _finish(chunks, base, completion, wants_usage, scenario)
