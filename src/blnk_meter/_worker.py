"""The background thread that settles calls whose objects were garbage collected.

A finalizer runs inside the garbage collector, on whichever thread triggered
the collection, possibly while that thread holds a lock. So finalizers only
hand their work to this worker through a ``queue.SimpleQueue``, whose ``put``
is safe in a finalizer, and return at once. The worker reads the rest of the
response, settles the call and so posts it.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable

__all__ = ["start", "submit", "wait_idle"]

logger = logging.getLogger(__name__)

Job = Callable[[], object]


class _Worker:
    """One daemon thread that runs the jobs handed to it, in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        # Kept on the instance: late in interpreter shutdown, module globals
        # such as ``sys`` are already None when finalizers run.
        self._is_finalizing = sys.is_finalizing

    def submit(self, job: Job) -> bool:
        """Queue ``job`` without blocking or locking, so a finalizer may call it.

        Returns:
            ``False`` when the interpreter is shutting down, because the
            worker no longer runs then, so the job was dropped.
        """
        if self._is_finalizing():
            return False
        self._jobs.put(job)
        return True

    def start(self) -> None:
        """Start the worker thread in this process, unless it runs already.

        A forked child process starts its own thread on its first call.
        """
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._start_lock:
            if self._pid == pid:
                return
            thread = threading.Thread(
                target=self._run, name="blnk_meter-settle", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:
                # Raised when the interpreter is shutting down. The exit hook
                # reports the calls still unsettled then.
                logger.warning(
                    "failed to start the blnk_meter settle thread in process %d",
                    pid,
                    exc_info=True,
                )
                return
            self._pid = pid

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job submitted so far has run.

        Args:
            timeout: the maximum wait, in seconds.

        Returns:
            Whether those jobs ran within ``timeout``.
        """
        if self._pid != os.getpid():
            return self._jobs.empty()
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout)

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread and jobs in a forked child process.

        The thread did not survive the fork, and the queued jobs settle the
        parent's calls, which the parent reports itself.
        """
        self._jobs = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._pid = None

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException:
                # A job that fails must not stop the thread that runs the rest.
                logger.exception("a background job of blnk_meter failed")


_worker = _Worker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_worker.after_fork_in_child)

submit = _worker.submit
start = _worker.start
wait_idle = _worker.wait_idle
