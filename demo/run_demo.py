"""`make demo`: a real Singer pipeline into the local Encharge sandbox, then a table of what arrived.

Starts the sandbox on a free loopback port, runs

    (tap-jsonl --config people.json; tap-jsonl --config tags.json; tap-jsonl --config events.json; tap-jsonl --config companies.json) \
        | target-encharge --config out/config.json

on the sample data in demo/data/ (people, tags, events and companies, one target run for all four streams),
prints the sandbox's summary and stops it. Exits non-zero when the pipeline fails.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from target_encharge.sandbox import Sandbox

DEMO = Path(__file__).resolve().parent
DATA = DEMO / "data"
OUT = DEMO / "out"
#: (stream, primary keys): one tap-jsonl run per file, in this order (people exist before they are tagged).
STREAMS = (("people", ["email"]), ("tags", []), ("events", []), ("companies", ["externalId"]))
#: Fields tap-jsonl adds to every record; they are not Encharge data.
CONFIG = Path(__file__).with_name("config.json")  # the target's config: copy it, point api_url at Encharge


def _executable(name: str, env_var: str | None = None) -> str:
    found = (os.environ.get(env_var) if env_var else None) or shutil.which(name)
    if not found:
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.exists() else None
    if not found:
        sys.exit(f"run_demo: cannot find {name}; run `make demo`, which installs it")
    return found


def target_config(sb: Sandbox) -> dict:
    """demo/config.json (the config to copy: `make sandbox` listens where it points), pointed at this demo's
    sandbox, with the ledger kept in demo/out/ (each demo starts from nothing)."""
    config = json.loads(CONFIG.read_text())
    ledger = OUT / ".target-encharge-ledger.db"
    for old in OUT.glob(ledger.name + "*"):
        old.unlink()
    return {**config, "api_url": sb.api_url, "ingest_url": sb.ingest_url, "ledger_url": str(ledger)}


def main() -> int:
    tap = _executable("tap-jsonl", "TAP_JSONL")
    target = _executable("target-encharge")
    OUT.mkdir(exist_ok=True)
    log_path = OUT / "pipeline.log"

    with Sandbox() as sb, tempfile.TemporaryDirectory(prefix="target-encharge-demo-") as tmp:
        configs = Path(tmp)
        taps = []
        for stream, keys in STREAMS:
            config = configs / f"{stream}.json"
            config.write_text(json.dumps({"path": str(DATA / f"{stream}.jsonl"), "stream_name": stream,
                                          "primary_keys": keys}))
            taps.append(f"{shlex.quote(tap)} --config {shlex.quote(str(config))}")
        target_json = OUT / "config.json"  # left behind for users to copy (point api_url at Encharge)
        target_json.write_text(json.dumps(target_config(sb), indent=2))
        pipeline = f"({'; '.join(taps)}) | {shlex.quote(target)} --config {shlex.quote(str(target_json))}"

        print(f"Sandbox: REST {sb.api_url}  Ingest {sb.ingest_url}")
        print("Pipeline: (tap-jsonl --config people.json; tap-jsonl --config tags.json; tap-jsonl --config events.json; "
              "tap-jsonl --config companies.json) | target-encharge --config out/config.json")
        started = time.monotonic()
        with log_path.open("w") as log:
            shell = ["bash", "-o", "pipefail", "-c", pipeline] if shutil.which("bash") else ["sh", "-c", pipeline]
            run = subprocess.run(shell, stdout=subprocess.PIPE, stderr=log, text=True, cwd=DEMO)
        took = time.monotonic() - started
        states = [line for line in run.stdout.splitlines() if line.strip()]

        print(f"Pipeline {'finished' if run.returncode == 0 else f'FAILED (exit {run.returncode})'} in {took:.1f} s; "
              f"the target wrote {len(states)} STATE line(s); tap and target logs: {log_path.relative_to(DEMO.parent)}; "
              f"the target's config: {target_json.relative_to(DEMO.parent)}")
        print()
        print(sb.summary())
        if run.returncode != 0:
            tail = log_path.read_text().splitlines()[-15:]
            print("Last lines of the pipeline log:", *tail, sep="\n  ", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
