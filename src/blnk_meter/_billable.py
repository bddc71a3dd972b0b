"""The rules that decide which OpenAI requests are billed, and how they change.

Only POSTs to the endpoints in :data:`BILLABLE_PATHS` are metered. Reading
a stored response (``GET /responses/{id}``, also used to resume a stream) is
never billed again. A few other POSTs cost money without being metered;
each of them is logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ._usage import Endpoint, ProviderCall

__all__ = [
    "BILLABLE_PATHS",
    "STREAM_USAGE_ENDPOINTS",
    "UNMETERED_PATH_PREFIXES",
    "ask_for_stream_usage",
    "asks_for_stream_usage",
    "describe_call",
    "request_body",
    "warn_unmetered",
]

logger = logging.getLogger(__name__)

BILLABLE_PATHS: dict[str, Endpoint] = {
    "/responses": "responses",
    "/responses/compact": "responses.compact",
    "/chat/completions": "chat.completions",
    "/completions": "completions",
    "/embeddings": "embeddings",
}
"""Request paths of the metered endpoints; only POSTs to them are billed."""

UNMETERED_PATH_PREFIXES = (
    "/audio/speech",
    "/audio/transcriptions",
    "/audio/translations",
    "/images/generations",
    "/images/edits",
    "/images/variations",
    "/videos",
    "/realtime",
    "/batches",
    "/fine_tuning/jobs",
    "/fine_tuning/alpha/graders/run",
    "/containers",
    "/decisions",
    "/threads/runs",
    "/threads/{thread_id}/runs",
    "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
    "/evals/{eval_id}/runs",
    "/agents/sessions",
    "/agents/sessions/{session_id}/events",
    "/agents/automations/{automation_id}/invocations",
    "/live/sessions",
    "/chatkit/sessions",
)
"""POSTs that cost money or report usage but are not metered; each is logged
once. A ``{name}`` segment matches any one segment, and a path under a prefix
matches it too. A path is logged under the longest prefix it matches."""

_warned_endpoints: set[str] = set()
_warned_lock = threading.Lock()


def describe_call(
    options: Any, *, stream: bool, is_async: bool, is_azure: bool = False
) -> ProviderCall | None:
    """Describe a request if it goes to a billable endpoint.

    Args:
        options: the SDK's ``FinalRequestOptions`` of the request.
        stream: whether the SDK will return a stream for it.
        is_async: whether an async client sends it.
        is_azure: whether an Azure OpenAI client sends it, so its ``model``
            names a deployment.

    Returns:
        The call, or ``None`` for requests that are not billed: other
        methods, other paths (logged once when they cost money).
    """
    method = str(getattr(options, "method", "")).upper()
    path = _path_of(str(getattr(options, "url", "")))
    endpoint = BILLABLE_PATHS.get(path)
    if method != "POST":
        return None
    if endpoint is None:
        _warn_if_unmetered(path)
        return None
    body = request_body(options)
    model = body.get("model")
    return ProviderCall(
        endpoint=endpoint,
        method=method,
        path=path,
        requested_model=model if isinstance(model, str) and model else None,
        stream=stream or body.get("stream") is True,
        is_async=is_async,
        is_azure=is_azure,
    )


def _path_of(url: str) -> str:
    """Return the path of a request URL, without query and trailing slash."""
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0]
    return path.rstrip("/") or "/"


def request_body(options: Any) -> Mapping[str, Any]:
    """Return the JSON body as the SDK will send it: ``extra_body`` wins."""
    body = getattr(options, "json_data", None)
    extra = getattr(options, "extra_json", None)
    merged: dict[str, Any] = dict(body) if isinstance(body, Mapping) else {}
    if isinstance(extra, Mapping):
        merged.update(extra)
    return merged


def _warn_if_unmetered(path: str) -> None:
    segments = path.strip("/").split("/")
    matches = [
        prefix
        for prefix in UNMETERED_PATH_PREFIXES
        if _starts_with(segments, prefix.strip("/").split("/"))
    ]
    if matches:
        warn_unmetered(max(matches, key=lambda prefix: prefix.count("/")))


def _starts_with(segments: list[str], prefix: list[str]) -> bool:
    """Return whether path ``segments`` begin with a prefix's segments."""
    if len(segments) < len(prefix):
        return False
    return all(
        expected == actual or (expected.startswith("{") and actual != "")
        for expected, actual in zip(prefix, segments, strict=False)
    )


def warn_unmetered(endpoint: str) -> None:
    """Log, once per endpoint, that its calls are not metered."""
    with _warned_lock:
        if endpoint in _warned_endpoints:
            return
        _warned_endpoints.add(endpoint)
    logger.warning(
        "OpenAI %s calls cost money but blnk_meter does not meter them; their "
        "usage is not posted to the ledger",
        endpoint,
    )


STREAM_USAGE_ENDPOINTS: frozenset[Endpoint] = frozenset(
    {"chat.completions", "completions"}
)
"""Endpoints whose streams carry usage only when ``stream_options`` requests it."""


def asks_for_stream_usage(options: Any) -> bool:
    """Return whether the request sets ``stream_options.include_usage``."""
    stream_options = request_body(options).get("stream_options")
    return (
        isinstance(stream_options, Mapping)
        and stream_options.get("include_usage") is True
    )


def ask_for_stream_usage(options: Any) -> Any | None:
    """Return a copy of ``options`` whose body sets ``include_usage``.

    Other ``stream_options`` keys are kept and the caller's dicts are left
    untouched. ``extra_body`` takes the option when it carries
    ``stream_options``, because the SDK lets it replace the body's.

    Returns:
        The new options, or ``None`` when the body cannot take the option:
        it is not a JSON object, or its ``stream_options`` is not one.
    """
    stream_options = request_body(options).get("stream_options")
    if stream_options is None:
        stream_options = {}
    if not isinstance(stream_options, Mapping):
        return None
    updated = {**stream_options, "include_usage": True}
    extra = options.extra_json
    if isinstance(extra, Mapping) and "stream_options" in extra:
        extra = {**extra, "stream_options": updated}
        return options.model_copy(update={"extra_json": extra})
    body = options.json_data
    if not isinstance(body, Mapping):
        return None
    body = {**body, "stream_options": updated}
    return options.model_copy(update={"json_data": body})
