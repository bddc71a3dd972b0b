"""Fixtures shared by the instrumentation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blnk_meter import _instrument
from blnk_meter.testing._provider import FakeOpenAI
from metering_recorder import RecordingRecorder


@pytest.fixture
def recorder() -> Iterator[RecordingRecorder]:
    """Install the instrumentation with a recorder that keeps every call."""
    recorder = RecordingRecorder()
    _instrument.install(recorder)
    yield recorder
    _instrument.uninstall()


@pytest.fixture
def fake() -> FakeOpenAI:
    """Return a fresh fake OpenAI API with canned responses."""
    return FakeOpenAI()
