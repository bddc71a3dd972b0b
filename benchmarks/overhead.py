"""Measure what metering adds to an OpenAI call, and posting throughput.

Run from the repository root with the test extra installed::

    python benchmarks/overhead.py --calls 2000

Three figures, each the median of ``--rounds`` rounds:

- plain: a Responses call through the real SDK to the fake provider, not
  instrumented;
- metered (memory): the same call inside a customer scope, priced and posted
  to a MemoryTransport, which isolates the cost of instrumentation, pricing
  and posting;
- metered (ledger over HTTP): the same, posted to the embedded ledger over
  real HTTP on 127.0.0.1, which adds a bulk request and a SQLite write.

The fake provider responds in-process, so the plain figure is the SDK's own
cost per call, not network latency.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal

import blnk_meter
from blnk_meter import HttpxTransport, MemoryTransport, Meter, Wallet, metered
from blnk_meter.testing import EmbeddedLedger, FakeOpenAI


def time_calls(call: Callable[[], object], calls: int) -> float:
    """Return the mean seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    """Return the median of ``rounds`` measurements."""
    return statistics.median(measure() for _ in range(rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    os.environ.pop("OPENAI_API_KEY", None)

    client = FakeOpenAI().sync_client()

    def call() -> object:
        return client.responses.create(model="gpt-4o-mini", input="one two three four")

    def metered_call() -> object:
        with metered(customer="acme"):
            return call()

    for _ in range(50):
        call()
    plain = median_of(args.rounds, lambda: time_calls(call, args.calls))

    memory = MemoryTransport()
    blnk_meter.configure(Meter(memory))
    in_memory = median_of(args.rounds, lambda: time_calls(metered_call, args.calls))
    posted = len(memory.postings)

    tracemalloc.start()
    time_calls(metered_call, 200)
    before, _ = tracemalloc.get_traced_memory()
    time_calls(metered_call, args.calls)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # MemoryTransport keeps every posting, so this is memory per stored posting.
    per_posting = (after - before) / args.calls

    with EmbeddedLedger() as ledger, ledger.serve() as server:
        setup = HttpxTransport(server.url)
        customers = setup.client.create_ledger("bench")["ledger_id"]
        wallet = setup.client.create_balance(customers, "USD")["balance_id"]
        setup.close()
        meter = Meter(
            HttpxTransport(server.url),
            wallets={"acme": Wallet(wallet, "postpaid")},
        )
        blnk_meter.configure(meter)
        http_calls = max(args.calls // 10, 50)
        over_http = median_of(args.rounds, lambda: time_calls(metered_call, http_calls))
        balance = ledger.get_balance(wallet)["balance"]
        meter.close()
    blnk_meter.uninstrument()

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"python {platform.python_version()} on {machine}")
    rows = [
        ("plain call", plain),
        ("metered, memory transport", in_memory),
        ("metered, ledger over HTTP", over_http),
    ]
    for label, seconds in rows:
        added = "" if seconds is plain else f"  (+{(seconds - plain) * 1e6:.1f} us)"
        print(f"{label:<28} {seconds * 1e6:9.1f} us{added}")
    print(f"{'memory per stored posting':<28} {per_posting / 1024:9.1f} KiB")
    print(
        f"postings in memory: {posted}; ledger balance {Decimal(balance) / 10**8} USD"
    )
    if balance >= 0:
        print("the ledger recorded no charges; the metered calls were not posted")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
