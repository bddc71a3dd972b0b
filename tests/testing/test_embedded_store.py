"""Opening SQLite files as embedded ledger databases."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from blnk_meter.testing import EmbeddedLedger
from blnk_meter.testing._store import Store

# A child process that takes the write lock of the file in argv[1] and keeps it
# until its stdin closes.
LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    EmbeddedLedger(path).close()
    return path


@pytest.fixture
def locked_file(ledger_file: Path) -> Iterator[Path]:
    """A ledger file whose write lock another process holds."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(ledger_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        yield ledger_file
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_busy_file_is_reported_busy(locked_file: Path) -> None:
    with pytest.raises(sqlite3.OperationalError) as caught:
        Store(str(locked_file), utc_now, busy_timeout=0.2)

    message = str(caught.value)
    assert f"{locked_file} is busy" in message
    assert "another process held its write lock" in message
    assert "not an embedded ledger database" not in message


def test_other_programs_tables_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE users (name TEXT)")

    with pytest.raises(sqlite3.DatabaseError) as caught:
        EmbeddedLedger(path)
    with sqlite3.connect(path) as other:
        tables = other.execute("SELECT name FROM sqlite_master").fetchall()

    assert "is not an embedded ledger database" in str(caught.value)
    assert "no 'ledgers' table" in str(caught.value)
    assert tables == [("users",)]


def test_table_with_other_columns_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    EmbeddedLedger(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE queue RENAME COLUMN payload TO body")

    with pytest.raises(sqlite3.DatabaseError) as caught:
        EmbeddedLedger(path)

    assert "is not an embedded ledger database" in str(caught.value)
    assert "table 'queue' has no column 'payload'" in str(caught.value)


def test_non_sqlite_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("plain text, not a database\n" * 200)

    with pytest.raises(sqlite3.DatabaseError) as caught:
        EmbeddedLedger(path)

    assert "is not an embedded ledger database" in str(caught.value)
    assert "file is not a database" in str(caught.value)


def test_ledger_file_reopens_with_its_data(ledger_file: Path) -> None:
    with EmbeddedLedger(ledger_file) as ledger:
        created = ledger.create_ledger("customers")

    with EmbeddedLedger(ledger_file) as reopened:
        found = reopened.handle("GET", f"/ledgers/{created['ledger_id']}", {}, b"")

    assert found[0] == 200
