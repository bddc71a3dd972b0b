"""Running an embedded ledger as a foreground server until a signal stops it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from ._ledger import EmbeddedLedger

__all__ = ["serve_forever"]

logger = logging.getLogger(__name__)


def serve_forever(
    host: str, port: int, db_path: str | None, api_key: str | None
) -> None:
    """Serve an embedded ledger over HTTP until SIGINT or SIGTERM arrives.

    Call it from the main thread, which is where Python delivers signals.
    The previous signal handlers are restored on return.

    Args:
        host: the address to listen on, e.g. ``127.0.0.1``.
        port: the port; 0 lets the OS choose (the start-up log names it).
        db_path: a SQLite file that keeps the ledger across restarts, or
            ``None`` for an in-memory ledger that ends with the process.
        api_key: the key required in ``X-Blnk-Key``, or ``None`` for no
            authentication.

    Raises:
        OSError: the port cannot be bound.
        ValueError: not called from the main thread.
        sqlite3.DatabaseError: ``db_path`` is not an embedded ledger's
            database, or SQLite failed to open it.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received signal %d, stopping the embedded ledger", signum)
        stop.set()

    previous = {
        signum: signal.signal(signum, request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with EmbeddedLedger(db_path, api_key=api_key) as ledger:
            server = ledger.serve(host, port)
            logger.info(
                "embedded ledger listening on %s (database %s, authentication %s)",
                server.url,
                db_path or "in memory",
                "on" if api_key else "off",
            )
            while not stop.wait(0.5):
                pass
            logger.info("embedded ledger on %s stopped", server.url)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
