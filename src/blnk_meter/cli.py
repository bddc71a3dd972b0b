"""The ``blnk-meter`` command line.

``blnk-meter demo`` runs metered OpenAI calls against an embedded ledger and
prints balances that reconcile. ``blnk-meter ledger serve`` runs the embedded
Blnk-compatible ledger as an HTTP server for examples and integration tests.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blnk-meter",
        description="Meter OpenAI usage per customer into the Blnk ledger.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=(
            "the level of blnk_meter log lines written to stderr "
            "(default: INFO for 'ledger serve', WARNING otherwise)"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run metered OpenAI calls against an embedded ledger and reconcile",
        description=(
            "Create an embedded ledger with a prepaid and a postpaid customer, run "
            "metered OpenAI calls through the real SDK and print balances that "
            "reconcile. The calls go to canned provider responses, or to the real "
            "OpenAI API when OPENAI_API_KEY is set and --canned is not given."
        ),
    )
    demo.add_argument(
        "--canned",
        action="store_true",
        help="use canned provider responses even when OPENAI_API_KEY is set",
    )

    ledger = commands.add_parser(
        "ledger", help="run the embedded Blnk-compatible ledger"
    )
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    serve = ledger_commands.add_parser(
        "serve",
        help="serve the embedded ledger over HTTP",
        description=(
            "Serve the embedded Blnk-compatible ledger over HTTP until interrupted. "
            "Set BLNK_API_KEY in the environment to require that X-Blnk-Key."
        ),
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=5001,
        help="TCP port, 0 to let the system choose (default: 5001)",
    )
    serve.add_argument(
        "--db",
        default=None,
        help="SQLite file that keeps the ledger across restarts (default: in memory)",
    )
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; use 0 to 65535")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("blnk_meter")
    package_logger.addHandler(handler)
    default_level = "INFO" if args.command == "ledger" else "WARNING"
    package_logger.setLevel(args.log_level or default_level)

    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(
            use_real_api=bool(os.environ.get("OPENAI_API_KEY")) and not args.canned
        )

    from .testing import serve_forever

    api_key = os.environ.get("BLNK_API_KEY") or None
    try:
        serve_forever(args.host, args.port, args.db, api_key)
    except (OSError, sqlite3.Error) as exc:
        print(
            f"blnk-meter: cannot serve the ledger on {args.host}:{args.port} with "
            f"database {args.db or 'in memory'}: {exc}{_hint(exc, args.db)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _hint(error: Exception, database: str | None) -> str:
    """Return what to try next for a ledger that failed to start, if known."""
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return ". Pick another --port, or --port 0 to let the system choose"
    if database is not None and os.path.isdir(database):
        return f". {database!r} is a directory; pass a file path such as ledger.db"
    if isinstance(error, sqlite3.Error):
        return ". Check that --db names a writable file path"
    return ""


if __name__ == "__main__":
    sys.exit(main())
