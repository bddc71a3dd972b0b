"""Patch the OpenAI SDK so every billable call reaches a recorder exactly once.

The patches are wrapt wrappers on SDK internals that every call passes
through, whichever resource method, helper or client instance made it:

- ``SyncAPIClient.request`` / ``AsyncAPIClient.request`` run once per SDK
  call, and the SDK's retries happen inside them. They tell the recorder
  about billable POSTs, add ``stream_options.include_usage`` to chat and
  completion streams, and read the usage of plain responses.
- ``_send_request`` runs once per attempt, so it sees the attempts whose
  response was lost, retried ones included (see :mod:`blnk_meter._attempts`).
- ``BaseClient._process_response_data`` sees the JSON of every body and
  stream event before the SDK turns it into models, which may coerce counts.
- ``Stream.__stream__`` / ``AsyncStream.__stream__`` return metering
  iterators (see :mod:`blnk_meter._metered_stream`).
- The ``parse``, ``read``, ``iter_*`` and ``close`` methods of the raw
  response classes meter ``with_raw_response`` and ``with_streaming_response``
  (see :mod:`blnk_meter._raw_response`).
- The websocket ``connect`` methods only log that their calls are not metered.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import wrapt

from . import _raw_response as raw
from ._attempts import (
    areport_retried,
    async_send_wrapper,
    report_retried,
    sync_send_wrapper,
    tracking_attempts,
)
from ._billable import (
    STREAM_USAGE_ENDPOINTS,
    ask_for_stream_usage,
    asks_for_stream_usage,
    describe_call,
    warn_unmetered,
)
from ._call_outcome import outcome_now, outcome_of_failure
from ._metered_call import (
    MeteredCall,
    Settings,
    capturing,
    record_raw_data,
    settle_calls_at_exit,
)
from ._metered_stream import AsyncMeteredStreamIterator, MeteredStreamIterator
from ._recorder import Recorder
from ._usage import ProviderCall
from .errors import BlnkMeterError

__all__ = ["install", "is_installed", "uninstall"]

logger = logging.getLogger(__name__)

_WEBSOCKET_RESOURCES = {
    "openai.resources.responses.responses": ("Responses", "responses websocket"),
    "openai.resources.beta.responses.responses": (
        "Responses",
        "beta responses websocket",
    ),
    "openai.resources.realtime.realtime": ("Realtime", "realtime"),
    "openai.resources.beta.realtime.realtime": ("Realtime", "beta realtime"),
    "openai.resources.realtime.translations.translations": (
        "Translations",
        "realtime translations",
    ),
    "openai.resources.live.live": ("Live", "live"),
    "openai.resources.live.forks": ("Forks", "live forks"),
    "openai.resources.live.sideband": ("Sideband", "live sideband"),
}
"""Resources whose websocket ``connect()`` bypasses ``request`` and is not
metered: module, sync class name (the async one adds ``Async``), label."""

_EXIT_WAIT_SECONDS = 1.0
"""How long the exit hook waits for the background worker to settle the
calls it was handed, before it reports them as unmetered."""

_lock = threading.RLock()
_settings: Settings | None = None
_patches: list[tuple[ModuleType, str, object]] = []
_is_hook_registered = False
_is_exit_hook_registered = False


def install(
    recorder: Recorder, *, inject_stream_usage: bool = True, drain_on_close: bool = True
) -> None:
    """Patch the OpenAI SDK so that ``recorder`` hears of every billable call.

    Works whether ``openai`` is imported before or after this call: when it is
    not imported yet, the patches are applied as soon as it is. Calling it
    again replaces the recorder and settings and leaves the patches as they
    are; calls already begun finish with the recorder that began them.

    Args:
        recorder: receives ``begin`` before each billable request is sent and
            exactly one ``finish`` or ``cancel`` afterwards.
        inject_stream_usage: add ``stream_options.include_usage`` to chat and
            legacy completion streams that did not ask for usage, and hide the
            extra usage chunk from the events the caller iterates. The raw
            bytes of ``with_streaming_response`` and ``with_raw_response``
            (``iter_bytes()``, ``iter_lines()``, ``read()``) still contain it,
            as the provider sent them. Without it, such streams are reported
            as ``stream_without_usage``.
        drain_on_close: when the caller stops reading a stream before its
            usage arrived, or closes or drops a raw response before reading
            its body, read the rest without passing it on, so the usage the
            provider bills is known. The cost: the connection stays open
            until the provider finishes, so the whole response is generated
            and billed by the provider, and ``close()`` waits for it. A
            dropped sync stream or raw response is read on by a background
            thread instead. With ``False``, generation stops sooner, but such
            calls are reported as unmetered.

    The first call also registers an exit hook. It waits up to a second for
    the background thread, then reports the calls still unsettled as
    unmetered (``stream_interrupted``), without reading the responses the
    program still holds.
    """
    global _settings, _is_hook_registered, _is_exit_hook_registered
    with _lock:
        _settings = Settings(
            recorder=recorder,
            inject_stream_usage=inject_stream_usage,
            drain_on_close=drain_on_close,
        )
        if "openai" in sys.modules:
            _apply_patches()
        elif not _is_hook_registered:
            wrapt.register_post_import_hook(_on_openai_imported, "openai")
            _is_hook_registered = True
        if not _is_exit_hook_registered:
            # atexit runs hooks last in, first out, and logging registered its
            # shutdown when it was imported, so logging still works here.
            atexit.register(settle_calls_at_exit, _EXIT_WAIT_SECONDS)
            _is_exit_hook_registered = True
    logger.debug("OpenAI instrumentation installed")


def uninstall() -> None:
    """Remove every patch, so the SDK behaves as if it was never installed.

    Streams and raw responses created before this call keep being metered
    until they end.
    """
    global _settings
    with _lock:
        _settings = None
        while _patches:
            module, name, handle = _patches.pop()
            wrapt.unwrap_object(module, name, handle, missing_ok=True)
    logger.debug("OpenAI instrumentation removed")


def is_installed() -> bool:
    """Return whether billable OpenAI calls are being metered."""
    return _settings is not None


def _on_openai_imported(module: ModuleType) -> None:
    with _lock:
        if _settings is not None:
            _apply_patches()


def _apply_patches() -> None:
    if _patches:
        return
    raw_response_methods: tuple[tuple[str, Callable[..., Any]], ...] = (
        ("LegacyAPIResponse.parse", raw.parse_wrapper),
        ("APIResponse.parse", raw.parse_wrapper),
        ("APIResponse.read", raw.read_wrapper),
        ("APIResponse.iter_bytes", raw.chunks_wrapper(is_line=False)),
        ("APIResponse.iter_text", raw.chunks_wrapper(is_line=False)),
        ("APIResponse.iter_lines", raw.chunks_wrapper(is_line=True)),
        ("APIResponse.close", raw.close_wrapper),
        ("AsyncAPIResponse.parse", raw.async_parse_wrapper),
        ("AsyncAPIResponse.read", raw.async_read_wrapper),
        ("AsyncAPIResponse.iter_bytes", raw.async_chunks_wrapper(is_line=False)),
        ("AsyncAPIResponse.iter_text", raw.async_chunks_wrapper(is_line=False)),
        ("AsyncAPIResponse.iter_lines", raw.async_chunks_wrapper(is_line=True)),
        ("AsyncAPIResponse.close", raw.async_close_wrapper),
    )
    _patch("openai._base_client", "SyncAPIClient.request", _sync_request)
    _patch("openai._base_client", "AsyncAPIClient.request", _async_request)
    _patch("openai._base_client", "SyncAPIClient._send_request", sync_send_wrapper)
    _patch("openai._base_client", "AsyncAPIClient._send_request", async_send_wrapper)
    _patch("openai._base_client", "BaseClient._process_response_data", _capture_data)
    _patch("openai._streaming", "Stream.__stream__", _sync_stream_events)
    _patch("openai._streaming", "AsyncStream.__stream__", _async_stream_events)
    for name, wrapper in raw_response_methods:
        module = (
            "openai._legacy_response"
            if name.startswith("Legacy")
            else "openai._response"
        )
        _patch(module, name, wrapper)
    for module_name, (resource, label) in _WEBSOCKET_RESOURCES.items():
        for name in (f"{resource}.connect", f"Async{resource}.connect"):
            try:
                _patch(module_name, name, _warning_connect(label))
            except (ImportError, AttributeError):
                logger.debug("no websocket method %s.%s to watch", module_name, name)
    logger.debug("patched the OpenAI SDK in %d places", len(_patches))


def _patch(module_name: str, name: str, wrapper: Callable[..., Any]) -> None:
    module = sys.modules.get(module_name)
    if module is None:
        module = __import__(module_name, fromlist=["_"])
    handle = wrapt.wrap_function_wrapper(module, name, wrapper)
    _patches.append((module, name, handle))


# Calls --------------------------------------------------------------------


def _warning_connect(label: str) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        warn_unmetered(label)
        return wrapped(*args, **kwargs)

    return wrapper


def _options_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("options")


def _with_options(
    args: tuple[Any, ...], kwargs: dict[str, Any], options: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(args) > 1:
        return (args[0], options, *args[2:]), kwargs
    return args, {**kwargs, "options": options}


def _describe(
    client: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, is_async: bool
) -> ProviderCall | None:
    from openai import AsyncAzureOpenAI, AzureOpenAI

    try:
        options = _options_of(args, kwargs)
        return describe_call(
            options,
            stream=bool(kwargs.get("stream")),
            is_async=is_async,
            is_azure=isinstance(client, (AzureOpenAI, AsyncAzureOpenAI)),
        )
    except Exception:
        logger.exception("failed to inspect an OpenAI request; it is not metered")
        return None


def _prepare(
    call: ProviderCall,
    token: object,
    settings: Settings,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[MeteredCall, tuple[Any, ...], dict[str, Any]]:
    """Build the metered call, asking chat and completion streams for usage."""
    if not call.stream or call.endpoint not in STREAM_USAGE_ENDPOINTS:
        return MeteredCall(call, token, settings), args, kwargs
    options = _options_of(args, kwargs)
    if asks_for_stream_usage(options):
        metered = MeteredCall(call, token, settings, expects_stream_usage=True)
        return metered, args, kwargs
    injected = None
    if settings.inject_stream_usage:
        try:
            injected = ask_for_stream_usage(options)
        except Exception:
            logger.exception("failed to ask a stream of %s for usage", call.path)
    if injected is None:
        return MeteredCall(call, token, settings), args, kwargs
    metered = MeteredCall(
        call, token, settings, expects_stream_usage=True, hides_usage_chunk=True
    )
    return metered, *_with_options(args, kwargs, injected)


def _begin(recorder: Recorder, call: ProviderCall) -> object | None:
    try:
        return recorder.begin(call)
    except BlnkMeterError:
        raise
    except Exception:
        _log_begin_error(call)
        return None


async def _abegin(recorder: Recorder, call: ProviderCall) -> object | None:
    try:
        return await recorder.abegin(call)
    except BlnkMeterError:
        raise
    except Exception:
        _log_begin_error(call)
        return None


def _log_begin_error(call: ProviderCall) -> None:
    logger.exception(
        "recorder begin() failed for a call to %s; the call is sent unmetered",
        call.path,
    )


def _sync_request(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    settings = _settings
    call = None
    if settings is not None:
        call = _describe(instance, args, kwargs, is_async=False)
    if settings is None or call is None:
        return wrapped(*args, **kwargs)
    token = _begin(settings.recorder, call)
    if token is None:
        return wrapped(*args, **kwargs)
    metered, args, kwargs = _prepare(call, token, settings, args, kwargs)
    try:
        with capturing() as capture, tracking_attempts() as attempts:
            result = wrapped(*args, **kwargs)
    except BaseException as exc:
        report_retried(settings, call, attempts)
        outcome = outcome_of_failure(metered, capture, attempts, exc)
        if outcome is None:
            metered.cancel(exc)
        else:
            metered.finish(outcome)
        raise
    report_retried(settings, call, attempts)
    outcome = outcome_now(metered, result, capture)
    if outcome is not None:
        metered.finish(outcome)
    return result


async def _async_request(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    settings = _settings
    call = None
    if settings is not None:
        call = _describe(instance, args, kwargs, is_async=True)
    if settings is None or call is None:
        return await wrapped(*args, **kwargs)
    token = await _abegin(settings.recorder, call)
    if token is None:
        return await wrapped(*args, **kwargs)
    metered, args, kwargs = _prepare(call, token, settings, args, kwargs)
    try:
        with capturing() as capture, tracking_attempts() as attempts:
            result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        await areport_retried(settings, call, attempts)
        outcome = outcome_of_failure(metered, capture, attempts, exc)
        if outcome is None:
            await metered.acancel(exc)
        else:
            await metered.afinish(outcome)
        raise
    await areport_retried(settings, call, attempts)
    outcome = outcome_now(metered, result, capture)
    if outcome is not None:
        await metered.afinish(outcome)
    return result


def _capture_data(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    data = kwargs.get("data")
    recorded = record_raw_data(data, kwargs.get("response"))
    if recorded is not data:
        kwargs = {**kwargs, "data": recorded}
    return wrapped(*args, **kwargs)


def _sync_stream_events(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> MeteredStreamIterator:
    return MeteredStreamIterator(lambda: wrapped(*args, **kwargs))


def _async_stream_events(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncMeteredStreamIterator:
    return AsyncMeteredStreamIterator(lambda: wrapped(*args, **kwargs))
