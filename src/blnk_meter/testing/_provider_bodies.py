"""JSON bodies of the fake OpenAI API and the scenarios that bend them.

Token counts follow a fixed rule, so tests can predict them. Input tokens
are the whitespace-separated words of the request's text (``instructions``,
``input``, ``messages``, ``prompt``). Output tokens are the words of the
reply, cut to the request's maximum, times ``n``, plus the scenario's
reasoning tokens.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AUTO",
    "OMIT",
    "REPLY",
    "SERVED_MODELS",
    "Reply",
    "Scenario",
    "count_tokens",
    "embedding_vector",
    "put_field",
    "served_model",
    "text_of_output",
]

REPLY = "This canned reply comes from the fake provider."
"""The reply to every request without a JSON schema: 8 output tokens."""

SERVED_MODELS: Mapping[str, str] = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
}
"""The dated snapshot OpenAI serves for each alias; other names serve as is."""


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


AUTO: Any = _Marker("AUTO")
"""Scenario value: compute the field as the real API would."""

OMIT: Any = _Marker("OMIT")
"""Scenario value: leave the field out of the response."""


def count_tokens(text: str) -> int:
    """Return the fake provider's token count of ``text``: its words."""
    return len(text.split())


def served_model(requested: str) -> str:
    """Return the model name the fake provider reports for ``requested``."""
    return SERVED_MODELS.get(requested, requested)


@dataclass(frozen=True)
class Scenario:
    """How the fake provider responds to one request.

    Attributes:
        usage: the usage object to send instead of the computed one (any JSON
            value, ``None`` for null), ``OMIT`` to leave it out, or ``AUTO``.
        usage_patch: keys merged into the computed usage object, e.g.
            ``{"input_tokens": -5}`` or ``{"prompt_tokens": "12"}``.
        cached_tokens: input tokens reported as read from the prompt cache.
        cache_write_tokens: input tokens reported as written to the cache.
        reasoning_tokens: output tokens reported as reasoning, added to the
            reply's tokens.
        tool_usage: the Responses ``tool_usage`` object to send, if any.
        model: the served model to report, ``OMIT`` to leave it out, or
            ``AUTO`` for the snapshot of the requested alias.
        include_id: whether the body carries its ``id``.
        include_request_id: whether the response has an ``x-request-id``.
        status: the Responses status (and terminal event); ``incomplete``
            also ends chat and completion choices with ``length``.
        finish_reason: the ``finish_reason`` of chat and completion choices
            (``content_filter``, ...), or ``AUTO`` for ``length`` when the
            reply was cut and ``stop`` otherwise.
        stream_end: how a stream ends. ``normal`` sends every event. With
            ``error`` an error event (or error chunk) comes before any usage,
            with ``cut`` the body stops before any usage, and with
            ``disconnect`` the connection fails there. ``late_disconnect``
            sends every event with usage, then fails the connection in place
            of ``[DONE]`` or the end of the body.
        status_code: an HTTP status other than 200 answers with an error.
    """

    usage: Any = AUTO
    usage_patch: Mapping[str, Any] | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    tool_usage: Mapping[str, Any] | None = None
    model: Any = AUTO
    include_id: bool = True
    include_request_id: bool = True
    status: Literal["completed", "incomplete", "failed"] = "completed"
    finish_reason: Any = AUTO
    stream_end: Literal["normal", "error", "cut", "disconnect", "late_disconnect"] = (
        "normal"
    )
    status_code: int = 200


_RESPONSES_NAMES = (
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "output_tokens_details",
)
_COMPLETIONS_NAMES = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
)


class Reply:
    """The reply to one generation request and its token counts.

    Args:
        body: the request's JSON body.
        scenario: how to bend the response.
        max_key: the body field that limits the reply's tokens, if any.
    """

    def __init__(
        self, body: Mapping[str, Any], scenario: Scenario, *, max_key: str | None
    ) -> None:
        self.scenario = scenario
        self.model = served_model(str(body.get("model")))
        words = _reply_text(body).split(" ")
        limit = body.get(max_key) if max_key else None
        if max_key == "max_completion_tokens" and limit is None:
            limit = body.get("max_tokens")
        is_cut = isinstance(limit, int) and len(words) > limit
        self.words = words[:limit] if is_cut and isinstance(limit, int) else words
        self.is_truncated = is_cut or scenario.status == "incomplete"
        text_fields = ("instructions", "input", "messages", "prompt")
        self.input_tokens = sum(
            count_tokens(text) for key in text_fields for text in _texts(body.get(key))
        )
        choices = body.get("n")
        self.choices = choices if isinstance(choices, int) else 1
        visible = 0 if scenario.status == "failed" else len(self.words) * self.choices
        self.output_tokens = visible + scenario.reasoning_tokens

    @property
    def text(self) -> str:
        """The reply as one string."""
        return " ".join(self.words)

    def usage(self, *, responses: bool) -> Any:
        """Return the usage object that the scenario sets."""
        scenario = self.scenario
        if scenario.usage is not AUTO:
            return scenario.usage
        names = _RESPONSES_NAMES if responses else _COMPLETIONS_NAMES
        usage = {
            names[0]: self.input_tokens,
            names[1]: self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            names[2]: {
                "cached_tokens": scenario.cached_tokens,
                "cache_write_tokens": scenario.cache_write_tokens,
            },
            names[3]: {"reasoning_tokens": scenario.reasoning_tokens},
        }
        usage.update(scenario.usage_patch or {})
        return usage

    def response(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the Responses API ``Response`` object."""
        status = self.scenario.status
        if self.is_truncated and status != "failed":
            status = "incomplete"
        response: dict[str, Any] = {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": body.get("background") is True,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "output": [] if status == "failed" else [self._message(status)],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "store": True,
            "temperature": 1.0,
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "metadata": {},
        }
        if status == "failed":
            response["error"] = {"code": "server_error", "message": "The model failed."}
        if status == "incomplete":
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        if self.scenario.tool_usage is not None:
            response["tool_usage"] = dict(self.scenario.tool_usage)
        return self._finish(response, responses=True)

    def _message(self, status: str) -> dict[str, Any]:
        text = {
            "type": "output_text",
            "text": self.text,
            "annotations": [],
            "logprobs": [],
        }
        return {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "status": "completed" if status == "completed" else "incomplete",
            "role": "assistant",
            "content": [text],
        }

    def compacted(self) -> dict[str, Any]:
        """Return the ``CompactedResponse`` of ``/responses/compact``."""
        item = {
            "type": "compaction",
            "id": f"cmp_{uuid.uuid4().hex}",
            "encrypted_content": base64.b64encode(self.text.encode()).decode(),
        }
        compacted = {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": [item],
        }
        # A compacted response names no model unless the scenario sets one.
        if self.scenario.model is AUTO:
            self.model = ""
        return self._finish(compacted, responses=True)

    def chat_completion(self) -> dict[str, Any]:
        """Return the ``ChatCompletion`` object."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text,
            "refusal": None,
            "annotations": [],
        }
        choices = [
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": self._finish_reason,
            }
            for index in range(self.choices)
        ]
        return self._completion("chatcmpl", "chat.completion", choices)

    def text_completion(self) -> dict[str, Any]:
        """Return the legacy ``Completion`` object."""
        choices = [
            {
                "text": self.text,
                "index": index,
                "logprobs": None,
                "finish_reason": self._finish_reason,
            }
            for index in range(self.choices)
        ]
        return self._completion("cmpl", "text_completion", choices)

    @property
    def _finish_reason(self) -> Any:
        if self.scenario.finish_reason is not AUTO:
            return self.scenario.finish_reason
        return "length" if self.is_truncated else "stop"

    def _completion(
        self, prefix: str, kind: str, choices: list[dict[str, Any]]
    ) -> dict[str, Any]:
        completion = {
            "id": f"{prefix}-{uuid.uuid4().hex[:29]}",
            "object": kind,
            "created": int(time.time()),
            "choices": choices,
            "system_fingerprint": "fp_fake",
        }
        return self._finish(completion, responses=False)

    def _finish(self, body: dict[str, Any], *, responses: bool) -> dict[str, Any]:
        """Add the model and usage, and drop the id, as the scenario sets."""
        if self.model:
            put_field(body, "model", self.scenario.model, self.model)
        put_field(body, "usage", self.scenario.usage, self.usage(responses=responses))
        if not self.scenario.include_id:
            del body["id"]
        return body


def put_field(target: dict[str, Any], key: str, value: Any, computed: Any) -> None:
    """Set ``target[key]`` to a scenario value: AUTO computes, OMIT leaves out."""
    if value is AUTO:
        target[key] = computed
    elif value is not OMIT:
        target[key] = value


def _texts(value: Any) -> Iterator[str]:
    """Yield the text of a request's input, whatever its shape."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key in ("text", "content"):
            yield from _texts(value.get(key))


def _reply_text(body: Mapping[str, Any]) -> str:
    """Return :data:`REPLY`, or a JSON example of the schema the request names."""
    schema = _requested_schema(body)
    if schema is None:
        return REPLY
    return json.dumps(_example(schema, schema))


def _requested_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    text_format = (
        (body.get("text") or {}).get("format")
        if isinstance(body.get("text"), dict)
        else None
    )
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        return text_format.get("schema")
    response_format = body.get("response_format")
    if (
        isinstance(response_format, dict)
        and response_format.get("type") == "json_schema"
    ):
        return (response_format.get("json_schema") or {}).get("schema")
    return None


def _example(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Build the smallest value that matches a JSON schema from pydantic."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _example(root.get("$defs", {}).get(name, {}), root)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _example(schema[key][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    examples = {
        "string": "text",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "null": None,
        "array": [],
    }
    kind = schema.get("type", "object")
    if kind != "object":
        return examples.get(kind)
    properties = schema.get("properties", {})
    return {name: _example(sub, root) for name, sub in properties.items()}


def text_of_output(response: Mapping[str, Any]) -> str:
    """Return the text of a ``Response``'s first message."""
    for item in response.get("output") or []:
        for part in item.get("content") or []:
            if part.get("type") == "output_text":
                return str(part.get("text", ""))
    return ""


def embedding_vector(text: str, body: Mapping[str, Any]) -> Any:
    """Return an 8-dimension embedding of ``text``, base64 if the body requests it."""
    values = [((len(text) + index) % 10) / 10 for index in range(8)]
    if body.get("encoding_format") == "base64":
        return base64.b64encode(struct.pack("<8f", *values)).decode()
    return values
