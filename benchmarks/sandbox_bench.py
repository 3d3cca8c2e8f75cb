"""How many requests per second the local sandbox serves: one person per call, and batches of 100.

The sandbox runs as its own process (`target-encharge-sandbox`), as in a pipeline rehearsal; the client is a
few threads, each with one keep-alive connection, sending pre-encoded `POST /v1/people` bodies so that the
client costs as little as possible. People come from a pool of 10,000 emails, so every call after the first
round is an update (the sandbox's memory stays flat however long it runs).

    .venv/bin/python benchmarks/sandbox_bench.py [--seconds 5] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time

API_KEY = "sandbox-api-key"
POOL = 10_000


def bodies(batch: int) -> list[bytes]:
    """Pre-encoded request bodies covering the email pool, `batch` people each."""
    people = [
        {"email": f"user{i}@bench.example", "firstName": f"User{i}", "plan": "pro", "seats": i % 50}
        for i in range(POOL)
    ]
    return [json.dumps(people[i : i + batch]).encode() for i in range(0, POOL, batch)]


def run_case(host: str, port: int, batch: int, seconds: float, threads: int) -> dict[str, float]:
    payloads = bodies(batch)
    headers = {"X-Encharge-Token": API_KEY, "Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        i = n
        start.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline[0]:
                break
            conn.request("POST", "/v1/people", body=payloads[i % len(payloads)], headers=headers)
            answer = conn.getresponse()
            answer.read()
            latencies[n].append(time.perf_counter() - t0)
            errors[n] += answer.status != 200
            i += threads
        conn.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    all_latencies = sorted(x for per_thread in latencies for x in per_thread)
    calls = len(all_latencies)
    return {
        "calls_per_s": calls / elapsed,
        "people_per_s": calls * batch / elapsed,
        "p50_ms": statistics.median(all_latencies) * 1000,
        "p99_ms": all_latencies[int(calls * 0.99) - 1] * 1000,
        "errors": sum(errors),
        "calls": calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each case (default 5)")
    parser.add_argument("--threads", type=int, default=4, help="client threads, one connection each (default 4)")
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-m", "target_encharge.sandbox", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = server.stdout.readline()
        host, port = re.search(r"http://([\d.]+):(\d+)", line).groups()
        cases = [("1 person per call", 1), ("100 people per call", 100)]
        results = []
        for label, batch in cases:
            run_case(host, int(port), batch, 1.0, args.threads)  # warm-up: the pool exists, caches are warm
            results.append((label, run_case(host, int(port), batch, args.seconds, args.threads)))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(
        f"Sandbox throughput: POST /v1/people, {args.threads} keep-alive client threads, {args.seconds:g} s per "
        f"case, {os.cpu_count()} cores, Python {platform.python_version()}, client and sandbox on this machine"
    )
    print(f"{'case':<22}{'calls/s':>10}{'people/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for label, r in results:
        print(
            f"{label:<22}{r['calls_per_s']:>10,.0f}{r['people_per_s']:>11,.0f}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['errors']:>8}"
        )
    return 1 if any(r["errors"] for _, r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
