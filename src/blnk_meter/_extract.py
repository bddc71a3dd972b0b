"""Read token usage from OpenAI responses, stream events and raw JSON bodies.

Everything here works on the JSON the provider sent, as decoded mappings. SDK
objects are turned back into mappings first, because the SDK does not validate
response bodies and may coerce some counts (``"12"`` to ``12``) on the way.
Counts are checked, never repaired: a count that is not a non-negative integer
makes the usage invalid, and usage that is absent is reported as unknown, never
as zero.
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ._recorder import CallOutcome
from ._usage import Endpoint, ProviderCall, UnmeteredCall, Usage
from .errors import InvalidUsageError, MissingUsageError

__all__ = [
    "NOT_BILLED",
    "as_document",
    "header_request_id",
    "missing_usage",
    "name_response",
    "outcome_from_body",
]

logger = logging.getLogger(__name__)

NOT_BILLED = "The call is not billed, so check it against the provider's usage records."
"""The last sentence of every message about a call whose usage is unknown."""


def header_request_id(response: Any) -> str | None:
    """Return the ``x-request-id`` header of a response or capture, if any."""
    headers = getattr(response, "headers", None)
    request_id = headers.get("x-request-id") if headers is not None else None
    return request_id if isinstance(request_id, str) and request_id else None


def name_response(response_id: str | None, request_id: str | None) -> str:
    """Name a response in a message by the best id known for it.

    The provider's response id comes first. An ``x-request-id`` header is
    named as a request id, so that no one searches for it among response ids.
    """
    if response_id:
        return f"response {response_id!r}"
    if request_id:
        return f"response with request id {request_id!r}"
    return "response without a response id or request id"


@dataclass(frozen=True)
class _UsageShape:
    """The keys of the counts in one endpoint's usage object."""

    input: str
    input_details: str
    output: str | None
    output_details: str | None


_RESPONSES_SHAPE = _UsageShape(
    "input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details"
)
_COMPLETIONS_SHAPE = _UsageShape(
    "prompt_tokens",
    "prompt_tokens_details",
    "completion_tokens",
    "completion_tokens_details",
)
_SHAPES: dict[Endpoint, _UsageShape] = {
    "responses": _RESPONSES_SHAPE,
    "responses.compact": _RESPONSES_SHAPE,
    "chat.completions": _COMPLETIONS_SHAPE,
    "completions": _COMPLETIONS_SHAPE,
    "embeddings": _UsageShape("prompt_tokens", "prompt_tokens_details", None, None),
}

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(topic: str, key: str, message: str, *args: object) -> None:
    """Log a warning the first time ``(topic, key)`` is seen, DEBUG afterwards."""
    with _warned_lock:
        first = (topic, key) not in _warned
        _warned.add((topic, key))
    logger.log(logging.WARNING if first else logging.DEBUG, message, *args)


def as_document(value: object) -> object:
    """Return the JSON view of an SDK model, or ``value`` itself.

    Only the fields the provider sent are kept, so a missing count stays
    missing instead of reading as ``None``.
    """
    if isinstance(value, BaseModel):
        return value.model_dump(
            mode="python", by_alias=True, exclude_unset=True, warnings=False
        )
    return value


def outcome_from_body(
    body: object,
    call: ProviderCall,
    *,
    request_id: str | None,
    response_id: str | None = None,
    streamed: bool = False,
) -> CallOutcome:
    """Read the usage of one complete response body.

    Args:
        body: the decoded JSON of a response (``Response``, ``ChatCompletion``,
            ``Completion``, ``CreateEmbeddingResponse``, a compacted response
            or a chat chunk that carries usage), or the SDK object for it.
        call: the request that produced the body.
        request_id: the ``x-request-id`` header, used as the response id when
            neither the body nor ``response_id`` gives one.
        response_id: the response id seen earlier in the same stream, used
            when the body has none.
        streamed: whether the body arrived as the last part of a stream.

    Returns:
        The usage to bill, or an :class:`UnmeteredCall` that says why it
        cannot be billed (``missing_usage`` or ``invalid_usage``).
    """
    document = as_document(body)
    if not isinstance(document, Mapping):
        name = name_response(response_id, request_id)
        return missing_usage(
            call,
            f"{name} from {call.path} is not a JSON object "
            f"({type(document).__name__}). {NOT_BILLED}",
            response_id or request_id,
        )
    body_id = document.get("id")
    if isinstance(body_id, str) and body_id:
        response_id = body_id
    seen_id = response_id or request_id
    source = f"{name_response(response_id, request_id)} from {call.path}"
    model = _served_model(document, call)
    raw_usage = document.get("usage")
    if raw_usage is None:
        return missing_usage(
            call, _missing_usage_message(document, source), seen_id, model
        )
    try:
        usage = _read_usage(
            document,
            raw_usage,
            call,
            _Identity(seen_id or _local_response_id(call), source),
            model,
            streamed,
        )
    except InvalidUsageError as exc:
        return UnmeteredCall(
            call=call,
            reason="invalid_usage",
            message=str(exc),
            response_id=seen_id,
            model=model,
            raw_usage=raw_usage,
            error=exc,
        )
    logger.debug(
        "%s used %d input and %d output tokens",
        source,
        usage.input_tokens,
        usage.output_tokens,
    )
    return usage


def missing_usage(
    call: ProviderCall,
    message: str,
    response_id: str | None,
    model: str | None = None,
    cause: Exception | None = None,
) -> UnmeteredCall:
    """Report a response without usage, with a ``MissingUsageError`` as its error.

    Args:
        call: the request that produced the response.
        message: names the response or request id and the endpoint.
        response_id: the response id, else the request id, if either is known.
        model: the served model, when one was seen.
        cause: the exception that kept the usage from being read, chained
            to the error as its ``__cause__``.
    """
    error = MissingUsageError(message, response_id=response_id)
    error.__cause__ = cause
    return UnmeteredCall(
        call=call,
        reason="missing_usage",
        message=message,
        response_id=response_id,
        model=model,
        error=error,
    )


def _missing_usage_message(document: Mapping[str, Any], source: str) -> str:
    if document.get("background") is not True:
        return f"{source} has no usage. {NOT_BILLED}"
    # A background response reports its usage only to a later retrieve,
    # which is never billed, so the call cannot be billed at all.
    status = document.get("status")
    return (
        f"{source} has no usage yet because it was created with "
        f"background=True (status {status!r}). blnk_meter does not meter "
        f"background responses, whose usage arrives only when they are "
        f"retrieved. {NOT_BILLED}"
    )


@dataclass(frozen=True)
class _Identity:
    """The id a usage object is billed under, and the words naming it."""

    response_id: str
    """The response id, else the request id, else a local id."""
    source: str
    """The response and its endpoint, as messages name them."""


def _read_usage(
    document: Mapping[str, Any],
    raw_usage: object,
    call: ProviderCall,
    identity: _Identity,
    model: str | None,
    streamed: bool,
) -> Usage:
    shape = _SHAPES[call.endpoint]
    counts = _Counts.read(raw_usage, shape, identity)
    if model is None:
        raise InvalidUsageError(
            f"invalid usage in {identity.source}: neither the response nor "
            f"the request names a model. {NOT_BILLED}",
            response_id=identity.response_id,
            raw_usage=raw_usage,
        )
    status = document.get("status")
    response_id = identity.response_id
    return Usage(
        endpoint=call.endpoint,
        model=model,
        requested_model=call.requested_model,
        response_id=response_id,
        input_tokens=counts.input,
        cached_input_tokens=counts.cached,
        output_tokens=counts.output,
        reasoning_tokens=counts.reasoning,
        status=status if isinstance(status, str) else None,
        streamed=streamed,
        tool_usage=_tool_usage(document, identity.source),
        raw_usage=copy.deepcopy(dict(counts.raw)),
    )


@dataclass(frozen=True)
class _Counts:
    raw: Mapping[str, Any]
    input: int
    cached: int
    output: int
    reasoning: int

    @classmethod
    def read(cls, raw: object, shape: _UsageShape, identity: _Identity) -> _Counts:
        reader = _CountReader(identity, raw)
        usage = reader.mapping(raw, "usage")
        input_tokens = reader.count(usage, shape.input, "usage")
        cached = reader.detail(usage, shape.input_details, "cached_tokens")
        output_tokens = 0
        reasoning = 0
        if shape.output is not None and shape.output_details is not None:
            output_tokens = reader.count(usage, shape.output, "usage")
            reasoning = reader.detail(usage, shape.output_details, "reasoning_tokens")
        if cached > input_tokens:
            raise reader.error(
                f"usage.{shape.input_details}.cached_tokens ({cached}) exceeds "
                f"usage.{shape.input} ({input_tokens}), but cached tokens are part "
                "of the input"
            )
        if reasoning > output_tokens:
            raise reader.error(
                f"usage.{shape.output_details}.reasoning_tokens ({reasoning}) exceeds "
                f"usage.{shape.output} ({output_tokens}), but reasoning tokens are "
                "part of the output"
            )
        return cls(usage, input_tokens, cached, output_tokens, reasoning)


class _CountReader:
    """Checker of the counts in one usage object; its errors name the bad count."""

    def __init__(self, identity: _Identity, raw: object) -> None:
        self._identity = identity
        self._raw = raw

    def error(self, problem: str) -> InvalidUsageError:
        return InvalidUsageError(
            f"invalid usage in {self._identity.source}: {problem}. {NOT_BILLED}",
            response_id=self._identity.response_id,
            raw_usage=self._raw,
        )

    def mapping(self, value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(f"{path} is {value!r}, expected a JSON object")
        return value

    def count(self, parent: Mapping[str, Any], key: str, path: str) -> int:
        if key not in parent:
            raise self.error(f"{path}.{key} is missing")
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(
                f"{path}.{key} is {value!r}, expected a non-negative integer"
            )
        return value

    def detail(self, usage: Mapping[str, Any], container: str, key: str) -> int:
        """Read a breakdown count, which is 0 when the provider left it out.

        Providers send ``*_details`` only when the model reports a breakdown,
        so an absent or null object, or an absent key in it, means none of the
        tokens were cached (or reasoning). A value that is present must be a
        valid count.
        """
        details = usage.get(container)
        if details is None:
            return 0
        details = self.mapping(details, f"usage.{container}")
        if key not in details:
            return 0
        return self.count(details, key, f"usage.{container}")


def _served_model(document: Mapping[str, Any], call: ProviderCall) -> str | None:
    model = document.get("model")
    if isinstance(model, str) and model:
        return model
    if call.requested_model and call.is_azure:
        _warn_once(
            "azure_model",
            call.endpoint,
            "an Azure OpenAI response from %s names no model; billing the "
            "requested name %r, which is an Azure deployment name, not a model. "
            "Pricing fails unless the price book has a price for that name, and "
            "is wrong if that price is not the deployed model's",
            call.path,
            call.requested_model,
        )
    elif call.requested_model:
        _warn_once(
            "model",
            call.endpoint,
            "a response from %s names no model; billing the requested model %r "
            "instead of the served snapshot",
            call.path,
            call.requested_model,
        )
    return call.requested_model or None


def _local_response_id(call: ProviderCall) -> str:
    local_id = f"local-{uuid.uuid4()}"
    logger.warning(
        "a response from %s has neither an id nor an x-request-id header; using "
        "%s, so a retried posting of it cannot be recognised as a duplicate",
        call.path,
        local_id,
    )
    return local_id


def _tool_usage(document: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    tool_usage = document.get("tool_usage")
    if tool_usage is None:
        return None
    if not isinstance(tool_usage, Mapping):
        logger.warning(
            "%s has tool_usage %r, expected a JSON object; ignoring it",
            source,
            tool_usage,
        )
        return None
    return copy.deepcopy(dict(tool_usage))
