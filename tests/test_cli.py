"""The ``blnk-meter`` command, run as a real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

import blnk_meter


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blnk_meter.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("BLNK_API_KEY", None)
    return env


def test_demo_reconciles_offline() -> None:
    result = run_cli("demo", env=offline_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "canned OpenAI responses" in result.stdout
    assert "Reconciled to the minor unit." in result.stdout
    assert "MISMATCH" not in result.stdout
    assert "0 failures" in result.stdout


def test_demo_canned_flag_ignores_api_key() -> None:
    env = offline_env()
    env["OPENAI_API_KEY"] = "sk-test-never-used"

    result = run_cli("demo", "--canned", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "canned OpenAI responses" in result.stdout
    assert "sk-test-never-used" not in result.stdout + result.stderr


def test_version_flag_prints_version() -> None:
    result = run_cli("--version")

    assert result.returncode == 0
    assert blnk_meter.__version__ in result.stdout


def test_missing_command_exits_with_usage() -> None:
    result = run_cli()

    assert result.returncode == 2
    assert "usage: blnk-meter" in result.stderr


def test_ledger_serve_runs_until_sigterm(tmp_path: Path) -> None:
    env = offline_env()
    env["BLNK_API_KEY"] = "serve-secret"
    database = tmp_path / "ledger.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blnk_meter.cli",
            "ledger",
            "serve",
            "--port",
            "0",
            "--db",
            str(database),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)

        denied = httpx.post(f"{url}/ledgers", json={"name": "x"})
        created = httpx.post(
            f"{url}/ledgers", json={"name": "x"}, headers={"X-Blnk-Key": "serve-secret"}
        )
        assert denied.status_code == 401
        assert created.status_code == 201
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)

    assert process.returncode == 0
    assert "stopped" in errors
    assert "serve-secret" not in line + errors
    assert database.exists()


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "blnk-meter"

    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0
    assert result.stdout.startswith("blnk-meter ")


def test_ledger_serve_rejects_bad_port() -> None:
    result = run_cli("ledger", "serve", "--port", "99999", env=offline_env())

    assert result.returncode == 2
    assert "invalid port '99999'" in result.stderr


def test_ledger_serve_reports_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_cli("ledger", "serve", "--port", str(port), env=offline_env())

    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "--port 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_ledger_serve_reports_bad_database(tmp_path: Path) -> None:
    database = tmp_path / "missing-dir" / "ledger.db"

    result = run_cli("ledger", "serve", "--port", "0", "--db", str(database))

    assert result.returncode == 1
    assert "unable to open database file" in result.stderr
    assert "writable file path" in result.stderr
    assert "Traceback" not in result.stderr


def test_ledger_serve_names_directory_database(tmp_path: Path) -> None:
    result = run_cli("ledger", "serve", "--port", "0", "--db", str(tmp_path))

    assert result.returncode == 1
    assert "is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_level_ignores_case() -> None:
    result = run_cli("--log-level", "debug", "ledger", "serve", "--port", "99999")

    assert result.returncode == 2
    assert "invalid port" in result.stderr
    assert "invalid choice" not in result.stderr


def test_ledger_serve_rejects_foreign_database(tmp_path: Path) -> None:
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as other:
        other.execute("CREATE TABLE transactions (note TEXT)")

    result = run_cli("ledger", "serve", "--port", "0", "--db", str(database))

    assert result.returncode == 1
    assert "is not an embedded ledger database" in result.stderr
    assert "Traceback" not in result.stderr
