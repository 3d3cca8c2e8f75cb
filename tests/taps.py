"""Real database taps, one of each Singer family, run against the test servers; what they print, as messages.

- MeltanoLabs **tap-postgres** (singer-sdk) against the PostgreSQL server of tests/postgres.py, FULL_TABLE with
  ``emit_activate_version_messages`` (an SDK setting its ``--about`` does not list).
- singer-io **tap-mysql** against the MariaDB server of tests/mariadb.py, FULL_TABLE. It can be killed after a
  number of records (it has no row limit for a full table) and run again from its last STATE, as a scheduler
  resumes an interrupted table.

Each tap lives in a venv of its own, built by the Makefile (``make install``), and is found through TAP_POSTGRES /
TAP_MYSQL, or in ``.tools``. A tap that is not built skips the test, except on CI (``CI`` set), where it fails.
What each tap sends, and where in its code, is in docs/taps.md; tests/test_taps_smoke.py pins it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import tempfile
import threading
import typing as t
from pathlib import Path

import pytest

if t.TYPE_CHECKING:
    from mariadb import MariaDBServer
    from postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0


@dataclasses.dataclass
class TapRun:
    """What one run of a tap printed: its Singer messages in order (and the lines as printed), its exit code
    (negative: killed) and its log."""

    messages: list[dict]
    output: list[bytes]
    returncode: int
    stderr: str

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    def records(self, stream: str | None = None) -> list[dict]:
        return [m for m in self.of_type("RECORD") if stream is None or m["stream"] == stream]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.of_type("STATE")]

    @property
    def last_state(self) -> dict | None:
        states = self.states
        return states[-1] if states else None

    def kinds(self, *, states: bool = True) -> list[str]:
        """The message types in order, each run of RECORD as one ("STATE", "SCHEMA", "RECORD", ...); without
        STATE with ``states=False``."""
        kinds: list[str] = []
        for message in self.messages:
            if not states and message["type"] == "STATE":
                continue
            if not (kinds and kinds[-1] == message["type"] == "RECORD"):
                kinds.append(message["type"])
        return kinds

    def lines(self) -> list[bytes]:
        """The lines as the tap printed them, newlines included: a target's input."""
        return list(self.output)


def executable(name: str) -> str:
    """A built tap's path: $TAP_POSTGRES for tap-postgres, $TAP_MYSQL for tap-mysql, else .tools/<name>."""
    path = os.environ.get(name.upper().replace("-", "_")) or str(ROOT / ".tools" / name / "bin" / name)
    if not os.access(path, os.X_OK):
        reason = f"{name} is not built at {path}: run `make install`"
        if os.environ.get("CI", "").lower() not in {"", "0", "false"}:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


def _write(directory: Path, name: str, value: dict) -> str:
    path = directory / name
    path.write_text(json.dumps(value))
    return str(path)


def _run(command: list[str], *, stop_after_records: int | None = None) -> TapRun:
    """Runs a tap and reads its stdout line by line; with ``stop_after_records``, kills it (SIGKILL, as a crash
    or an out-of-memory kill) once it has printed that many records, keeping only what came before the kill."""
    messages: list[dict] = []
    output: list[bytes] = []
    with (
        tempfile.TemporaryFile() as stderr,
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
        ) as process,
    ):
        assert process.stdout is not None
        records = 0
        timer = _kill_after(process, TIMEOUT)
        try:
            for raw in process.stdout:
                if not raw.strip():
                    continue
                message = json.loads(raw)
                messages.append(message)
                output.append(raw)
                records += message["type"] == "RECORD"
                if stop_after_records is not None and records >= stop_after_records:
                    process.send_signal(signal.SIGKILL)
                    break
            returncode = process.wait()
        finally:
            timer.cancel()
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")
    if stop_after_records is None and returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} exited {returncode}: {log[-1500:]}")
    return TapRun(messages, output, returncode, log)


def _kill_after(process: subprocess.Popen, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, process.kill)
    timer.daemon = True
    timer.start()
    return timer


def _discover(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, timeout=TIMEOUT, cwd=tempfile.gettempdir(), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"discovery failed: {done.stderr.decode(errors='replace')[-1500:]}")
    return json.loads(done.stdout)


def select_full_table(catalog: dict, tables: t.Iterable[str]) -> dict:
    """The catalog with only ``tables`` selected (matched on the table name), each FULL_TABLE, all columns."""
    wanted = set(tables)
    for stream in catalog["streams"]:
        chosen = stream.get("table_name", stream["stream"]) in wanted or stream["stream"] in wanted
        for entry in stream.get("metadata", []):
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = chosen
                if chosen:
                    entry["metadata"]["replication-method"] = "FULL_TABLE"
            elif chosen:
                entry["metadata"]["selected"] = True
    return catalog


# MeltanoLabs tap-postgres (singer-sdk)


def tap_postgres_config(server: PostgresServer, database_url: str, **settings: t.Any) -> dict:
    """Settings for tap-postgres on a database of the test server: the ``public`` schema, FULL_TABLE, with
    ACTIVATE_VERSION messages (off by default in singer-sdk); a setting given as None is left out."""
    from postgres import PASSWORD, USER

    config = {
        "host": "127.0.0.1",
        "port": server.port,
        "user": USER,
        "password": PASSWORD,
        "database": database_url.rsplit("/", 1)[1],
        "filter_schemas": ["public"],
        "default_replication_method": "FULL_TABLE",
        "emit_activate_version_messages": True,
        **settings,
    }
    return {key: value for key, value in config.items() if value is not None}


def run_tap_postgres(
    server: PostgresServer, database_url: str, tables: t.Iterable[str], *, state: dict | None = None, **settings: t.Any
) -> TapRun:
    """tap-postgres, discovered then run over ``tables`` of the ``public`` schema (streams ``public-<table>``)."""
    tap = executable("tap-postgres")
    with tempfile.TemporaryDirectory(prefix="tap-postgres-") as scratch:
        directory = Path(scratch)
        config = _write(directory, "config.json", tap_postgres_config(server, database_url, **settings))
        catalog = select_full_table(_discover([tap, "--config", config, "--discover"]), tables)
        command = [tap, "--config", config, "--catalog", _write(directory, "catalog.json", catalog)]
        if state is not None:
            command += ["--state", _write(directory, "state.json", state)]
        return _run(command)


# singer-io tap-mysql


def run_tap_mysql(
    server: MariaDBServer,
    database: str,
    tables: t.Iterable[str],
    *,
    state: dict | None = None,
    stop_after_records: int | None = None,
) -> TapRun:
    """tap-mysql, discovered then run FULL_TABLE over ``tables`` of ``database`` (streams named as the tables).

    With ``stop_after_records``, it is killed once it has printed that many records: its last STATE, given back
    as ``state``, resumes the table. It writes STATE every 1,000 rows of a table (and at the table's end), so a
    resumable cut needs more than 1,000 rows before it."""
    tap = executable("tap-mysql")
    with tempfile.TemporaryDirectory(prefix="tap-mysql-") as scratch:
        directory = Path(scratch)
        config = _write(directory, "config.json", {**server.connection(), "filter_dbs": database})
        catalog = select_full_table(_discover([tap, "--config", config, "--discover"]), tables)
        command = [tap, "--config", config, "--catalog", _write(directory, "catalog.json", catalog)]
        if state is not None:
            command += ["--state", _write(directory, "state.json", state)]
        return _run(command, stop_after_records=stop_after_records)
