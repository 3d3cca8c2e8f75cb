"""Running the real `target-encharge` command on Singer messages, and building those messages."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

API_KEY = "sandbox-api-key"
WRITE_KEY = "sandbox-write-key"


def target_command() -> list[str]:
    exe = shutil.which("target-encharge") or str(Path(sys.executable).parent / "target-encharge")
    return [exe]


@dataclasses.dataclass
class Run:
    """What one run of the target printed and returned."""

    returncode: int
    stdout: str
    stderr: str
    workdir: Path

    @property
    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.split("\n") if line.strip()]

    @property
    def states(self) -> list[dict]:
        return self.lines

    def file_lines(self, name: str) -> list[dict]:
        path = self.workdir / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]

    @property
    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("target-encharge: error:")]
        return lines[-1] if lines else ""


def sandbox_config(sandbox: t.Any, **settings: t.Any) -> dict:  # noqa: ANN401
    """A config pointing at the sandbox, quick to retry, plus ``settings``."""
    return {
        "api_key": API_KEY,
        "write_key": WRITE_KEY,
        "api_url": sandbox.api_url,
        "ingest_url": sandbox.ingest_url,
        "retry_backoff": 0.01,
        "request_timeout": 5,
        **settings,
    }


def run_target(
    config: dict,
    messages: t.Iterable[dict | str | bytes],
    *,
    timeout: float = 120,
    env: dict | None = None,
) -> Run:
    """Run the real command with ``config``, feeding ``messages`` (dicts as JSON lines, str/bytes as is)."""
    workdir = Path(tempfile.mkdtemp(prefix="target-encharge-test-"))
    config = {k: (str(workdir / v[len("@work/"):]) if isinstance(v, str) and v.startswith("@work/") else v)
              for k, v in config.items()}
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    data = b"".join(
        m if isinstance(m, bytes) else (m.encode() if isinstance(m, str) else json.dumps(m).encode() + b"\n")
        for m in messages
    )
    proc = subprocess.run(
        [*target_command(), "--config", str(config_path)],
        input=data,
        capture_output=True,
        timeout=timeout,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode(), workdir)


def schema(stream: str, properties: dict | None = None, key_properties: list[str] | None = None) -> dict:
    props = properties or {"email": {"type": "string"}}
    return {"type": "SCHEMA", "stream": stream, "schema": {"type": "object", "properties": props},
            "key_properties": key_properties or []}


def record(stream: str, rec: dict) -> dict:
    return {"type": "RECORD", "stream": stream, "record": rec}


def state(value: dict) -> dict:
    return {"type": "STATE", "value": value}


PERSON_PROPS = {
    "email": {"type": "string"},
    "userId": {"type": ["string", "null"]},
    "firstName": {"type": ["string", "null"]},
    "lastName": {"type": ["string", "null"]},
    "plan": {"type": ["string", "null"]},
    "score": {"type": ["number", "null"]},
    "createdAt": {"type": ["string", "null"], "format": "date-time"},
}


def people(n: int, stream: str = "people", start: int = 0) -> list[dict]:
    """A SCHEMA and ``n`` person records, p<i>@example.com."""
    return [schema(stream, PERSON_PROPS, ["email"])] + [
        record(stream, {"email": f"p{i}@example.com", "firstName": f"Person {i}", "plan": "pro", "score": i + 0.5})
        for i in range(start, start + n)
    ]
