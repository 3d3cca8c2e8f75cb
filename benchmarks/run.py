"""All of target-encharge's performance figures, reproduced by one command, printed as a table.

    make bench            # or: .venv/bin/python benchmarks/run.py [--quick]

P1  per-record CPU: a dry run of 100,000 people in batches of 100, against the stock singer-sdk target that does
    nothing with its records (default reader and validator), same input, same run. Goal: at most 0.45 of its time.
P2  latency-bound: 1,600 one-record calls to the sandbox with 50 ms added latency, max_concurrency 16, against a
    bare keep-alive client with 16 threads on the same sandbox. Goal: at least 90 % of the bare client's rate.
P3  batched: 20,000 people in batches of 100, 50 ms latency, 8 in flight, a first run (fresh ledger). Goal: at
    least 8,000 records/s, start-up excluded (first to last request as the sandbox logged them); the median of
    three runs.
P4  memory: peak RSS of a dry run of 1,000,000 records, at most 1.2 times that of 10,000. The dry run reads the
    sync ledger P5 filled (100,000 people known: a lookup per batch, hits then misses), so the ledger is on.
P5  sync ledger: an unchanged rerun of 100,000 people against the sandbox (a first run fills a fresh SQLite
    ledger, the reruns are timed and send nothing), against the stock singer-sdk no-op target on the same input.
    Goal: at most 0.5 of its CPU time.
P6  mirror memory (issue 22): peak RSS of a `mirror` rerun of 1,000,000 known people (the tap's ACTIVATE_VERSION
    after SCHEMA and before the records, every RECORD carrying "version", as a singer-sdk tap sends them), at most
    1.5 times that of an unchanged `upsert` rerun of the same people. A first `upsert` run fills a fresh SQLite
    ledger through the sandbox; both reruns must find all of them unchanged and send nothing.
P7  PostgreSQL ledger beside SQLite (issue 23), when a PostgreSQL server can be started (skipped otherwise): a
    first load of 5,000 events with ids (`track_event`, one call per record), records/s from first to last call;
    and an unchanged rerun of 50,000 people, wall time (the ledger server's work included). Goal: PostgreSQL
    within 1.25 times SQLite on both. Each side runs three times, the two taking turns; its best run counts.
S   start-up: time from launch to the first request reaching the sandbox.

P1, P5 and P7 compare times, which on this VM move by 10 to 20 % from one run to the next: each side runs three
times, the two taking turns, and its least time counts (as timeit takes the least of its repeats).

    .venv/bin/python benchmarks/run.py --only P6,P7 [--quick]   # some of them


Every run of the target gets its own working directory and `ledger_url`, so no case reads another's ledger (nor
the repository's `.target-encharge-ledger.db`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
import servers  # the tests' servers (tests/servers.py, no pytest): neither folder is a package, both are on the path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TARGET = str(BIN / "target-encharge")
SANDBOX = str(BIN / "target-encharge-sandbox")
API_KEY, WRITE_KEY = "sandbox-api-key", "sandbox-write-key"
ROUNDS = 3  # P1 and P5: each CPU figure is the least of this many runs (see fastest)
WORK = Path(tempfile.mkdtemp(prefix="encharge-bench-"))

NOOP_TARGET = """
from singer_sdk import Target
from singer_sdk.sinks import RecordSink

class NoopSink(RecordSink):
    def process_record(self, record, context):
        pass

class NoopTarget(Target):
    name = "target-noop"
    config_jsonschema = {"type": "object", "properties": {}}
    default_sink_class = NoopSink

NoopTarget.cli()
"""

SCHEMA = {
    "type": "SCHEMA",
    "stream": "people",
    "key_properties": ["email"],
    "schema": {
        "type": "object",
        "properties": {
            "email": {"type": "string"},
            "userId": {"type": ["string", "null"]},
            "firstName": {"type": ["string", "null"]},
            "lastName": {"type": ["string", "null"]},
            "plan": {"type": ["string", "null"]},
            "score": {"type": ["number", "null"]},
            "logins": {"type": ["integer", "null"]},
            "createdAt": {"type": ["string", "null"], "format": "date-time"},
        },
    },
}


def singer_input(n: int, name: str) -> Path:
    """A file of ``n`` person RECORDs (with a STATE every 10,000), made once per size."""
    path = WORK / f"{name}-{n}.jsonl"
    if path.exists():
        return path
    with path.open("w") as out:
        out.write(json.dumps(SCHEMA) + "\n")
        for i in range(n):
            out.write(
                json.dumps(
                    {
                        "type": "RECORD",
                        "stream": "people",
                        "record": {
                            "email": f"user{i}@example.com",
                            "userId": f"u{i}",
                            "firstName": "First",
                            "lastName": "Last",
                            "plan": "pro",
                            "score": i * 0.5,
                            "logins": i % 50,
                            "createdAt": "2024-03-01T10:00:00+00:00",
                        },
                    }
                )
                + "\n"
            )
            if i % 10_000 == 9_999:
                out.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"people": {"n": i + 1}}}}) + "\n")
    return path


def config(**settings: object) -> Path:
    path = WORK / f"config-{abs(hash(json.dumps(settings, sort_keys=True)))}.json"
    path.write_text(json.dumps(settings))
    return path


def ledger(name: str) -> str:
    """A fresh SQLite ledger file for one case (removed if an earlier run of the same case left one)."""
    path = WORK / f"ledger-{name}.db"
    for leftover in WORK.glob(f"ledger-{name}.db*"):
        leftover.unlink()
    return str(path)


def run(cmd: list[str], stdin: Path) -> dict:
    """Run a command on a file in the scratch directory; wall seconds, CPU seconds and peak RSS (MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with stdin.open("rb") as data:
        proc = subprocess.run(cmd, stdin=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, cwd=WORK)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss_mib": after.ru_maxrss / 1024}


def fastest(cmds: dict[str, list[str]], stdin: Path, rounds: int = ROUNDS) -> dict[str, dict]:
    """Each command's run with the least CPU time out of ``rounds``, the commands taking turns in each round: on
    this VM one run's CPU time moves by 10 to 20 % with what else the host does, and taking turns puts the
    commands compared through the same spells."""
    runs: dict[str, list[dict]] = {label: [] for label in cmds}
    for _ in range(rounds):
        for label, cmd in cmds.items():
            runs[label].append(run(cmd, stdin))
    return {label: min(found, key=lambda r: r["cpu"]) for label, found in runs.items()}


def peak_rss(cmd: list[str], stdin: Path) -> float:
    """Peak RSS (MiB) of one child, measured with /usr/bin/time-free wait4."""
    with stdin.open("rb") as data:
        proc = subprocess.Popen(cmd, stdin=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=WORK)
        _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{cmd[0]} failed with status {status}")
    return usage.ru_maxrss / 1024


class Sandbox:
    """The sandbox as its own process (as users run it), so it does not share the GIL with the client."""

    def __init__(self, latency_ms: int) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [SANDBOX, "--port", str(self.port), "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                requests.get(self.url + "/_sandbox/state", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)

    def requests(self) -> list[dict] | dict:
        return requests.get(self.url + "/_sandbox/requests", timeout=30).json()

    def reset(self) -> None:
        requests.post(self.url + "/_sandbox/reset", timeout=5)

    def target_config(self, **settings: object) -> Path:
        return config(
            api_key=API_KEY,
            write_key=WRITE_KEY,
            api_url=self.url + "/v1",
            ingest_url=self.url + "/ingest/v1",
            **settings,
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def logged(log: list[dict] | dict) -> list[dict]:
    """The requests in the sandbox's log (a list, or an object holding it under "requests")."""
    return log if isinstance(log, list) else log.get("requests", [])


def people_calls(log: list[dict] | dict) -> list[dict]:
    return [r for r in logged(log) if r["path"] == "/v1/people" and r["method"] == "POST"]


def bare_client(url: str, calls: int, threads: int) -> float:
    """Calls per second of plain keep-alive `requests` sessions, one per thread: the ceiling for P2."""
    body = json.dumps([{"email": "bare@example.com", "plan": "pro"}]).encode()
    headers = {"X-Encharge-Token": API_KEY, "Content-Type": "application/json"}
    per_thread = calls // threads

    def work() -> None:
        with requests.Session() as session:
            for _ in range(per_thread):
                session.post(url + "/v1/people", data=body, headers=headers, timeout=30).raise_for_status()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - started)


def span(calls: list[dict]) -> float:
    times = sorted(c["time"] for c in calls)
    return times[-1] - times[0]


def p1(n: int) -> dict:
    data = singer_input(n, "p1")
    noop = WORK / "noop_target.py"
    noop.write_text(NOOP_TARGET)
    best = fastest(
        {
            "stock": [sys.executable, str(noop), "--config", str(config())],
            "ours": [
                TARGET,
                "--config",
                str(config(dry_run=True, batch_records=True, batch_size=100, ledger_url=ledger("p1"))),
            ],
        },
        data,
    )
    stock, ours = best["stock"], best["ours"]
    return {
        "stock_cpu": stock["cpu"],
        "ours_cpu": ours["cpu"],
        "stock_wall": stock["wall"],
        "ours_wall": ours["wall"],
        "ratio": ours["cpu"] / stock["cpu"],
    }


def p2(calls: int) -> dict:
    sandbox = Sandbox(latency_ms=50)
    try:
        bare = bare_client(sandbox.url, calls, 16)
        sandbox.reset()
        data = singer_input(calls, "p2")
        started = time.perf_counter()
        run(
            [
                TARGET,
                "--config",
                str(sandbox.target_config(max_concurrency=16, batch_records=False, ledger_url=ledger("p2"))),
            ],
            data,
        )
        total = time.perf_counter() - started
        sent = people_calls(sandbox.requests())
        ours = (len(sent) - 1) / span(sent)
    finally:
        sandbox.stop()
    return {"bare_calls_s": bare, "ours_calls_s": ours, "ratio": ours / bare, "ours_total_s": total}


def p3(n: int, rounds: int = ROUNDS) -> dict:
    """Records/s of a first run (a fresh ledger each time), the median of ``rounds`` runs (each moves by 10 to 20 %
    on this VM); the start-up of the same run."""
    found = []
    for _ in range(rounds):
        sandbox = Sandbox(latency_ms=50)
        try:
            data = singer_input(n, "p3")
            cfg = sandbox.target_config(max_concurrency=8, batch_records=True, batch_size=100, ledger_url=ledger("p3"))
            launched = time.time()
            run([TARGET, "--config", str(cfg)], data)
            sent = people_calls(sandbox.requests())
            first = min(c["time"] for c in sent)
            records = sum(len(c["body"]) if isinstance(c.get("body"), list) else 100 for c in sent)
        finally:
            sandbox.stop()
        found.append({"records_s": (records - 100) / span(sent), "startup_s": first - launched, "calls": len(sent)})
    found.sort(key=lambda r: r["records_s"])
    return {**found[len(found) // 2], "all_records_s": [round(r["records_s"]) for r in found]}


def p4(small: int, large: int, filled_ledger: str) -> dict:
    cmd = [TARGET, "--config", str(config(dry_run=True, batch_records=True, batch_size=100, ledger_url=filled_ledger))]
    low = peak_rss(cmd, singer_input(small, "p4"))
    high = peak_rss(cmd, singer_input(large, "p4"))
    return {"rss_small_mib": low, "rss_large_mib": high, "ratio": high / low}


def end_counts(stderr: str) -> dict[str, dict[str, int]]:
    """The end-of-run table the target writes to stderr: per stream, its counts (records, unchanged, ...)."""
    lines = stderr.splitlines()
    for at in range(len(lines) - 1, -1, -1):
        header = lines[at].split()
        if header[:2] == ["stream", "records"]:
            table: dict[str, dict[str, int]] = {}
            for line in lines[at + 1 :]:
                cells = line.split()
                if len(cells) != len(header) or not all(c.replace(",", "").isdigit() for c in cells[1:]):
                    break
                table[cells[0]] = {k: int(v.replace(",", "")) for k, v in zip(header[1:], cells[1:], strict=True)}
            return table
    raise SystemExit(f"no end-of-run table in the target's output: {stderr[-1000:]}")


def measured(cmd: list[str], stdin: Path) -> dict:
    """One run of the target: wall and CPU seconds, peak RSS (MiB, wait4 of the child), its end-of-run counts."""
    errors = WORK / "stderr.log"
    started = time.perf_counter()
    with stdin.open("rb") as data, errors.open("wb") as err:
        proc = subprocess.Popen(cmd, stdin=data, stdout=subprocess.DEVNULL, stderr=err, cwd=WORK)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    text = errors.read_text(errors="replace")
    if status:
        raise SystemExit(f"{cmd[0]} failed with status {status}: {text[-2000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
        "counts": end_counts(text),
    }


def mirror_input(n: int) -> Path:
    """P6's people as a singer-sdk tap sends a full table for `mirror`: ACTIVATE_VERSION right after SCHEMA, before
    the records, and "version" on every RECORD (singer-sdk Stream.sync); no message after the records."""
    path = WORK / f"p6-mirror-{n}.jsonl"
    if path.exists():
        return path
    version = 1_764_000_000_000
    with singer_input(n, "p6").open() as source, path.open("w") as out:
        for line in source:
            message = json.loads(line)
            if message["type"] == "RECORD":
                message["version"] = version
            out.write(json.dumps(message) + "\n")
            if message["type"] == "SCHEMA":
                out.write(json.dumps({"type": "ACTIVATE_VERSION", "stream": "people", "version": version}) + "\n")
    return path


def p6(n: int) -> dict:
    """Peak RSS of a mirror rerun of ``n`` known people vs an unchanged upsert rerun of them (a first run fills)."""
    data, mirrored = singer_input(n, "p6"), mirror_input(n)
    sandbox = Sandbox(latency_ms=0)
    try:
        settings = {"batch_records": True, "batch_size": 100, "ledger_url": ledger("p6")}
        first = measured([TARGET, "--config", str(sandbox.target_config(**settings))], data)
        sandbox.reset()
        upsert = measured([TARGET, "--config", str(sandbox.target_config(**settings))], data)
        mirror = measured([TARGET, "--config", str(sandbox.target_config(sync_mode="mirror", **settings))], mirrored)
        writes = [r for r in logged(sandbox.requests()) if r["method"] != "GET"]
    finally:
        sandbox.stop()
    for label, found in (("upsert", upsert), ("mirror", mirror)):
        unchanged = found["counts"].get("people", {}).get("unchanged")
        if unchanged != n:
            raise SystemExit(f"P6: the {label} rerun found {unchanged} of {n:,} people unchanged; it must find all")
    if writes:
        raise SystemExit(f"P6: the reruns sent {len(writes)} write(s); they must send none")
    return {
        "first_wall": first["wall"],
        "upsert_rss_mib": upsert["rss_mib"],
        "mirror_rss_mib": mirror["rss_mib"],
        "upsert_wall": upsert["wall"],
        "mirror_wall": mirror["wall"],
        "ratio": mirror["rss_mib"] / upsert["rss_mib"],
    }


def events_input(n: int) -> Path:
    """``n`` events with ids (key property "event_id"): `track_event` sends each in its own call, once."""
    path = WORK / f"p7-events-{n}.jsonl"
    if path.exists():
        return path
    with path.open("w") as out:
        out.write(
            json.dumps(
                {
                    "type": "SCHEMA",
                    "stream": "events",
                    "key_properties": ["event_id"],
                    "schema": {
                        "type": "object",
                        "properties": {
                            "event_id": {"type": "integer"},
                            "name": {"type": "string"},
                            "email": {"type": "string"},
                            "plan": {"type": ["string", "null"]},
                        },
                    },
                }
            )
            + "\n"
        )
        for i in range(n):
            out.write(
                json.dumps(
                    {
                        "type": "RECORD",
                        "stream": "events",
                        "record": {
                            "event_id": i,
                            "name": "Signed up",
                            "email": f"user{i % 1000}@example.com",
                            "plan": "pro",
                        },
                    }
                )
                + "\n"
            )
    return path


def p7(events: int, people: int, rounds: int = ROUNDS) -> dict | str:
    """PostgreSQL ledger vs SQLite: one-call-per-record first loads (records/s) and unchanged reruns (wall s), each
    side's best of ``rounds``, the two taking turns. A string (why) when no PostgreSQL server can be started."""
    server, why = servers.start_postgres(prefix="bench-pg-")
    if server is None:
        return why
    sandbox = Sandbox(latency_ms=0)
    try:
        stream, data = events_input(events), singer_input(people, "p7")
        urls = {"sqlite": ledger("p7-rerun"), "postgres": server.new_database()}
        for url in urls.values():  # the first runs fill each ledger with the same people
            measured([TARGET, "--config", str(sandbox.target_config(batch_records=True, ledger_url=url))], data)
        loads: dict[str, list[float]] = {"sqlite": [], "postgres": []}
        reruns: dict[str, list[float]] = {"sqlite": [], "postgres": []}
        for _ in range(rounds):
            for kind in ("sqlite", "postgres"):
                fresh = ledger("p7-events") if kind == "sqlite" else server.new_database()
                sandbox.reset()
                cfg = sandbox.target_config(ledger_url=fresh, streams={"events": {"endpoint": "track_event"}})
                found = measured([TARGET, "--config", str(cfg)], stream)
                calls = [r for r in logged(sandbox.requests()) if r["path"].startswith("/ingest")]
                if found["counts"]["events"]["succeeded"] != events or len(calls) != events:
                    raise SystemExit(f"P7: the {kind} first load sent {len(calls)} of {events:,} events")
                loads[kind].append((len(calls) - 1) / span(calls))
            for kind in ("sqlite", "postgres"):
                sandbox.reset()
                found = measured(
                    [TARGET, "--config", str(sandbox.target_config(batch_records=True, ledger_url=urls[kind]))], data
                )
                writes = [r for r in logged(sandbox.requests()) if r["method"] != "GET"]
                if found["counts"]["people"]["unchanged"] != people or writes:
                    raise SystemExit(f"P7: the {kind} rerun was not unchanged ({len(writes)} write(s) sent)")
                reruns[kind].append(found["wall"])
    finally:
        sandbox.stop()
        server.stop()
    load = {kind: max(found) for kind, found in loads.items()}
    rerun = {kind: min(found) for kind, found in reruns.items()}
    return {
        "load_sqlite": load["sqlite"],
        "load_postgres": load["postgres"],
        "load_ratio": load["sqlite"] / load["postgres"],  # PostgreSQL's time per record over SQLite's
        "rerun_sqlite": rerun["sqlite"],
        "rerun_postgres": rerun["postgres"],
        "rerun_ratio": rerun["postgres"] / rerun["sqlite"],
        "all_loads": loads,
        "all_reruns": reruns,
    }


def p5(n: int) -> dict:
    """An unchanged rerun of ``n`` people (the first run fills the ledger) vs the stock no-op target."""
    data = singer_input(n, "p5")
    noop = WORK / "noop_target.py"
    noop.write_text(NOOP_TARGET)
    sandbox = Sandbox(latency_ms=0)
    try:
        cfg = sandbox.target_config(batch_records=True, batch_size=100, ledger_url=ledger("p5"))
        first = run([TARGET, "--config", str(cfg)], data)
        sandbox.reset()
        best = fastest(
            {"rerun": [TARGET, "--config", str(cfg)], "stock": [sys.executable, str(noop), "--config", str(config())]},
            data,
        )
        rerun, stock = best["rerun"], best["stock"]
        writes = [r for r in logged(sandbox.requests()) if r["method"] != "GET"]
    finally:
        sandbox.stop()
    if writes:
        raise SystemExit(f"P5: the unchanged reruns sent {len(writes)} write(s); they must send none")
    return {
        "first_cpu": first["cpu"],
        "first_wall": first["wall"],
        "rerun_cpu": rerun["cpu"],
        "rerun_wall": rerun["wall"],
        "stock_cpu": stock["cpu"],
        "stock_wall": stock["wall"],
        "ratio": rerun["cpu"] / stock["cpu"],
        "ledger_url": json.loads(cfg.read_text())["ledger_url"],
    }


def load() -> str:
    """The machine's load averages (other work on the machine skews every figure)."""
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--only",
        default="P1,P2,P3,P4,P5,P6,P7",
        help="the benchmarks to run, comma-separated (P4 runs P5 too, S comes with P3)",
    )
    args = parser.parse_args()
    wanted = {name.strip().upper() for name in args.only.split(",")}
    scale = 10 if args.quick else 1
    rows, goals = [], []
    if "P1" in wanted:
        r = p1(100_000 // scale)
        rows.append(
            (
                "P1 dry run CPU vs stock SDK target",
                f"{r['ours_cpu']:.2f} s vs {r['stock_cpu']:.2f} s",
                f"{r['ratio']:.2f}",
                "<= 0.45",
            )
        )
        goals.append(r["ratio"] <= 0.45)
    if "P2" in wanted:
        r = p2(1_600 // (scale // 5 or 1))
        rows.append(
            (
                "P2 one-record calls/s, 50 ms, 16 in flight",
                f"{r['ours_calls_s']:.0f} vs bare {r['bare_calls_s']:.0f}",
                f"{r['ratio']:.2f}",
                ">= 0.90",
            )
        )
        goals.append(r["ratio"] >= 0.90)
    r3 = None
    if "P3" in wanted:
        r3 = p3(20_000 // scale)
        rows.append(
            (
                "P3 batched records/s, 50 ms, 8 in flight",
                f"{r3['records_s']:.0f} records/s (median of {', '.join(map(str, r3['all_records_s']))})",
                f"{r3['records_s'] / 8000:.2f}",
                ">= 1.00 (8,000/s)",
            )
        )
        goals.append(r3["records_s"] >= 8000)
    if wanted & {"P4", "P5"}:
        r5 = p5(100_000 // scale)
        r = p4(10_000, 1_000_000 // scale, r5["ledger_url"])
        rows.append(
            (
                "P4 peak RSS, 1M vs 10k records (dry run, ledger on)",
                f"{r['rss_large_mib']:.0f} MiB vs {r['rss_small_mib']:.0f} MiB",
                f"{r['ratio']:.2f}",
                "<= 1.20",
            )
        )
        goals.append(r["ratio"] <= 1.20)
        rows.append(
            (
                "P5 unchanged rerun CPU vs stock SDK target",
                f"{r5['rerun_cpu']:.2f} s vs {r5['stock_cpu']:.2f} s (wall {r5['rerun_wall']:.2f} vs "
                f"{r5['stock_wall']:.2f}; first run {r5['first_cpu']:.2f} s CPU)",
                f"{r5['ratio']:.2f}",
                "<= 0.50",
            )
        )
        goals.append(r5["ratio"] <= 0.50)
    if "P6" in wanted:
        n = 50_000 if args.quick else 1_000_000
        r = p6(n)
        rows.append(
            (
                f"P6 peak RSS, mirror vs upsert unchanged rerun of {n:,} known people",
                f"{r['mirror_rss_mib']:.0f} MiB vs {r['upsert_rss_mib']:.0f} MiB (wall {r['mirror_wall']:.1f} "
                f"vs {r['upsert_wall']:.1f} s; fill {r['first_wall']:.0f} s)",
                f"{r['ratio']:.2f}",
                "<= 1.50",
            )
        )
        goals.append(r["ratio"] <= 1.50)
    if "P7" in wanted:
        events, people = (1_000, 5_000) if args.quick else (5_000, 50_000)
        r7 = p7(events, people, rounds=1 if args.quick else ROUNDS)
        if isinstance(r7, str):
            print(f"P7 skipped: {r7}", file=sys.stderr)
            rows.append(("P7 PostgreSQL ledger vs SQLite", f"skipped: {r7}", "", "<= 1.25"))
            goals.append(True)
        else:
            rows.append(
                (
                    f"P7a one-call-per-record first load ({events:,} events with ids), PostgreSQL vs SQLite",
                    f"{r7['load_postgres']:.0f} vs {r7['load_sqlite']:.0f} records/s (runs "
                    f"{', '.join(f'{v:.0f}' for v in r7['all_loads']['postgres'])} vs "
                    f"{', '.join(f'{v:.0f}' for v in r7['all_loads']['sqlite'])})",
                    f"{r7['load_ratio']:.2f}",
                    "<= 1.25",
                )
            )
            goals.append(r7["load_ratio"] <= 1.25)
            rows.append(
                (
                    f"P7b unchanged rerun of {people:,} people, PostgreSQL vs SQLite (wall)",
                    f"{r7['rerun_postgres']:.2f} s vs {r7['rerun_sqlite']:.2f} s (runs "
                    f"{', '.join(f'{v:.2f}' for v in r7['all_reruns']['postgres'])} vs "
                    f"{', '.join(f'{v:.2f}' for v in r7['all_reruns']['sqlite'])})",
                    f"{r7['rerun_ratio']:.2f}",
                    "<= 1.25",
                )
            )
            goals.append(r7["rerun_ratio"] <= 1.25)
    if r3 is not None:
        rows.append(("S  start-up: launch to first request", f"{r3['startup_s']:.2f} s", "", ""))
        goals.append(True)
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average at the end {load()} (1, 5, 15 min)\n"
    )
    widths = [max(len(row[i]) for row in [*rows, ("benchmark", "measured", "ratio", "goal")]) for i in range(4)]
    for row in [("benchmark", "measured", "ratio", "goal"), *rows]:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    missed = [row[0] for row, met in zip(rows, goals, strict=True) if not met]
    print("\nGoals " + ("met." if not missed else "NOT met: " + "; ".join(missed)))
    if missed:
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)  # inputs and ledgers: P6's alone are some 400 MB
