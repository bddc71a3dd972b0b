"""Typed values that describe one provider call and the tokens it used.

These are the values the OpenAI instrumentation hands to a meter. They know
nothing of prices or ledgers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

__all__ = ["Endpoint", "ProviderCall", "UnmeteredCall", "UnmeteredReason", "Usage"]

Endpoint = Literal[
    "responses",
    "responses.compact",
    "chat.completions",
    "completions",
    "embeddings",
]
"""The billable OpenAI endpoints, named after the SDK resource that calls them."""

UnmeteredReason = Literal[
    "missing_usage",
    "invalid_usage",
    "stream_without_usage",
    "stream_interrupted",
    "stream_error",
    "response_lost",
]
"""Why a call's usage is unknown:

- ``missing_usage``: a complete response carried no usage object.
- ``invalid_usage``: the usage object had unusable counts.
- ``stream_without_usage``: the stream ended normally but never sent usage.
- ``stream_interrupted``: the stream or raw response was cut, closed, failed
  or still open at exit before its usage was read.
- ``stream_error``: the provider sent an error event instead of a terminal event.
- ``response_lost``: the request was sent but no response arrived (a timeout,
  a dropped connection, a cancelled task), so the provider may have billed it.
"""

NonNegativeInt = StrictInt


@dataclass(frozen=True)
class ProviderCall:
    """One HTTP request to the provider, as seen before it is sent.

    Attributes:
        endpoint: the billable endpoint the request goes to.
        method: the HTTP method, upper case.
        path: the request path, e.g. ``/chat/completions``.
        requested_model: the ``model`` field of the request body, which may
            be an alias (``gpt-4o``) of the snapshot that serves it.
        stream: whether the caller asked for a server-sent event stream.
        is_async: whether an async client made the request.
        is_azure: whether an Azure OpenAI client made the request; its
            ``model`` field is then a deployment name, not a model name.
    """

    endpoint: Endpoint
    method: str
    path: str
    requested_model: str | None
    stream: bool
    is_async: bool
    is_azure: bool = False


class Usage(BaseModel):
    """Tokens one provider response used, read from the provider's own counts.

    ``input_tokens`` includes ``cached_input_tokens`` and ``output_tokens``
    includes ``reasoning_tokens``, as the provider reports them: the cached
    part is priced at the cached rate instead of the input rate, and reasoning
    is priced as output, never a second time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: Endpoint
    model: str = Field(min_length=1)
    """The model as served, e.g. ``gpt-4o-2024-08-06``, not the requested alias."""
    requested_model: str | None = None
    response_id: str = Field(min_length=1)
    """The provider's response id, or its ``x-request-id`` when the body has none."""
    input_tokens: NonNegativeInt = Field(ge=0)
    cached_input_tokens: NonNegativeInt = Field(default=0, ge=0)
    output_tokens: NonNegativeInt = Field(default=0, ge=0)
    reasoning_tokens: NonNegativeInt = Field(default=0, ge=0)
    status: str | None = None
    """The response status, when the provider reports one (``completed``, ...)."""
    streamed: bool = False
    tool_usage: dict[str, Any] | None = None
    """Hosted-tool usage (web search calls, image tokens) as the provider sent it."""
    raw_usage: dict[str, Any] | None = None
    """The usage object exactly as the provider sent it, for reconciliation."""

    @model_validator(mode="after")
    def _check_parts(self) -> Usage:
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError(
                f"cached_input_tokens ({self.cached_input_tokens}) exceeds "
                f"input_tokens ({self.input_tokens}); cached tokens are part of input"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceeds "
                f"output_tokens ({self.output_tokens}); reasoning is part of output"
            )
        return self

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens priced at the full input rate."""
        return self.input_tokens - self.cached_input_tokens

    @property
    def total_tokens(self) -> int:
        """Tokens posted on the TOKENS leg: input plus output."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UnmeteredCall:
    """A provider call whose usage is unknown, so nothing could be posted.

    It is reported (log, error hook, counter), never recorded as zero tokens.

    Attributes:
        call: the request as it was sent.
        reason: why the usage is unknown.
        message: a sentence for humans naming the response and the cause.
        response_id: the provider's response id, when one was seen.
        model: the served model, when one was seen.
        raw_usage: the usage as the provider sent it, when it was unusable.
        error: the exception that made the usage unusable, if any.
    """

    call: ProviderCall
    reason: UnmeteredReason
    message: str
    response_id: str | None = None
    model: str | None = None
    raw_usage: Any = None
    error: BaseException | None = None
