"""The embedded ledger shared by real processes through one SQLite file."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from embedded_helpers import new_wallet, spend

from blnk_meter.testing import EmbeddedLedger

WORKERS = 8
POSTINGS_PER_WORKER = 40
FUNDS = 5_000

# Each worker posts two-leg usage batches: dollars from the prepaid wallet
# (no overdraft) first, then tokens. It prints what was accepted and rejected.
WORKER = """
import json, sys
import httpx
from blnk_meter.testing import EmbeddedLedger

db, wallet, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
accepted, rejected, other = [], [], []
with EmbeddedLedger(db) as ledger:
    client = httpx.Client(transport=ledger.transport(), base_url="http://blnk")
    for index in range(count):
        cents = 1 + (worker * 7 + index * 13) % 50
        name = f"w{worker}-{index}"
        usd = {"precise_amount": cents, "precision": 100, "currency": "USD",
               "reference": f"{name}-usd", "description": "usage",
               "source": wallet, "destination": "@Revenue"}
        tokens = {"precise_amount": cents * 10, "currency": "TOKENS",
                  "reference": f"{name}-tok", "description": "usage",
                  "source": "@World", "destination": "@Tokens",
                  "allow_overdraft": True}
        response = client.post("/transactions/bulk", json={
            "transactions": [usd, tokens], "atomic": True, "skip_queue": True})
        code = response.json().get("error_detail", {}).get("code")
        if response.status_code == 201:
            accepted.append([name, cents])
        elif code == "TXN_INSUFFICIENT_FUNDS":
            rejected.append([name, cents])
        else:
            other.append([name, response.status_code, response.text])
print(json.dumps({"accepted": accepted, "rejected": rejected, "other": other}))
"""


def child_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def running_balances(db: Path, balance_id: str) -> list[int]:
    """Return the wallet's balance after each applied row, in commit order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT source, precise_amount FROM transactions"
            " WHERE status = 'APPLIED' AND (source = ? OR destination = ?)"
            " ORDER BY seq",
            (balance_id, balance_id),
        ).fetchall()
    balance, history = 0, []
    for source, amount in rows:
        balance += -amount if source == balance_id else amount
        history.append(balance)
    return history


def test_processes_never_overdraw_shared_wallet(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    with EmbeddedLedger(db) as ledger:
        wallet = new_wallet(ledger, funds=FUNDS)

    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(db),
                wallet,
                str(worker),
                str(POSTINGS_PER_WORKER),
            ],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        for worker in range(WORKERS)
    ]
    outputs = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]

    accepted = [item for output in outputs for item in output["accepted"]]
    rejected = [item for output in outputs for item in output["rejected"]]
    assert [output["other"] for output in outputs] == [[]] * WORKERS
    assert len(accepted) + len(rejected) == WORKERS * POSTINGS_PER_WORKER
    assert accepted
    assert rejected
    spent = sum(cents for _, cents in accepted)
    with EmbeddedLedger(db) as ledger:
        balance = ledger.get_balance(wallet)
        revenue = ledger.get_balance_by_indicator("@Revenue", "USD")
        tokens = ledger.get_balance_by_indicator("@Tokens", "TOKENS")
        applied = {row["reference"] for row in ledger.transactions(status_eq="APPLIED")}
    assert balance["balance"] == FUNDS - spent
    assert balance["debit_balance"] == spent
    assert revenue["balance"] == spent
    assert tokens["balance"] == spent * 10
    assert all(f"{name}-usd" in applied for name, _ in accepted)
    assert all(f"{name}-tok" in applied for name, _ in accepted)
    assert not any(f"{name}-usd" in applied for name, _ in rejected)
    assert min(running_balances(db, wallet)) >= 0


def start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    """Run ``serve_forever`` in a child process and return it with its URL."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from blnk_meter.testing import serve_forever\n"
        f"serve_forever('127.0.0.1', 0, {str(db)!r}, None)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=child_env()
    )
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return process, found.group(1)
    raise AssertionError(f"the ledger server exited with {process.wait()}")


def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}{path}", json=body, trust_env=False, timeout=10)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_killed_server_keeps_its_data(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    process, url = start_server(db)
    try:
        ledger_id = post(url, "/ledgers", {"name": "customers"})["ledger_id"]
        wallet = post(url, "/balances", {"ledger_id": ledger_id, "currency": "USD"})
        wallet_id = wallet["balance_id"]
        funding = spend(
            "@World", 1_000, "fund", destination=wallet_id, allow_overdraft=True
        )
        post(url, "/transactions", funding)
        for index in range(5):
            post(url, "/transactions", spend(wallet_id, 30, f"use-{index}"))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    restarted, new_url = start_server(db)
    try:
        balance = httpx.get(f"{new_url}/balances/{wallet_id}", trust_env=False).json()
        usage = httpx.get(
            f"{new_url}/transactions",
            params={"source_eq": wallet_id, "status_eq": "APPLIED"},
            trust_env=False,
        ).json()
        retried = httpx.post(
            f"{new_url}/transactions",
            json=spend(wallet_id, 30, "use-4"),
            trust_env=False,
        )
        restarted.send_signal(signal.SIGTERM)
        exit_code = restarted.wait(timeout=10)
    finally:
        restarted.kill()

    assert process.returncode == -signal.SIGKILL
    assert balance["balance"] == 850
    assert balance["credit_balance"] - balance["debit_balance"] == 850
    assert sorted(row["reference"] for row in usage) == [f"use-{i}" for i in range(5)]
    assert retried.status_code == 409
    assert exit_code == 0


def test_sigterm_logs_start_and_stop(tmp_path: Path) -> None:
    process, url = start_server(tmp_path / "ledger.db")

    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    rest = process.stderr.read()
    exit_code = process.wait(timeout=10)

    assert exit_code == 0
    assert f"embedded ledger on {url} stopped" in rest
