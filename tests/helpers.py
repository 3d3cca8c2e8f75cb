"""Running the real `target-encharge` command on Singer messages, and building those messages.

Two runners with one interface (``Run``): ``run_target_in_process`` runs the command's own entry point inside the
pytest process (stdin, stdout, stderr, environment and working directory swapped for the run's own), which spares
a second of singer-sdk import per run; ``run_target_process`` starts the command in a process of its own, for what
only a process shows (signals, a closed stdout, the process's locale, ``--config ENV``). ``run_target`` is the
in-process one, unless TARGET_ENCHARGE_TEST_RUNNER=process is set: conftest sets it for a test marked
``subprocess``, and setting it for a whole session runs every test through the real command (a check of the
in-process runner)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.metadata
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

API_KEY = "sandbox-api-key"
WRITE_KEY = "sandbox-write-key"
COMMAND = "target-encharge"
RUNNER_VARIABLE = "TARGET_ENCHARGE_TEST_RUNNER"  # `process`: every run_target call starts the command


@contextlib.contextmanager
def file_lock(path: Path) -> t.Iterator[None]:
    """Held by one process at a time (the pytest-xdist workers, another session): an exclusive lock on ``path``,
    released when the block ends or the process dies."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def target_command() -> list[str]:
    exe = shutil.which(COMMAND) or str(Path(sys.executable).parent / COMMAND)
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


def sandbox_config(sandbox: t.Any, **settings: t.Any) -> dict:
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


class Runner(t.Protocol):
    def __call__(
        self, config: dict, messages: t.Iterable[dict | str | bytes], *, timeout: float = ..., env: dict | None = ...
    ) -> Run: ...


def _prepare(config: dict, messages: t.Iterable[dict | str | bytes]) -> tuple[Path, Path, bytes]:
    """A fresh working directory holding ``config`` (``@work/name`` values become paths in it), and the input."""
    workdir = Path(tempfile.mkdtemp(prefix="target-encharge-test-"))
    config = {
        k: (str(workdir / v[len("@work/") :]) if isinstance(v, str) and v.startswith("@work/") else v)
        for k, v in config.items()
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    data = b"".join(
        m if isinstance(m, bytes) else (m.encode() if isinstance(m, str) else json.dumps(m).encode() + b"\n")
        for m in messages
    )
    return workdir, config_path, data


def run_target_process(
    config: dict,
    messages: t.Iterable[dict | str | bytes],
    *,
    timeout: float = 120,
    env: dict | None = None,
) -> Run:
    """Run the real command in a process of its own with ``config``, feeding ``messages`` (dicts as JSON lines,
    str/bytes as is)."""
    workdir, config_path, data = _prepare(config, messages)
    proc = subprocess.run(  # our own command
        [*target_command(), "--config", str(config_path)],
        input=data,
        capture_output=True,
        timeout=timeout,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode(), workdir)


def run_target_in_process(
    config: dict,
    messages: t.Iterable[dict | str | bytes],
    *,
    timeout: float = 120,
    env: dict | None = None,
) -> Run:
    """Run the command's entry point (the console script's own) in this process, as ``run_target_process`` would:
    the input on stdin, stdout and stderr (logging included) captured, ``env`` added to the environment, the
    working directory a fresh one, SystemExit as the exit code. Past ``timeout`` seconds it raises
    ``subprocess.TimeoutExpired``."""
    workdir, config_path, data = _prepare(config, messages)
    args = ["--config", str(config_path)]
    with _as_a_process(workdir, data, env or {}, timeout) as (stdout, stderr):
        returncode = _main(args)
    return Run(returncode, stdout.getvalue().decode(), stderr.getvalue().decode(), workdir)


def _main(args: list[str]) -> int:
    """The console script `target-encharge` with ``args``, run as its wrapper runs it (``sys.exit(main())``): its
    exit code, as the interpreter would make it."""
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name=COMMAND)
    sys.argv = [COMMAND, *args]
    try:
        sys.exit(entry_point.load()())  # the SDK sets up its console logging onto the sys.stderr of the moment
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write(f"{exc.code}\n")  # what the interpreter does with a code that is not a number
        return 1
    except Exception:  # noqa: BLE001  (an uncaught exception: the interpreter reports it and exits 1)
        sys.excepthook(*sys.exc_info())
        return 1


@contextlib.contextmanager
def _as_a_process(
    workdir: Path, data: bytes, env: dict[str, str], timeout: float
) -> t.Iterator[tuple[io.BytesIO, io.BytesIO]]:
    """For the run's duration: the process-wide state a command owns (standard streams, argv, environment,
    working directory, root logging, signal handlers, excepthook), set as a new process would have it, and put
    back afterwards, whatever the run changed."""
    stdout, stderr = io.BytesIO(), io.BytesIO()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_argv, saved_environ, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    saved_excepthook = sys.excepthook

    def out_of_time(signum: int, frame: t.Any) -> t.NoReturn:
        raise subprocess.TimeoutExpired(COMMAND, timeout)

    try:
        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(_Kept(stdout), encoding="utf-8", write_through=True)
        sys.stderr = io.TextIOWrapper(_Kept(stderr), encoding="utf-8", errors="backslashreplace", write_through=True)
        sys.argv = [COMMAND]
        os.environ.update(env)
        os.chdir(workdir)
        signal.signal(signal.SIGALRM, out_of_time)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        yield stdout, stderr
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for handler in root.handlers:
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)
        logging.captureWarnings(False)  # the SDK turns it on for its run
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        sys.excepthook = saved_excepthook
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.argv = saved_argv
        sys.stdin, sys.stdout, sys.stderr = saved_streams


class _Kept(io.BufferedIOBase):
    """A write-only byte stream onto ``into`` that outlives the text wrapper around it (closing the wrapper,
    as a command may do with its stdout, leaves what was written readable)."""

    def __init__(self, into: io.BytesIO) -> None:
        super().__init__()
        self._into = into

    def writable(self) -> bool:
        return True

    def write(self, data: t.Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        return self._into.write(data)


def run_target(
    config: dict,
    messages: t.Iterable[dict | str | bytes],
    *,
    timeout: float = 120,
    env: dict | None = None,
) -> Run:
    """Run the command with ``config``, feeding ``messages`` (dicts as JSON lines, str/bytes as is): in this
    process, or in a process of its own for a test marked ``subprocess`` (see the module's docstring)."""
    in_processes = os.environ.get(RUNNER_VARIABLE) == "process"
    runner: Runner = run_target_process if in_processes else run_target_in_process
    return runner(config, messages, timeout=timeout, env=env)


def schema(stream: str, properties: dict | None = None, key_properties: list[str] | None = None) -> dict:
    props = properties or {"email": {"type": "string"}}
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": props},
        "key_properties": key_properties or [],
    }


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
