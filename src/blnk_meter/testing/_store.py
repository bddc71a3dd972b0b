"""SQLite storage of the embedded ledger: schema, connections and transactions.

All state lives in the database, so several processes that open the same file
see one ledger. Every write runs inside ``BEGIN IMMEDIATE``, which takes the
database's write lock before the first read. A balance check and the update
that depends on it therefore never interleave with another writer.
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

__all__ = [
    "INT64_MAX",
    "ZERO_TIME",
    "NotLedgerDatabaseError",
    "Session",
    "Store",
    "format_time",
    "is_lock_error",
    "new_id",
    "parse_rfc3339",
]

INT64_MAX = 2**63 - 1
"""Largest amount SQLite's INTEGER (and Blnk's BIGINT) columns can hold."""

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's serialisation of an unset timestamp."""

GENERAL_LEDGER_ID = "general_ledger_id"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledgers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ledger_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    meta_data TEXT
);
CREATE TABLE IF NOT EXISTS balances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    balance_id TEXT NOT NULL UNIQUE,
    ledger_id TEXT NOT NULL,
    identity_id TEXT NOT NULL DEFAULT '',
    indicator TEXT NOT NULL DEFAULT '',
    currency TEXT NOT NULL,
    balance INTEGER NOT NULL DEFAULT 0,
    credit_balance INTEGER NOT NULL DEFAULT 0,
    debit_balance INTEGER NOT NULL DEFAULT 0,
    inflight_balance INTEGER NOT NULL DEFAULT 0,
    inflight_credit_balance INTEGER NOT NULL DEFAULT 0,
    inflight_debit_balance INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    meta_data TEXT,
    track_fund_lineage INTEGER NOT NULL DEFAULT 0,
    allocation_strategy TEXT NOT NULL DEFAULT 'FIFO'
);
CREATE UNIQUE INDEX IF NOT EXISTS balances_indicator_currency
    ON balances (indicator, currency) WHERE indicator != '';
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL UNIQUE,
    parent_transaction TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    destination TEXT NOT NULL DEFAULT '',
    reference TEXT NOT NULL UNIQUE,
    amount REAL NOT NULL,
    precise_amount INTEGER NOT NULL,
    precision INTEGER NOT NULL,
    currency TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    hash TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    effective_date TEXT,
    scheduled_for TEXT,
    meta_data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS transactions_parent ON transactions (parent_transaction);
CREATE INDEX IF NOT EXISTS transactions_source ON transactions (source);
CREATE INDEX IF NOT EXISTS transactions_destination ON transactions (destination);
CREATE INDEX IF NOT EXISTS transactions_created ON transactions (created_at);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    due_at TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_target ON queue (target);
"""

_TABLES = ("ledgers", "balances", "transactions", "queue")


class NotLedgerDatabaseError(sqlite3.DatabaseError):
    """The file is not SQLite, or its tables are not an embedded ledger's."""


def is_lock_error(exc: BaseException) -> bool:
    """Return whether SQLite gave up waiting for another connection's lock."""
    # The message is tested because Python 3.10 has no sqlite_errorcode. It
    # is "database is locked" (SQLITE_BUSY) or "database table is locked".
    return isinstance(exc, sqlite3.OperationalError) and "is locked" in str(exc)


@functools.cache
def _expected_columns() -> dict[str, frozenset[str]]:
    """Return the columns of each table, read from the schema built in memory."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        return {table: _columns(conn, table) for table in _TABLES}
    finally:
        conn.close()


def _columns(conn: sqlite3.Connection, table: str) -> frozenset[str]:
    return frozenset(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))


def _mismatch(conn: sqlite3.Connection) -> str | None:
    """Return how an existing database differs from the ledger's tables, or None."""
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master"
            " WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if not tables:
        return None
    for table, expected in _expected_columns().items():
        if table not in tables:
            return f"it has no {table!r} table"
        missing = sorted(expected - _columns(conn, table))
        if missing:
            return f"table {table!r} has no column {missing[0]!r}"
    return None


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"([Zz]|[+-]\d{2}:\d{2})$"
)


def new_id(prefix: str) -> str:
    """Return a Blnk-style id: the prefix, an underscore and a UUIDv4."""
    return f"{prefix}_{uuid.uuid4()}"


def format_time(moment: datetime) -> str:
    """Format an aware datetime as fixed-width RFC 3339 in UTC.

    The fixed width makes the stored text sort in time order, which the
    filters and the historical balance rely on.
    """
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime | None:
    """Parse an RFC 3339 timestamp as Go's ``time.RFC3339`` does, or return None.

    Fractions beyond microseconds are truncated.
    """
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        offset = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        delta = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        offset = timezone(sign * delta)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=offset,
        )
    except ValueError:
        return None


class Session:
    """One open SQLite transaction of a request, with the ledger's clock.

    Attributes:
        conn: the connection, inside ``BEGIN IMMEDIATE`` or ``BEGIN``.
        clock: returns the current time as an aware UTC datetime.
    """

    _savepoints = itertools.count()

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], datetime]) -> None:
        self.conn = conn
        self.clock = clock

    def now(self) -> str:
        """Return the current time in the stored text form."""
        return format_time(self.clock())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo the block's writes, and only those, when it raises."""
        name = f"sp_{next(self._savepoints)}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")


class Store:
    """The ledger's SQLite database and the one connection this process uses.

    The connection is shared by every thread of the process and guarded by a
    lock; other processes are kept out by SQLite's own file lock.

    Args:
        path: a database file, or ``None`` for a private in-memory database.
        clock: returns the current time as an aware datetime.
        busy_timeout: seconds a write waits for another process's lock
            before it fails with ``sqlite3.OperationalError``.
        setup: called with the new connection, e.g. to register functions.

    Raises:
        NotLedgerDatabaseError: the file is not SQLite, or its tables are not
            an embedded ledger's.
        sqlite3.OperationalError: another process held the write lock for
            longer than ``busy_timeout``, or SQLite failed otherwise.
    """

    def __init__(
        self,
        path: str | None,
        clock: Callable[[], datetime],
        busy_timeout: float = 30.0,
        setup: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            path if path is not None else ":memory:",
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._configure(setup)
            self._create_schema()
        except sqlite3.Error as exc:
            self._conn.close()
            if isinstance(exc, NotLedgerDatabaseError):
                raise
            if is_lock_error(exc):
                raise sqlite3.OperationalError(
                    f"{path} is busy: another process held its write lock for"
                    f" more than {busy_timeout:g} s ({exc}); open the ledger again"
                    " once that process has finished writing"
                ) from exc
            if "file is not a database" in str(exc):
                raise NotLedgerDatabaseError(_not_a_ledger(path, str(exc))) from exc
            raise

    def _configure(self, setup: Callable[[sqlite3.Connection], None] | None) -> None:
        if self.path is not None:
            # In WAL mode, synchronous=NORMAL can lose the last commits on a
            # power loss but not when the process is killed (SQLite's
            # documentation of PRAGMA synchronous).
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        if setup is not None:
            setup(self._conn)

    def _create_schema(self) -> None:
        with self.write() as session:
            # CREATE TABLE IF NOT EXISTS would keep another program's tables,
            # or add the ledger's tables to its database.
            mismatch = _mismatch(session.conn)
            if mismatch is not None:
                raise NotLedgerDatabaseError(_not_a_ledger(self.path, mismatch))
            # executescript() would commit the open transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    session.conn.execute(statement)
            session.conn.execute(
                "INSERT OR IGNORE INTO ledgers (ledger_id, name, created_at)"
                " VALUES (?, 'General Ledger', ?)",
                (GENERAL_LEDGER_ID, session.now()),
            )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """Run the block in one ``BEGIN IMMEDIATE`` transaction.

        The transaction commits when the block returns and rolls back when it
        raises.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Session(self._conn, self.clock)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Run the block in one read transaction, a consistent snapshot."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield Session(self._conn, self.clock)
            finally:
                self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection; the file, if any, keeps the data."""
        with self._lock:
            self._conn.close()


def _not_a_ledger(path: str | None, reason: str) -> str:
    return (
        f"{path} is not an embedded ledger database ({reason}); "
        "use a new file or one an embedded ledger created"
    )
