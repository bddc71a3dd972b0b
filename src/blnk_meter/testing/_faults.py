"""Faults injected on purpose into the embedded ledger's transports and server.

Faults are counted, not random: ``fail_next(2)`` fails exactly the next two
matching requests. They act at the network edge, so
:meth:`EmbeddedLedger.handle` and the convenience methods that call it are not
affected. The same controls are reachable over HTTP at ``/_embedded/faults``,
behind the ledger's API key when it has one.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from ._apierror import ApiError, error_body

__all__ = [
    "ADMIN_PATH",
    "JSON_HEADERS",
    "Admin",
    "FaultPlan",
    "Faults",
    "RawResponse",
    "not_found",
]

logger = logging.getLogger(__name__)

ADMIN_PATH = "/_embedded/faults"
"""Path of the fault controls; Blnk has no route under ``/_embedded``."""

JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

RawResponse = tuple[int, dict[str, str], bytes]


def not_found() -> RawResponse:
    """Return the plain-text 404 that Blnk's router sends for unknown paths."""
    return 404, {"Content-Type": "text/plain"}, b"404 page not found"


Admin = Callable[
    [str, Mapping[str, str], bytes], tuple[RawResponse, Callable[[], None] | None]
]
"""Serves the fault controls: method, headers and body in; response and
outage action out."""


@dataclass
class _Rule:
    kind: str
    remaining: int
    path_prefix: str | None
    seconds: float = 0.0
    response: RawResponse | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.kind == "reject_funds" and method not in ("POST", "PUT"):
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "remaining": self.remaining,
            "path_prefix": self.path_prefix,
        }


@dataclass(frozen=True)
class FaultPlan:
    """The effect of the faults on one request.

    Attributes:
        delay: seconds to wait before the request is processed.
        response: a canned response sent instead of processing, or ``None``.
        drop: process and commit the request, then send no response.
    """

    delay: float = 0.0
    response: RawResponse | None = None
    drop: bool = False


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"fault count {n!r} is invalid; pass an integer >= 1")
    return n


def _check_seconds(seconds: object, name: str, *, allow_zero: bool) -> float:
    bound = ">= 0" if allow_zero else "> 0"
    invalid = ConfigurationError(
        f"{name} {seconds!r} is invalid; pass a finite number of seconds {bound}"
    )
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise invalid
    try:
        value = float(seconds)
    except OverflowError:
        raise invalid from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise invalid
    return value


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} {value!r} is invalid; pass a string")
    return value


def _check_prefix(path_prefix: object) -> str | None:
    if path_prefix is not None and not isinstance(path_prefix, str):
        raise ConfigurationError(
            f"path_prefix {path_prefix!r} is invalid; pass a path such as"
            " '/transactions', or None for every path"
        )
    return path_prefix


def _fail_rule(
    n: int,
    status: int = 500,
    code: str = "GEN_INTERNAL",
    message: str = "internal server error",
    *,
    path_prefix: str | None = None,
) -> _Rule:
    """Build the rule of :meth:`Faults.fail_next` after checking its arguments."""
    if isinstance(status, bool) or not isinstance(status, int):
        raise ConfigurationError(f"fault status {status!r} is invalid; pass 400 to 599")
    if not 400 <= status <= 599:
        raise ConfigurationError(
            f"fault status {status!r} is not an error; pass 400 to 599"
        )
    error = ApiError(_check_text(code, "fault code"), _check_text(message, "message"))
    response = (status, dict(JSON_HEADERS), error_body(error))
    count, prefix = _check_count(n), _check_prefix(path_prefix)
    return _Rule("fail", count, prefix, response=response)


def _delay_rule(n: int, seconds: float, *, path_prefix: str | None = None) -> _Rule:
    """Build the rule of :meth:`Faults.delay_next` after checking its arguments."""
    delay = _check_seconds(seconds, "delay", allow_zero=True)
    count, prefix = _check_count(n), _check_prefix(path_prefix)
    return _Rule("delay", count, prefix, seconds=delay)


def _drop_rule(n: int, *, path_prefix: str | None = None) -> _Rule:
    """Build the rule of :meth:`Faults.drop_after_commit` after checking it."""
    return _Rule("drop", _check_count(n), _check_prefix(path_prefix))


def _reject_funds_rule(n: int, *, path_prefix: str | None = None) -> _Rule:
    """Build the rule of :meth:`Faults.reject_funds_next` after checking it."""
    message = (
        "failed to apply transaction to balances: insufficient funds in source balance"
    )
    body = error_body(ApiError("TXN_INSUFFICIENT_FUNDS", message))
    response = (400, dict(JSON_HEADERS), body)
    count, prefix = _check_count(n), _check_prefix(path_prefix)
    return _Rule("reject_funds", count, prefix, response=response)


def _check_outage(for_seconds: object) -> float | None:
    """Check the argument of :meth:`Faults.down` and return it as a float."""
    if for_seconds is None:
        return None
    return _check_seconds(for_seconds, "down time", allow_zero=False)


class Faults:
    """Deterministic faults shared by a ledger's transports and HTTP server.

    Every method is safe to call from any thread. ``path_prefix`` restricts a
    fault to requests whose path starts with it, e.g. ``"/transactions"``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._down = False
        self._timer: threading.Timer | None = None
        self._listeners: list[Callable[[bool], None]] = []

    def __repr__(self) -> str:
        with self._lock:
            return f"Faults(rules={len(self._rules)}, down={self._down})"

    def _arm(self, rules: list[_Rule], *, clear: bool = False) -> None:
        # One lock covers the batch, so other threads see all of it or none.
        with self._lock:
            if clear:
                self._rules.clear()
            self._rules.extend(rules)

    def fail_next(
        self,
        n: int,
        status: int = 500,
        code: str = "GEN_INTERNAL",
        message: str = "internal server error",
        *,
        path_prefix: str | None = None,
    ) -> None:
        """Respond to the next ``n`` requests with an error, without processing them.

        Args:
            n: how many requests fail.
            status: the HTTP status of the error response.
            code: its ``error_detail.code``.
            message: its error message.
            path_prefix: only requests whose path starts with this count.

        Raises:
            ConfigurationError: ``n`` is not a positive integer, ``status``
                is not an HTTP error status, or another argument has the
                wrong type.
        """
        rule = _fail_rule(n, status, code, message, path_prefix=path_prefix)
        self._arm([rule])

    def delay_next(
        self, n: int, seconds: float, *, path_prefix: str | None = None
    ) -> None:
        """Hold the next ``n`` requests for ``seconds`` before processing them.

        Raises:
            ConfigurationError: ``n`` or ``seconds`` is invalid.
        """
        self._arm([_delay_rule(n, seconds, path_prefix=path_prefix)])

    def drop_after_commit(self, n: int, *, path_prefix: str | None = None) -> None:
        """Process and commit the next ``n`` requests, then send no response.

        The in-process transports raise ``httpx.RemoteProtocolError``; the
        HTTP server closes the connection without a response.

        Raises:
            ConfigurationError: ``n`` or ``path_prefix`` is invalid.
        """
        self._arm([_drop_rule(n, path_prefix=path_prefix)])

    def reject_funds_next(self, n: int, *, path_prefix: str | None = None) -> None:
        """Reject the next ``n`` POST or PUT requests with ``TXN_INSUFFICIENT_FUNDS``.

        Nothing is written; other methods pass through and are not counted.

        Raises:
            ConfigurationError: ``n`` or ``path_prefix`` is invalid.
        """
        self._arm([_reject_funds_rule(n, path_prefix=path_prefix)])

    def down(self, for_seconds: float | None = None) -> None:
        """Make the ledger unreachable until :meth:`up`, or for ``for_seconds``.

        In-process transports raise ``httpx.ConnectError``; the HTTP server
        closes its listening socket and open connections, so connections are
        refused.

        Raises:
            ConfigurationError: ``for_seconds`` is not a finite number > 0.
        """
        seconds = _check_outage(for_seconds)
        with self._lock:
            self._cancel_timer()
            if seconds is not None:
                self._timer = threading.Timer(seconds, self.up)
                self._timer.daemon = True
                self._timer.start()
            changed = not self._down
            self._down = True
        if seconds is None:
            logger.info("fault injected: ledger down until up() is called")
        else:
            logger.info("fault injected: ledger down for %.3f s", seconds)
        if changed:
            self._notify(True)

    def up(self) -> None:
        """Make the ledger reachable again."""
        with self._lock:
            self._cancel_timer()
            changed = self._down
            self._down = False
        if changed:
            logger.info("ledger up again after an injected outage")
            self._notify(False)

    def clear(self) -> None:
        """Remove every pending fault and bring the ledger up."""
        with self._lock:
            self._rules.clear()
        self.up()

    @property
    def is_down(self) -> bool:
        """Whether the ledger is unreachable."""
        with self._lock:
            return self._down

    def pending(self) -> list[dict[str, Any]]:
        """Return the armed faults with their remaining counts."""
        with self._lock:
            return [rule.describe() for rule in self._rules]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``listener(is_down)`` on every outage change; return an unsubscriber."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, is_down: bool) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(is_down)

    def _take(self, kinds: tuple[str, ...], method: str, path: str) -> _Rule | None:
        for rule in self._rules:
            if rule.kind in kinds and rule.matches(method, path):
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._rules.remove(rule)
                return rule
        return None

    def plan(self, method: str, path: str) -> FaultPlan:
        """Consume the faults that apply to a request and return their effect."""
        with self._lock:
            delay = self._take(("delay",), method, path)
            response = self._take(("fail", "reject_funds"), method, path)
            drop = None if response else self._take(("drop",), method, path)
        for rule in (delay, response, drop):
            if rule is not None:
                logger.info("fault injected: %s on %s %s", rule.kind, method, path)
        return FaultPlan(
            delay=delay.seconds if delay else 0.0,
            response=response.response if response else None,
            drop=drop is not None,
        )

    def admin(
        self, method: str, body: bytes
    ) -> tuple[RawResponse, Callable[[], None] | None]:
        """Serve the HTTP fault controls.

        ``GET`` lists the armed faults. ``POST`` takes a JSON object with any
        of ``fail_next``, ``delay_next``, ``drop_after_commit`` and
        ``reject_funds_next`` (each an object of the method's arguments),
        ``down_for`` (seconds) and ``clear`` (true). The whole body is
        checked first, so an invalid part gets 400 and arms nothing. Other
        methods get Blnk's plain-text 404.

        Returns:
            The response, which shows the state after the request, and the
            action that starts a requested outage or ``None``. The caller
            runs the action and makes sure the response still reaches the
            client that requested the outage.
        """
        if method == "GET":
            return _state_response(self.is_down, self.pending()), None
        if method != "POST":
            return not_found(), None
        try:
            request = _parse_admin(body)
        except ConfigurationError as exc:
            error = ApiError("GEN_BAD_REQUEST", f"invalid fault request: {exc}")
            return (400, dict(JSON_HEADERS), error_body(error)), None
        self._arm(request.rules, clear=request.clear)
        if request.clear:
            self.up()
        if request.down_for is None:
            return _state_response(self.is_down, self.pending()), None
        outage = functools.partial(self.down, request.down_for)
        return _state_response(True, self.pending()), outage


@dataclass(frozen=True)
class _AdminRequest:
    rules: list[_Rule]
    clear: bool
    down_for: float | None


_Builder = Callable[..., _Rule]

_ADMIN_FAULTS: dict[str, tuple[_Builder, tuple[str, ...], tuple[str, ...]]] = {
    "fail_next": (_fail_rule, ("n",), ("status", "code", "message", "path_prefix")),
    "delay_next": (_delay_rule, ("n", "seconds"), ("path_prefix",)),
    "drop_after_commit": (_drop_rule, ("n",), ("path_prefix",)),
    "reject_funds_next": (_reject_funds_rule, ("n",), ("path_prefix",)),
}
"""Each fault of the HTTP controls: builder, required and optional arguments."""

_ADMIN_KEYS = (*_ADMIN_FAULTS, "down_for", "clear")


def _state_response(is_down: bool, faults: list[dict[str, Any]]) -> RawResponse:
    body = json.dumps({"down": is_down, "faults": faults}).encode()
    return 200, dict(JSON_HEADERS), body


def _parse_admin(body: bytes) -> _AdminRequest:
    """Check every part of a POST body of the fault controls.

    Raises:
        ConfigurationError: the body is not a JSON object or a part is invalid.
    """
    try:
        request = json.loads(body or b"{}")
    except ValueError as exc:
        raise ConfigurationError(f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigurationError("the body is nested too deeply") from None
    if not isinstance(request, dict):
        raise ConfigurationError("the body must be a JSON object")
    # A misspelled fault would otherwise arm nothing and still return 200.
    unknown = sorted(set(request) - set(_ADMIN_KEYS))
    if unknown:
        known = ", ".join(_ADMIN_KEYS)
        raise ConfigurationError(f"unknown fault {unknown[0]!r}; use one of {known}")
    rules = [_admin_rule(key, request[key]) for key in _ADMIN_FAULTS if key in request]
    clear = request.get("clear", False)
    if not isinstance(clear, bool):
        raise ConfigurationError(f"clear {clear!r} is invalid; pass true or false")
    if "down_for" in request and request["down_for"] is None:
        raise ConfigurationError(
            "down_for is null; pass a number of seconds greater than 0, or leave it out"
        )
    return _AdminRequest(rules, clear, _check_outage(request.get("down_for")))


def _admin_rule(key: str, arguments: object) -> _Rule:
    build, required, optional = _ADMIN_FAULTS[key]
    if not isinstance(arguments, dict):
        raise ConfigurationError(
            f'{key} {arguments!r} is invalid; pass an object such as {{"n": 1}}'
        )
    unknown = sorted(set(arguments) - {*required, *optional})
    if unknown:
        names = ", ".join((*required, *optional))
        raise ConfigurationError(f"{key} has no argument {unknown[0]!r}; use {names}")
    missing = [name for name in required if name not in arguments]
    if missing:
        raise ConfigurationError(f"{key} is missing the argument {missing[0]!r}")
    try:
        return build(**arguments)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None
