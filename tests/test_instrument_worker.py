"""Tests for the background worker that settles garbage-collected calls.

A finalizer runs on whichever thread triggers a collection, possibly while
that thread holds a lock, so finalizers only hand their work to the worker.
At exit, calls still unsettled are reported instead of read on.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import blnk_meter
from blnk_meter import _instrument, _worker
from blnk_meter.testing._provider import REPLY, FakeOpenAI, count_tokens
from metering_recorder import RecordingRecorder, collect_garbage

MESSAGES: Any = [{"role": "user", "content": "one two three"}]
REPLY_TOKENS = count_tokens(REPLY)
PACKAGE_DIR = Path(blnk_meter.__file__).parent


class LockProbe:
    """A lock the collecting thread holds, and what the recorder saw of it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acquired: list[bool] = []

    def try_lock(self) -> None:
        """Try the lock as an error hook would; record whether it was free."""
        acquired = self.lock.acquire(timeout=0.5)
        self.acquired.append(acquired)
        if acquired:
            self.lock.release()


@pytest.fixture
def probe() -> LockProbe:
    return LockProbe()


@pytest.fixture
def recorder(probe: LockProbe) -> Iterator[RecordingRecorder]:
    recorder = RecordingRecorder(on_settle=probe.try_lock)
    _instrument.install(recorder)
    yield recorder
    _instrument.uninstall()


def drop_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    next(stream)


def drop_raw_stream(client: openai.OpenAI) -> None:
    client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )


def drop_streaming_response(client: openai.OpenAI) -> None:
    manager = client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    manager.__enter__()


DROPPED: list[Any] = [
    pytest.param(drop_stream, id="stream"),
    pytest.param(drop_raw_stream, id="raw-stream"),
    pytest.param(drop_streaming_response, id="streaming-response"),
]


@pytest.mark.parametrize("drop", DROPPED)
def test_dropped_call_settles_off_collecting_thread(
    recorder: RecordingRecorder,
    probe: LockProbe,
    drop: Callable[[openai.OpenAI], None],
) -> None:
    drop(FakeOpenAI().sync_client())

    with probe.lock:
        gc.collect()
    assert _worker.wait_idle(5)

    record = recorder.only()
    assert probe.acquired == [True]
    assert record.threads[0] is not threading.current_thread()
    assert record.usage.input_tokens == 3
    assert record.usage.output_tokens == REPLY_TOKENS


def test_loop_end_fallback_settles_in_worker(recorder: RecordingRecorder) -> None:
    fake = FakeOpenAI()

    async def drop_raw_response() -> None:
        await fake.async_client().responses.with_raw_response.create(
            model="gpt-4o-mini", input="a b", stream=True
        )
        collect_garbage()

    asyncio.run(drop_raw_response())
    assert _worker.wait_idle(5)

    record = recorder.only()
    assert record.unmetered.reason == "stream_interrupted"
    assert record.threads[0] is not threading.current_thread()


def test_finalizer_logs_nothing(
    recorder: RecordingRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    drop_stream(FakeOpenAI().sync_client())
    caplog.set_level(logging.DEBUG, logger="blnk_meter")
    collecting = threading.current_thread()

    gc.collect()
    assert _worker.wait_idle(5)

    threads = {record.thread for record in caplog.records}
    assert recorder.only().is_settled is True
    assert caplog.records
    assert collecting.ident not in threads


# The worker itself ---------------------------------------------------------------


def test_worker_runs_jobs_in_order() -> None:
    _worker.start()
    ran: list[int] = []

    for number in range(3):
        assert _worker.submit(lambda number=number: ran.append(number)) is True
    assert _worker.wait_idle(5)

    assert ran == [0, 1, 2]


def test_worker_survives_failing_job(caplog: pytest.LogCaptureFixture) -> None:
    _worker.start()
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("failed on purpose")

    _worker.submit(fail)
    _worker.submit(lambda: ran.append("after"))
    assert _worker.wait_idle(5)

    assert ran == ["after"]
    assert "a background job of blnk_meter failed" in caplog.text
    assert "failed on purpose" in caplog.text


# Exit ----------------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent(
    """
    import gc, json, logging, sys

    import blnk_meter
    from blnk_meter import MemoryTransport, Meter
    from blnk_meter.testing import FakeOpenAI

    logging.basicConfig(stream=sys.stdout, format="LOG %(name)s %(message)s")

    class PrintingTransport(MemoryTransport):
        def send(self, posting):
            print("SEND", json.dumps(posting.event_id), flush=True)
            return super().send(posting)

    def report(failure):
        reason = failure.unmetered.reason if failure.unmetered else None
        print("FAILURE", json.dumps([reason, failure.message]), flush=True)

    meter = Meter(
        PrintingTransport(),
        outside_scope="default",
        default_customer="acme",
        on_error=report,
    )
    blnk_meter.configure(meter)
    client = FakeOpenAI().sync_client()
    messages = [{"role": "user", "content": "hi"}]

    def drop_stream():
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        )
        next(stream)

    gc.disable()
    drop_stream()
    held_stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True
    )
    next(held_stream)
    held_raw = client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, stream=True
    ).__enter__()
    print("MAIN DONE", flush=True)
    """
)


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter, with no OpenAI settings."""
    env = {key: value for key, value in os.environ.items() if "OPENAI" not in key}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=True,
    )


def test_exit_reports_unsettled_calls(tmp_path: Path) -> None:
    completed = run_script(EXIT_SCRIPT, tmp_path)

    lines = completed.stdout.splitlines()
    after_main = lines[lines.index("MAIN DONE") + 1 :]
    failures = [
        json.loads(line.removeprefix("FAILURE "))
        for line in after_main
        if line.startswith("FAILURE ")
    ]
    assert not [line for line in lines if line.startswith("SEND")]
    assert len(failures) == 3
    for reason, message in failures:
        assert reason == "stream_interrupted"
        assert "was not settled when the process exited" in message
    assert str(PACKAGE_DIR) not in completed.stderr


FORK_SCRIPT = EXIT_SCRIPT.replace(
    'print("MAIN DONE", flush=True)',
    textwrap.dedent(
        """
        import os

        child = os.fork()
        if child == 0:
            gc.enable()
            gc.collect()  # the parent's dropped stream is garbage here too
            drop_stream()
            gc.collect()
            from blnk_meter import _worker
            assert _worker.wait_idle(5), "the child's worker did not run"
            print("CHILD DONE", flush=True)
            sys.exit(0)
        os.waitpid(child, 0)
        print("CHILD EXITED", flush=True)
        """
    ),
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_settles_only_its_calls(tmp_path: Path) -> None:
    completed = run_script(FORK_SCRIPT, tmp_path)

    lines = completed.stdout.splitlines()
    child_lines = lines[: lines.index("CHILD EXITED")]
    parent_exit_lines = lines[lines.index("CHILD EXITED") + 1 :]
    assert "CHILD DONE" in child_lines
    assert len([line for line in child_lines if line.startswith("SEND")]) == 1
    assert [line for line in child_lines if line.startswith("FAILURE")] == []
    assert [line for line in parent_exit_lines if line.startswith("SEND")] == []
    parent_failures = [line for line in parent_exit_lines if line.startswith("FAILURE")]
    assert len(parent_failures) == 3
