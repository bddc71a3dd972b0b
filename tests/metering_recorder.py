"""A recorder for the instrumentation tests that keeps every call it hears of."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from blnk_meter import _worker
from blnk_meter._recorder import CallOutcome
from blnk_meter._usage import ProviderCall, UnmeteredCall, Usage


def collect_garbage() -> None:
    """Collect garbage, then wait for the background worker to settle it."""
    gc.collect()
    assert _worker.wait_idle(5), "the background worker is still busy"


@dataclass
class Record:
    """One begun call and everything the instrumentation settled it with."""

    call: ProviderCall
    settlements: list[tuple[str, object]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    """The thread of each settlement."""

    @property
    def is_settled(self) -> bool:
        return bool(self.settlements)

    @property
    def method(self) -> str:
        """The one recorder method that settled the call."""
        assert len(self.settlements) == 1, self.settlements
        return self.settlements[0][0]

    @property
    def outcome(self) -> CallOutcome:
        """The one outcome handed to ``finish`` or ``afinish``."""
        assert self.method in ("finish", "afinish"), self.settlements
        outcome = self.settlements[0][1]
        assert isinstance(outcome, (Usage, UnmeteredCall))
        return outcome

    @property
    def usage(self) -> Usage:
        outcome = self.outcome
        assert isinstance(outcome, Usage), outcome
        return outcome

    @property
    def unmetered(self) -> UnmeteredCall:
        outcome = self.outcome
        assert isinstance(outcome, UnmeteredCall), outcome
        return outcome

    @property
    def cancel_error(self) -> object:
        """The error handed to ``cancel`` or ``acancel``."""
        assert self.method in ("cancel", "acancel"), self.settlements
        return self.settlements[0][1]


class RecordingRecorder:
    """Keeps one :class:`Record` per begun call.

    Args:
        on_begin: called with each call before it is recorded; it may raise,
            or return ``False`` to make ``begin`` return ``None``.
        finish_error: raised from ``finish`` and ``afinish`` after recording.
        on_settle: called before each settlement is recorded.
    """

    def __init__(
        self,
        *,
        on_begin: Callable[[ProviderCall], bool] | None = None,
        finish_error: Exception | None = None,
        on_settle: Callable[[], None] | None = None,
    ) -> None:
        self.begun: list[ProviderCall] = []
        self.records: list[Record] = []
        self._on_begin = on_begin
        self._finish_error = finish_error
        self._on_settle = on_settle

    def only(self) -> Record:
        """Return the single recorded call."""
        assert len(self.records) == 1, self.records
        return self.records[0]

    def begin(self, call: ProviderCall) -> Record | None:
        self.begun.append(call)
        if self._on_begin is not None and not self._on_begin(call):
            return None
        record = Record(call)
        self.records.append(record)
        return record

    async def abegin(self, call: ProviderCall) -> Record | None:
        return self.begin(call)

    def finish(self, token: object, outcome: CallOutcome) -> None:
        self._settle(token, "finish", outcome)
        if self._finish_error is not None:
            raise self._finish_error

    async def afinish(self, token: object, outcome: CallOutcome) -> None:
        self._settle(token, "afinish", outcome)
        if self._finish_error is not None:
            raise self._finish_error

    def cancel(self, token: object, error: BaseException | None) -> None:
        self._settle(token, "cancel", error)

    async def acancel(self, token: object, error: BaseException | None) -> None:
        self._settle(token, "acancel", error)

    def _settle(self, token: object, method: str, value: object) -> None:
        assert isinstance(token, Record)
        if self._on_settle is not None:
            self._on_settle()
        token.settlements.append((method, value))
        token.threads.append(threading.current_thread())
