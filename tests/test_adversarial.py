"""The holes an adversarial review found (issue 12): records lost with exit 0, crashes instead of refusals,
signals, Encharge misbehaving, secrets in every encoding. Each test failed before its fix.

Those that send signals, close its stdout, measure its memory, change the SDK's timing before it starts or the
process's encoding run the real command in a process of its own (marked `subprocess`); the others run its entry
point in-process (tests/helpers.py)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema, state, target_command

from target_encharge.sandbox import Sandbox

DEFAULT_DEAD_LETTERS = "target-encharge-dead-letters.jsonl"
REFUSED = {"email": "refused@example.com", "score": "high"}  # refused by its SCHEMA (a number): dead-lettered


def write_config(config: dict) -> tuple[Path, Path]:
    workdir = Path(tempfile.mkdtemp(prefix="target-encharge-test-"))
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return workdir, path


def lines_of(messages: t.Iterable[dict]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def popen(
    config: dict,
    *,
    stdin: t.Any = subprocess.PIPE,
    stdout: t.Any = subprocess.PIPE,
    stderr: t.Any = subprocess.PIPE,
    env: dict | None = None,
) -> tuple[subprocess.Popen, Path]:
    workdir, path = write_config(config)
    proc = subprocess.Popen(
        [*target_command(), "--config", str(path)],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=workdir,
        env={**os.environ, **(env or {})},
    )
    return proc, workdir


def run_measured(config: dict, messages: list[dict], timeout: float = 300) -> tuple[int, str, str, float]:
    """Run the command; (exit code, stdout, stderr, its own peak RSS in MiB)."""
    workdir, path = write_config(config)
    (workdir / "input.jsonl").write_bytes(lines_of(messages))
    with (
        (workdir / "input.jsonl").open("rb") as stdin,
        (workdir / "out").open("wb") as out,
        (workdir / "err").open("wb") as err,
    ):
        proc = subprocess.Popen(
            [*target_command(), "--config", str(path)], stdin=stdin, stdout=out, stderr=err, cwd=workdir
        )
        deadline = time.monotonic() + timeout
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, _high_water_kib(proc.pid))
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, (workdir / "out").read_text(), (workdir / "err").read_text(), peak_kib / 1024)


def _high_water_kib(pid: int) -> int:
    """The process's own peak RSS so far (VmHWM). Not ru_maxrss: a child started by fork or vfork is charged
    the RSS of this test process (which holds the input) at the moment it started."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def error_line(stderr: str) -> str:
    found = [line for line in stderr.splitlines() if line.startswith("target-encharge: error:")]
    return found[-1] if found else ""


def wait_for(predicate: t.Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class Scripted(ThreadingHTTPServer):
    """A loopback HTTP server answering each request with ``answer(handler, n)`` (n counts from 0)."""

    daemon_threads = True

    def __init__(self, answer: t.Callable[[BaseHTTPRequestHandler, int], None]) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.answer, self.seen = answer, []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_number(self) -> int:
        with self._lock:
            n = len(self.seen)
            self.seen.append(n)
            return n


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Scripted

    def _any(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.answer(self, self.server.next_number())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815 - http.server's names

    def log_message(self, *args: t.Any) -> None:
        pass


@pytest.fixture
def scripted() -> t.Iterator[t.Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(answer: t.Callable[[BaseHTTPRequestHandler, int], None]) -> Scripted:
        server = Scripted(answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"{}", headers: dict | None = None) -> None:
    handler.send_response(status)
    for name, value in {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def gzip_of_repeats(block: bytes, times: int) -> bytes:
    """One gzip member (one deflate stream) of ``block`` repeated ``times`` times, made in a second rather than by
    compressing it all (1 GB at level 9 is 7 s of CPU). After a full flush deflate starts afresh (no reference
    back past it), so each further copy of ``block`` compresses to the same bytes: compressed twice, repeated."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    assert again == first
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name nor time, best compression
    trailer = struct.pack("<II", crc, (len(block) * times) & 0xFFFFFFFF)
    return header + first * times + packer.flush() + trailer


def manual_to(server: Scripted, sandbox: Sandbox, **settings: t.Any) -> dict:
    """Every record to ``server`` through the manual template (no key goes there)."""
    return sandbox_config(sandbox, **{"endpoint": "manual", "url": server.url + "/hook", "max_retries": 2, **settings})


# --- records lost with exit code 0 ------------------------------------------------------------------------------


def batch_message(stream: str, files: list[Path], compression: str = "none", fmt: str = "jsonl") -> dict:
    return {
        "type": "BATCH",
        "stream": stream,
        "encoding": {"format": fmt, "compression": compression},
        "manifest": [f.as_uri() for f in files],
    }


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_batch_messages_are_delivered_like_records_and_their_state_follows(sandbox, tmp_path, compression):
    files = []
    for part in range(2):
        rows = b"".join(
            json.dumps({"email": f"b{part}-{i}@example.com", "plan": "pro"}).encode() + b"\n" for i in range(30)
        )
        path = tmp_path / f"people-{part}.jsonl{'.gz' if compression == 'gzip' else ''}"
        path.write_bytes(gzip.compress(rows) if compression == "gzip" else rows)
        files.append(path)
    bad = {"email": "no-plan-type@example.com", "plan": 5}  # refused by its SCHEMA, like a RECORD would be
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    messages = [
        schema("people", {"email": {"type": "string"}, "plan": {"type": "string"}}, ["email"]),
        batch_message("people", files, compression),
        batch_message("people", [tmp_path / "bad.jsonl"]),
        state({"bookmark": 1}),
    ]
    run = run_target(sandbox_config(sandbox, max_failures=-1, dead_letter_path="@work/dead.jsonl"), messages)
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 60
    assert run.states[-1] == {"bookmark": 1}
    dead = run.file_lines("dead.jsonl")
    assert [d["record"]["email"] for d in dead] == ["no-plan-type@example.com"]


def test_a_batch_file_that_cannot_be_read_stops_the_run_before_its_state(sandbox, tmp_path):
    messages = [
        *people(2),
        state({"before": 1}),
        schema("people", PERSON_PROPS, ["email"]),
        batch_message("people", [tmp_path / "missing.jsonl"]),
        state({"after": 1}),
    ]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 1
    assert "missing.jsonl" in error_line(run.stderr) and "Traceback" not in run.stderr
    assert {"after": 1} not in run.states
    assert len(sandbox.people()) == 2  # what came before is delivered


def test_a_parquet_batch_is_delivered_like_records(sandbox, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")  # the test extra installs it: this runs in `make test`
    import pyarrow as pa

    path = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist([{"email": f"p{i}@example.com", "plan": "pro"} for i in range(5)]), path)
    messages = [
        schema("people", PERSON_PROPS, ["email"]),
        batch_message("people", [path], fmt="parquet"),
        state({"after": 1}),
    ]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    assert sorted(p["email"] for p in sandbox.people()) == [f"p{i}@example.com" for i in range(5)]
    assert run.states[-1] == {"after": 1}


def test_a_parquet_batch_without_pyarrow_is_a_one_line_error_naming_the_format(sandbox, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed (the target asks find_spec)
    (tmp_path / "p.parquet").write_bytes(b"PAR1")
    messages = [
        schema("people", PERSON_PROPS, ["email"]),
        batch_message("people", [tmp_path / "p.parquet"], fmt="parquet"),
        state({"after": 1}),
    ]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 1
    assert "parquet" in error_line(run.stderr) and "Traceback" not in run.stderr
    assert run.states == []


@pytest.mark.subprocess
def test_an_open_batch_survives_a_schema_change_and_the_sdks_record_age_drain(sandbox, tmp_path):
    """The SDK drains sinks replaced by a new SCHEMA when records get old (5 minutes), without clean_up: the old
    sink's open batch must still be sent. The age limit is set to 0 so that the drain happens at once."""
    wrapper = (
        "import sys\nfrom target_encharge.target import TargetEncharge as T\n"
        "T._MAX_RECORD_AGE_IN_MINUTES = 0.0\nsys.argv[0] = 'target-encharge'\nT.cli()\n"
    )
    workdir, path = write_config(sandbox_config(sandbox, batch_records=True, batch_size=50))
    changed = {**PERSON_PROPS, "company": {"type": ["string", "null"]}}
    messages = [
        schema("people", PERSON_PROPS, ["email"]),
        record("people", {"email": "first@example.com"}),
        schema("people", changed, ["email"]),
        record("people", {"email": "second@example.com"}),
        record("people", {"email": "third@example.com"}),
        state({"done": 1}),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, "--config", str(path)],
        input=lines_of(messages),
        capture_output=True,
        cwd=workdir,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(p["email"] for p in sandbox.people()) == [
        "first@example.com",
        "second@example.com",
        "third@example.com",
    ]


def test_a_failed_record_is_kept_in_a_default_dead_letter_file_named_in_the_reason(sandbox):
    messages = [*people(2), record("people", REFUSED), state({"b": 1})]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 1
    dead = run.file_lines(DEFAULT_DEAD_LETTERS)
    assert [d["record"] for d in dead] == [REFUSED]
    assert DEFAULT_DEAD_LETTERS in error_line(run.stderr)


def test_dead_letters_on_stdout_are_refused_at_start(sandbox):
    run = run_target(sandbox_config(sandbox, dead_letter_path="-"), people(1))
    assert run.returncode == 1
    assert "dead_letter_path" in error_line(run.stderr)
    assert sandbox.people() == []


# --- crashes instead of a refusal -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "0000-00-00 00:00:00", "2024-02-30T00:00:00Z", 12345])
def test_a_date_the_sdk_cannot_parse_is_refused_and_the_rest_delivered(sandbox, value):
    props = {"email": {"type": "string"}, "createdAt": {"type": ["string", "integer", "null"], "format": "date-time"}}
    messages = [
        schema("people", props, ["email"]),
        record("people", {"email": "before@example.com"}),
        record("people", {"email": "bad@example.com", "createdAt": value}),
        record("people", {"email": "after@example.com", "createdAt": "2024-01-02T03:04:05Z"}),
        state({"b": 1}),
    ]
    run = run_target(sandbox_config(sandbox, max_failures=-1, dead_letter_path="@work/dead.jsonl"), messages)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p["email"] for p in sandbox.people()) == ["after@example.com", "before@example.com"]
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["record"]["email"] == "bad@example.com" and "createdAt" in dead["reason"]
    assert run.states[-1] == {"b": 1}


def test_a_date_that_may_also_be_plain_text_is_sent_as_the_text_it_is(sandbox):
    props = {
        "email": {"type": "string"},
        "seen": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string"}]},
    }
    messages = [schema("people", props, ["email"]), record("people", {"email": "a@example.com", "seen": "yesterday"})]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="a@example.com")["seen"] == "yesterday"


BAD_INPUTS: dict[str, list[t.Any]] = {
    "a SCHEMA property that is not an object": [schema("later", {"email": 5})],  # type: ignore[dict-item]
    "an invalid regex pattern": [
        schema("later", {"email": {"type": "string", "pattern": "(["}}),
        record("later", {"email": "x@example.com"}),
    ],
    "a record nested 1,000 levels deep": [
        '{"type": "RECORD", "stream": "people", "record": {"email": "deep@example.com", "x": '
        + "[" * 1000
        + "]" * 1000
        + "}}\n"
    ],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_reason_and_what_came_before_is_delivered(sandbox, case):
    messages = [*people(3), state({"b": 1}), *BAD_INPUTS[case]]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert error_line(run.stderr), run.stderr[-2000:]
    assert len(sandbox.people()) == 3
    assert {"b": 1} in run.states


def test_a_stream_map_failing_on_one_record_names_the_stream_and_map(sandbox):
    config = sandbox_config(sandbox, stream_maps={"people": {"firstName": "first_name.upper()"}})
    run = run_target(config, [*people(2), state({"b": 1})])
    assert run.returncode == 1
    line = error_line(run.stderr)
    assert "people" in line and "firstName" in line and "Traceback" not in run.stderr


def test_a_state_that_is_not_an_object_in_state_mode_is_a_one_line_reason(sandbox):
    run = run_target(
        sandbox_config(sandbox, response_output="state"),
        [*people(2), state({"b": 1}), {"type": "STATE", "value": [1, 2]}],
    )
    assert run.returncode == 1
    assert "STATE" in error_line(run.stderr) and "Traceback" not in run.stderr
    assert len(sandbox.people()) == 2


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"request_timeout": -1}, "request_timeout"),
        ({"retry_backoff": -1}, "retry_backoff"),
        ({"max_concurrency": 100000}, "max_concurrency"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"request_headers": {"X-Name": "caf\u00e9 \u2615"}}, "request_headers"),
        ({"request_headers": {"X-\u00e9": "v"}}, "request_headers"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_a_setting_out_of_range_is_refused_at_start_before_anything_is_sent(sandbox, settings, named):
    run = run_target(sandbox_config(sandbox, **settings), people(2))
    assert run.returncode == 1
    assert named in error_line(run.stderr) and "Traceback" not in run.stderr
    assert sandbox.people() == [] and [r for r in sandbox.requests() if r["method"] != "GET"] == []


@pytest.mark.subprocess
def test_a_stdout_that_cannot_carry_utf8_is_a_one_line_reason(sandbox):
    messages = [*people(2), state({"name": "Zo\u00eb \u2615"})]
    run = run_target(sandbox_config(sandbox), messages, env={"PYTHONIOENCODING": "ascii"})
    assert "Traceback" not in run.stderr
    if run.returncode == 0:  # written as JSON escapes: still the tap's state, and valid JSON
        assert run.states[-1] == {"name": "Zo\u00eb \u2615"}
    else:
        assert "stdout" in error_line(run.stderr)
    assert len(sandbox.people()) == 2


def test_a_full_disk_for_dead_letters_is_one_line_and_never_a_partial_line(sandbox, tmp_path):
    run = run_target(sandbox_config(sandbox, dead_letter_path="/dev/full"), [*people(1), record("people", REFUSED)])
    assert run.returncode == 1
    assert "/dev/full" in error_line(run.stderr) and "Traceback" not in run.stderr

    # a file left with a partial last line (a crash mid-write): the next run starts on a clean line
    dead = tmp_path / "dead.jsonl"
    dead.write_text('{"stream": "people", "rec')
    run = run_target(
        sandbox_config(sandbox, dead_letter_path=str(dead), max_failures=-1), [*people(1), record("people", REFUSED)]
    )
    assert run.returncode == 0, run.stderr
    last = dead.read_text().split("\n")[-2]
    assert json.loads(last)["record"] == REFUSED


@pytest.mark.subprocess
def test_stdout_closed_by_the_reader_is_said_in_one_line(sandbox):
    proc, _ = popen(sandbox_config(sandbox, response_output="stream", max_failures=-1))
    proc.stdout.close()  # type: ignore[union-attr]  # `| head -0`
    _, err = proc.communicate(lines_of([*people(50), *[state({"n": i}) for i in range(50)]]), timeout=60)
    assert proc.returncode == 1
    assert "stdout" in error_line(err.decode())


# --- signals ----------------------------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_reading_finishes_what_was_read_and_exits_non_zero(sandbox, sig, code):
    sandbox.set_faults(latency_ms=200)
    proc, _ = popen(sandbox_config(sandbox, max_concurrency=2, progress_interval=0, batch_records=False))
    proc.stdin.write(lines_of([*people(6), state({"n": 6})]))  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    wait_for(lambda: len(sandbox.people()) >= 1)
    proc.send_signal(sig)  # the tap is still connected: the input never ends by itself
    started = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == code, err.decode()[-2000:]
    assert len(sandbox.people()) == 6  # what was read was finished
    assert json.loads(out.decode().splitlines()[-1]) == {"n": 6}
    assert "Summary" in err.decode()


@pytest.mark.subprocess
def test_a_signal_during_a_back_pressured_dry_run_never_hangs(sandbox, tmp_path):
    feed = tmp_path / "input.jsonl"
    feed.write_bytes(lines_of(people(20000)))
    with feed.open("rb") as stdin:
        proc, _ = popen(sandbox_config(sandbox, dry_run=True, progress_interval=0), stdin=stdin)
    time.sleep(1.5)  # nobody reads its stderr and stdout: its writes block
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.communicate(timeout=30)  # now they are read: it must end
    assert proc.returncode == 143


# --- Encharge misbehaving ---------------------------------------------------------------------------------------


def events(n: int) -> list[dict]:
    return [
        schema("events", {"name": {"type": "string"}, "email": {"type": "string"}}),
        *[record("events", {"name": "Signed up", "email": f"e{i}@example.com"}) for i in range(n)],
    ]


def test_an_outage_stops_the_run_early_and_dead_letters_nothing(sandbox):
    sandbox.set_faults(error_rate=1.0)
    config = sandbox_config(
        sandbox, endpoint="track_event", max_concurrency=1, max_retries=2, dead_letter_path="@work/dead.jsonl"
    )
    run = run_target(config, [*events(200), state({"n": 200})])
    assert run.returncode == 1
    assert "unavailable" in error_line(run.stderr)
    assert len(sandbox.requests()) <= 40, "it should stop long before trying every record"
    assert run.file_lines("dead.jsonl") == []
    assert {"n": 200} not in run.states


def test_a_retry_after_beyond_reason_stops_the_run_at_once(sandbox):
    sandbox.set_faults(rate_limit=1, retry_after=3600)
    config = sandbox_config(sandbox, endpoint="track_event", max_concurrency=1)
    started = time.monotonic()
    run = run_target(config, [*events(5), state({"n": 5})], timeout=60)
    assert time.monotonic() - started < 30
    assert run.returncode == 1
    assert "unavailable" in error_line(run.stderr) and "Retry-After" in error_line(run.stderr)


def test_max_failures_counts_encharges_refusals_as_they_happen(sandbox):
    bad = [
        schema("people", {"email": {"type": "string"}, "userId": {"type": "integer"}}, ["email"]),
        *[record("people", {"email": f"p{i}@example.com", "userId": i}) for i in range(100)],
    ]
    run = run_target(sandbox_config(sandbox, max_failures=2, max_concurrency=1, batch_records=False), bad)
    assert run.returncode == 1
    posts = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert 3 <= len(posts) <= 10


def test_a_connection_dropped_mid_body_is_retried(sandbox, scripted):
    def answer(handler: BaseHTTPRequestHandler, n: int) -> None:
        if n == 0:  # promises 100 bytes, sends 10, hangs up
            handler.send_response(200)
            handler.send_header("Content-Length", "100")
            handler.end_headers()
            handler.wfile.write(b'{"users": ')
            handler.wfile.flush()
            handler.close_connection = True
            return
        reply(handler, 200)

    server = scripted(answer)
    run = run_target(manual_to(server, sandbox), people(1))
    assert run.returncode == 0, run.stderr
    assert len(server.seen) == 2


def test_request_timeout_bounds_the_whole_call_not_each_read(sandbox, scripted):
    def answer(handler: BaseHTTPRequestHandler, n: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):  # one byte a second
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(1)

    server = scripted(answer)
    started = time.monotonic()
    run = run_target(
        manual_to(server, sandbox, request_timeout=1.5, max_retries=0, max_failures=-1), people(1), timeout=60
    )
    assert time.monotonic() - started < 20
    assert "timed out" in run.stderr


@pytest.mark.subprocess
def test_a_huge_compressed_answer_is_never_inflated_whole(sandbox, scripted):
    bomb = gzip_of_repeats(b"0" * 1_000_000, 1000)  # 1 GB of zeros in under 1 MB, one gzip member

    def answer(handler: BaseHTTPRequestHandler, n: int) -> None:
        reply(handler, 200, bomb, {"Content-Encoding": "gzip"})

    server = scripted(answer)
    code, _, err, peak_mib = run_measured(manual_to(server, sandbox), people(1))
    assert code == 0, err
    assert peak_mib < 300, f"peak RSS {peak_mib:.0f} MiB"


def test_a_redirect_to_plain_http_elsewhere_is_refused(sandbox, scripted):
    def answer(handler: BaseHTTPRequestHandler, n: int) -> None:
        reply(handler, 307, b"", {"Location": "http://0.0.0.0:1/steal"})

    server = scripted(answer)
    run = run_target(manual_to(server, sandbox, max_failures=-1, dead_letter_path="@work/dead.jsonl"), people(1))
    (dead,) = run.file_lines("dead.jsonl")
    assert "redirect" in dead["reason"] and "http://0.0.0.0:1" in dead["reason"]


def test_a_303_is_followed_with_a_get_without_the_body(sandbox, scripted):
    """As browsers and requests do: a 303 (and a 302, or a 301 to a POST) turns the call into a GET, without the
    body or the headers that described it; a 307 or 308 repeats it as it was."""
    calls: list[tuple[str, str, str | None]] = []

    def answer(handler: BaseHTTPRequestHandler, n: int) -> None:
        calls.append((handler.command, handler.path, handler.headers.get("Content-Type")))
        if n == 0:
            reply(handler, 303, b"", {"Location": "/done"})
        else:
            reply(handler, 200)

    server = scripted(answer)
    run = run_target(manual_to(server, sandbox), people(1))
    assert run.returncode == 0, run.stderr
    assert calls == [("POST", "/hook", "application/json"), ("GET", "/done", None)]


def test_a_redirect_loop_fails_the_record_not_the_run(sandbox, scripted):
    server = scripted(lambda handler, n: reply(handler, 307, b"", {"Location": f"/loop{n}"}))
    run = run_target(manual_to(server, sandbox, max_failures=-1, dead_letter_path="@work/dead.jsonl"), people(1))
    assert run.returncode == 0, run.stderr
    (dead,) = run.file_lines("dead.jsonl")
    assert "TooManyRedirects" in dead["reason"]
    assert len(server.seen) == 31  # the call and 30 redirects, as requests allows


def test_a_401_from_a_redirect_target_fails_the_record_not_the_key(sandbox, scripted):
    foreign = scripted(lambda handler, n: reply(handler, 401, b'{"error": {"message": "no token"}}'))

    def to_foreign(handler: BaseHTTPRequestHandler, n: int) -> None:
        if handler.path.startswith("/v1/accounts/info"):
            reply(handler, 200, b'{"accountId": 1}')
        else:
            reply(handler, 307, b"", {"Location": foreign.url + "/people"})

    server = scripted(to_foreign)
    config = {
        **sandbox_config(sandbox),
        "api_url": server.url + "/v1",
        "max_failures": -1,
        "dead_letter_path": "@work/dead.jsonl",
    }
    run = run_target(config, people(1))
    assert "api_key" not in error_line(run.stderr)
    assert run.returncode == 0, run.stderr
    assert len(run.file_lines("dead.jsonl")) == 1


def test_a_408_is_retried(sandbox, scripted):
    server = scripted(lambda handler, n: reply(handler, 408 if n == 0 else 200))
    run = run_target(manual_to(server, sandbox), people(1))
    assert run.returncode == 0, run.stderr
    assert len(server.seen) == 2


# --- secrets ----------------------------------------------------------------------------------------------------


def encodings_of(key: str) -> list[str]:
    return [
        key,
        json.dumps(key)[1:-1],
        urllib.parse.quote(key),
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key),
    ]


@pytest.mark.parametrize("key", ['sec"ret\\key-123', "secret-key-ending-\\", "sp ace/and+plus&=key"])
def test_a_key_with_quotes_backslashes_or_url_characters_never_shows_in_any_encoding(tmp_path, key):
    with Sandbox(api_key=key, write_key="sandbox-write-key", seed=0) as sandbox:
        config = {
            **sandbox_config(sandbox),
            "api_key": key,
            "response_output": "state",
            "max_failures": -1,
            "dead_letter_path": "@work/dead.jsonl",
            "streams": {
                "hooks": {"endpoint": "manual", "url": f"/people?token={urllib.parse.quote(key)}", "method": "GET"}
            },
        }
        messages = [
            *people(1),
            record("people", REFUSED),
            schema("hooks", {"email": {"type": "string"}}),
            record("hooks", {"email": "h@example.com"}),
            state({"b": 1}),
        ]
        run = run_target(config, messages, env={"LOGLEVEL": "DEBUG", "TARGET_ENCHARGE_LOG_LEVEL": "DEBUG"})
        outputs = run.stdout + run.stderr + (run.workdir / "dead.jsonl").read_text()
        for shown in encodings_of(key):
            assert shown not in outputs
        for line in run.stdout.splitlines():
            json.loads(line)  # every STATE line stays valid JSON


def test_a_key_too_short_to_mask_safely_is_refused_at_start(sandbox):
    run = run_target({**sandbox_config(sandbox), "api_key": "abc"}, people(1))
    assert run.returncode == 1
    assert "api_key" in error_line(run.stderr) and "abc" not in run.stderr


# --- smaller ----------------------------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_state_backlog_keeps_only_the_latest_state(sandbox):
    sandbox.set_faults(latency_ms=8000)  # one call in flight while every STATE arrives
    messages = [*people(1), *[state({"position": i, "padding": "x" * 1000}) for i in range(100_000)]]
    config = sandbox_config(sandbox, progress_interval=0, batch_records=False, request_timeout=30)  # calls take 8 s
    code, out, err, peak_mib = run_measured(config, messages)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["position"] == 99_999
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB"


def test_an_integer_written_as_5_point_0_is_a_valid_integer(sandbox):
    messages = [
        schema("people", {"email": {"type": "string"}, "score": {"type": "integer"}}, ["email"]),
        '{"type": "RECORD", "stream": "people", "record": {"email": "a@example.com", "score": 5.0}}\n',
    ]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 1


def test_a_utf8_bom_at_the_start_of_input_is_skipped(sandbox):
    run = run_target(sandbox_config(sandbox), [b"\xef\xbb\xbf", *people(2)])
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 2


def test_key_properties_given_as_a_string_is_a_clear_error(sandbox):
    message = {**schema("people", PERSON_PROPS), "key_properties": "email"}
    run = run_target(sandbox_config(sandbox), [message, record("people", {"email": "a@example.com"})])
    assert run.returncode == 1
    line = error_line(run.stderr)
    assert "key_properties" in line and "'e'" not in line


def test_a_signal_while_the_command_is_still_starting_is_acted_on_not_fatal(sandbox, tmp_path):
    feed = tmp_path / "input.jsonl"
    feed.write_bytes(lines_of([*people(3), state({"n": 3})]))
    with feed.open("rb") as stdin:
        proc, _ = popen(sandbox_config(sandbox, progress_interval=0), stdin=stdin)

    def catches_sigterm() -> bool:  # the command listens: its handler is installed (still importing singer-sdk)
        caught = next(
            line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("SigCgt:")
        )
        return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))

    wait_for(catches_sigterm, 30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
