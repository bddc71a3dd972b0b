"""Faults injected on purpose into the embedded ledger's transports and server.

Faults are counted, not random: ``fail_next(2)`` fails exactly the next two
matching requests. They act at the network edge, so
:meth:`EmbeddedLedger.handle` and the convenience methods that call it are not
affected. The same controls are reachable over HTTP at ``/_embedded/faults``,
behind the ledger's API key when it has one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from ._apierror import ApiError, error_body

__all__ = ["ADMIN_PATH", "JSON_HEADERS", "Admin", "FaultPlan", "Faults", "RawResponse"]

logger = logging.getLogger(__name__)

ADMIN_PATH = "/_embedded/faults"
"""Path of the fault controls; Blnk has no route under ``/_embedded``."""

JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

RawResponse = tuple[int, dict[str, str], bytes]

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


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"fault count {n!r} is invalid; pass an integer >= 1")


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

    def _arm(self, rule: _Rule) -> None:
        _check_count(rule.remaining)
        with self._lock:
            self._rules.append(rule)

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
            ConfigurationError: ``n`` is not a positive integer or ``status``
                is not an HTTP error status.
        """
        if not 400 <= status <= 599:
            raise ConfigurationError(
                f"fault status {status!r} is not an error; pass 400 to 599"
            )
        body = error_body(ApiError(code, message))
        response = (status, dict(JSON_HEADERS), body)
        self._arm(_Rule("fail", n, path_prefix, response=response))

    def delay_next(
        self, n: int, seconds: float, *, path_prefix: str | None = None
    ) -> None:
        """Hold the next ``n`` requests for ``seconds`` before processing them.

        Raises:
            ConfigurationError: ``n`` or ``seconds`` is invalid.
        """
        if seconds < 0:
            raise ConfigurationError(
                f"delay {seconds!r} is negative; pass seconds >= 0"
            )
        self._arm(_Rule("delay", n, path_prefix, seconds=float(seconds)))

    def drop_after_commit(self, n: int, *, path_prefix: str | None = None) -> None:
        """Process and commit the next ``n`` requests, then send no response.

        The in-process transports raise ``httpx.RemoteProtocolError``; the
        HTTP server closes the connection without a response.
        """
        self._arm(_Rule("drop", n, path_prefix))

    def reject_funds_next(self, n: int, *, path_prefix: str | None = None) -> None:
        """Reject the next ``n`` POST or PUT requests with ``TXN_INSUFFICIENT_FUNDS``.

        Nothing is written; reads pass through and are not counted.
        """
        message = (
            "failed to apply transaction to balances: insufficient funds in source"
            " balance"
        )
        body = error_body(ApiError("TXN_INSUFFICIENT_FUNDS", message))
        response = (400, dict(JSON_HEADERS), body)
        self._arm(_Rule("reject_funds", n, path_prefix, response=response))

    def down(self, for_seconds: float | None = None) -> None:
        """Make the ledger unreachable until :meth:`up`, or for ``for_seconds``.

        In-process transports raise ``httpx.ConnectError``; the HTTP server
        closes its listening socket and open connections, so connections are
        refused.
        """
        if for_seconds is not None and for_seconds <= 0:
            raise ConfigurationError(
                f"down time {for_seconds!r} is invalid; pass seconds > 0"
            )
        with self._lock:
            self._cancel_timer()
            if for_seconds is not None:
                self._timer = threading.Timer(for_seconds, self.up)
                self._timer.daemon = True
                self._timer.start()
            changed = not self._down
            self._down = True
        if for_seconds is None:
            logger.info("fault injected: ledger down until up() is called")
        else:
            logger.info("fault injected: ledger down for %.3f s", for_seconds)
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
        ``down_for`` (seconds) and ``clear`` (true).

        Returns:
            The response, and the action that starts a requested outage or
            ``None``. The caller runs the action and makes sure the response
            still reaches the client that requested the outage.
        """
        if method == "GET":
            state = {"down": self.is_down, "faults": self.pending()}
            return (200, dict(JSON_HEADERS), json.dumps(state).encode()), None
        try:
            request = json.loads(body or b"{}")
            after = self._apply_admin(request)
        except (ValueError, TypeError, AttributeError) as exc:
            error = ApiError("GEN_BAD_REQUEST", f"invalid fault request: {exc}")
            return (400, dict(JSON_HEADERS), error_body(error)), None
        state = {"down": self.is_down, "faults": self.pending()}
        return (200, dict(JSON_HEADERS), json.dumps(state).encode()), after

    def _apply_admin(self, request: dict[str, Any]) -> Callable[[], None] | None:
        if not isinstance(request, dict):
            raise TypeError("the body must be a JSON object")
        arming: dict[str, Callable[..., None]] = {
            "fail_next": self.fail_next,
            "delay_next": self.delay_next,
            "drop_after_commit": self.drop_after_commit,
            "reject_funds_next": self.reject_funds_next,
        }
        # A misspelled fault would otherwise arm nothing and still return 200.
        unknown = sorted(set(request) - set(arming) - {"clear", "down_for"})
        if unknown:
            known = ", ".join([*arming, "down_for", "clear"])
            raise ValueError(f"unknown fault {unknown[0]!r}; use one of {known}")
        if request.get("clear"):
            self.clear()
        for key, arm in arming.items():
            if key in request:
                arm(**request[key])
        seconds = request.get("down_for")
        if seconds is None:
            return None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"down_for {seconds!r} must be a number of seconds")
        return lambda: self.down(float(seconds))
