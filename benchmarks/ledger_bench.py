"""The sync ledger's speed: lookups and writes per second, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/ledger_bench.py [--records 100000] [--chunk 1000] [--postgres URL]

Runs what an hourly sync of N people does to the ledger, in chunks as the target sends them: a first run (every
identity looked up and missed, then written as delivered), then an unchanged rerun (every identity looked up and
found). Without --postgres, a throw-away server is started the way the tests do (tests/postgres.py), when
PostgreSQL is installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from target_encharge.ledger import Delivered, Scope, SyncLedger, fingerprint, mask_url  # noqa: E402


def measure(url: str, records: int, chunk: int) -> dict[str, float]:
    scope = Scope("bench-account", "create_or_update_person", "people")
    payloads = [{"email": f"person-{n}@example.com", "firstName": "Ada", "score": n} for n in range(records)]
    rows = [Delivered(p["email"], fingerprint(p)) for p in payloads]
    identities = [row.identity for row in rows]
    figures = {}
    with SyncLedger.open(url) as ledger:
        missed = written = 0.0
        for start in range(0, records, chunk):
            began = time.perf_counter()
            ledger.lookup(scope, identities[start : start + chunk])
            looked = time.perf_counter()
            ledger.mark_delivered(scope, rows[start : start + chunk])
            missed += looked - began
            written += time.perf_counter() - looked
        began = time.perf_counter()
        for start in range(0, records, chunk):
            ledger.lookup(scope, identities[start : start + chunk])
        found_time = time.perf_counter() - began
        began = time.perf_counter()
        for start in range(0, records, chunk):
            ledger.fingerprints(scope, identities[start : start + chunk])
        fingerprints_time = time.perf_counter() - began
        began = time.perf_counter()
        for payload in payloads:
            fingerprint(payload)
        fingerprinting = time.perf_counter() - began
    figures["lookups/s (new)"] = records / missed
    figures["writes/s"] = records / written
    figures["lookups/s (known)"] = records / found_time
    figures["fingerprints looked up/s"] = records / fingerprints_time
    figures["fingerprints/s"] = records / fingerprinting
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use (its tables are created)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    backends = {"SQLite": str(work / "ledger.db")}
    server = None
    if args.postgres:
        backends["PostgreSQL"] = args.postgres
    else:
        try:
            from postgres import PostgresServer

            server = PostgresServer()
            server.start()
            backends["PostgreSQL"] = server.new_database()
        except Exception as exc:  # noqa: BLE001 (the SQLite figures still mean something)
            print(f"PostgreSQL skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    try:
        print(f"{args.records:,} records in chunks of {args.chunk:,}")
        for name, url in backends.items():
            figures = measure(url, args.records, args.chunk)
            print(
                f"{name:<11} "
                + "  ".join(f"{label} {value:>9,.0f}" for label, value in figures.items())
                + f"   ({mask_url(url) if name != 'SQLite' else 'a local file'})"
            )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
