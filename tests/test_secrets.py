"""Secret hygiene: the keys never show in any output, and the token goes only to Encharge's own hosts.

Every output of every kind of run (stderr and stdout with DEBUG logging, dead letters, the response stream, the
STATE summary, dry-run and test-send previews, the one-line reasons to stop) is scanned for both keys, and so is
everything the sandbox itself prints (`target-encharge-sandbox --verbose`) and keeps in its request log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from helpers import API_KEY as SANDBOX_API_KEY
from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema, state
from helpers import WRITE_KEY as SANDBOX_WRITE_KEY

from target_encharge.sandbox import Sandbox
from target_encharge.settings import RunSettings

API_KEY = "ek_live_API_3f9a7c1e5b2d"
WRITE_KEY = "ek_write_WK_8d4b6a2f0c1e"
KEYS = (API_KEY, WRITE_KEY)
SANDBOX_KEYS = (SANDBOX_API_KEY, SANDBOX_WRITE_KEY)  # what `sandbox_config` sends to the `sandbox` fixture
DEBUG = {"TARGET_ENCHARGE_LOGLEVEL": "DEBUG", "LOGLEVEL": "DEBUG"}


def leaks(text: str, keys: tuple[str, ...] = KEYS) -> list[str]:
    """The lines of ``text`` that hold either key."""
    return [line[:200] for line in text.splitlines() if any(key in line for key in keys)]


def everything_written(run) -> str:
    """stdout, stderr and every file the run wrote (its config, which holds the keys, aside)."""
    files = [
        p.read_bytes().decode("utf-8", "replace")  # the sync ledger (SQLite) too
        for p in sorted(run.workdir.iterdir())
        if p.name != "config.json"
    ]
    return "\n".join([run.stdout, run.stderr, *files])


class VerboseSandbox:
    """`target-encharge-sandbox --verbose` as its own process, with our keys and some faults."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("target-encharge-sandbox") or str(Path(sys.executable).parent / "target-encharge-sandbox")
        self.out_path, self.err_path = workdir / "sandbox.out", workdir / "sandbox.err"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:  # files: a full pipe would block it
            self.process = subprocess.Popen(
                [
                    exe,
                    "--verbose",
                    "--port",
                    "0",
                    "--api-key",
                    API_KEY,
                    "--write-key",
                    WRITE_KEY,
                    "--error-rate",
                    "0.15",
                    "--seed",
                    "11",
                ],
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while "Ingest" not in self.out_path.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.err_path.read_text()
            time.sleep(0.05)
        banner = self.out_path.read_text()
        self.api_url = re.search(r"REST (\S+)", banner).group(1)
        self.ingest_url = re.search(r"Ingest (\S+)", banner).group(1)
        self.url = self.api_url[: -len("/v1")]

    def get(self, what: str) -> requests.Response:
        return requests.get(f"{self.url}/_sandbox/{what}", timeout=10)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)
        return self.out_path.read_text() + self.err_path.read_text()


@pytest.fixture
def verbose_sandbox(tmp_path) -> t.Iterator[VerboseSandbox]:
    sandbox = VerboseSandbox(tmp_path)
    yield sandbox
    sandbox.stop()


def every_kind_of_record() -> list[dict]:
    """People, tags (some for people Encharge does not know: dead letters), events, a company, a manual call,
    and records that carry a key in their data (a user pasting one where it does not belong)."""
    tag = {"email": {"type": "string"}, "tag": {"type": "string"}, "note": {"type": ["string", "null"]}}
    event = {"name": {"type": "string"}, "email": {"type": "string"}, "plan": {"type": "string"}}
    company = {"externalId": {"type": "string"}, "name": {"type": "string"}}
    return [
        *people(4),
        record("people", {"email": "pasted@example.com", "firstName": f"token {WRITE_KEY}"}),
        state({"bookmarks": {"people": 5}}),
        schema("tags", tag),
        record("tags", {"email": "p1@example.com", "tag": "vip"}),
        record("tags", {"email": "ghost@example.com", "tag": "vip", "note": f"my key is {API_KEY}"}),
        schema("events", event),
        record("events", {"name": "Upgraded", "email": "p2@example.com", "plan": "pro"}),
        schema("companies", company),
        record("companies", {"externalId": "acme", "name": "Acme"}),
        schema("optouts", PERSON_PROPS),
        record("optouts", {"email": "p3@example.com"}),
        state({"bookmarks": {"people": 5, "done": True}}),
    ]


ROUTES = {
    "tags": {"endpoint": "add_tag"},
    "events": {"endpoint": "track_event"},
    "companies": {"endpoint": "create_custom_object", "object_name": "company"},
    "optouts": {"endpoint": "manual", "url": "/people/unsubscribe?email={email}"},
}

RUNS = {
    "dead letters and the response stream in files": {
        "response_output": "stream",
        "response_stream_path": "@work/responses.jsonl",
    },
    "the response stream on stdout": {"response_output": "stream", "response_stream_path": "-"},
    "the summary in STATE": {"response_output": "state"},
    "a dry run, previews on stdout": {"dry_run": True},
    "a dry run, previews in a file": {"dry_run": True, "preview_path": "@work/preview.jsonl"},
    "a test send": {"test_send": True, "preview_path": "@work/preview.jsonl"},
}


def test_no_key_shows_in_any_output_of_any_run_nor_in_the_sandbox_logs(verbose_sandbox):
    written = []
    for name, settings in RUNS.items():
        config = sandbox_config(
            verbose_sandbox,
            api_key=API_KEY,
            write_key=WRITE_KEY,
            streams=ROUTES,
            max_failures=-1,
            max_retries=10,
            dead_letter_path="@work/dead.jsonl",
            **settings,
        )
        run = run_target(config, every_kind_of_record(), env=DEBUG)
        assert run.returncode == 0, f"{name}: {run.stderr[-2000:]}"
        assert " | DEBUG " in run.stderr  # the scan covers debug logging
        output = everything_written(run)
        assert leaks(output) == [], name
        written.append(output)
    # the scan was not vacuous: there were dead letters, responses, previews, retries, and the data that
    # carried a key was handled (masked) rather than dropped
    everything = "\n".join(written)
    assert '"reason"' in everything and '"status_code"' in everything and '"headers"' in everything
    assert "Retrying POST" in everything
    assert "my key is ***" in everything and "token ***" in everything

    # a refused key: the reason names the setting, never the value
    swapped = sandbox_config(verbose_sandbox, api_key=WRITE_KEY, write_key=API_KEY)
    refused = run_target(swapped, people(1), env=DEBUG)
    assert refused.returncode == 1 and "api_key" in refused.error_line
    assert leaks(everything_written(refused)) == []

    # the sandbox's own records: its request log (which says which key came) and what it printed (the
    # account's data is not a log: a key a user put in a person's field is stored there as that field)
    logged = verbose_sandbox.get("requests").json()["requests"]
    assert {r["auth"] for r in logged} >= {"api_key", "write_key"}
    assert leaks(json.dumps(logged)) == []
    printed = verbose_sandbox.stop()
    assert "POST /v1/people" in printed  # --verbose printed every request
    assert leaks(printed) == []


def test_a_key_passed_in_the_query_is_not_printed_by_the_sandbox(verbose_sandbox):
    # Encharge also takes the REST key as ?token=; the sandbox must not print or keep it
    answer = requests.get(f"{verbose_sandbox.api_url}/accounts/info", params={"token": API_KEY}, timeout=10)
    assert answer.status_code == 200
    (call,) = verbose_sandbox.get("requests").json()["requests"]
    assert call["auth"] == "api_key" and call["query"] == {"token": "***"}
    assert leaks(verbose_sandbox.stop()) == []


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param({"api_url": f"http://api.example.com/v1?token={API_KEY}"}, id="a key in api_url"),
        pytest.param(
            {"endpoint": "manual", "url": f"http://hooks.example.com/in?key={WRITE_KEY}"}, id="a key in a manual url"
        ),
        pytest.param({"request_headers": f"Authorization {API_KEY}"}, id="a key in a malformed header"),
        pytest.param({"endpoint": "create_custom_object", "object_name": WRITE_KEY}, id="a key as object_name"),
    ],
)
def test_a_reason_to_stop_that_quotes_a_setting_masks_the_keys(setting):
    with Sandbox(api_key=API_KEY, write_key=WRITE_KEY) as encharge:
        config = {**sandbox_config(encharge), "api_key": API_KEY, "write_key": WRITE_KEY, **setting}
        run = run_target(config, people(1), env=DEBUG)
    assert run.returncode == 1
    assert run.error_line and "***" in run.error_line
    assert leaks(run.stdout + run.stderr) == []


# --- the token goes to Encharge's hosts only ---------------------------------------------------------------------


@pytest.fixture
def foreign() -> t.Iterator[Sandbox]:
    """Another host that would accept the keys of `sandbox_config`: a leaked token would show in its log as
    auth 'api_key' (or 'write_key'), and the data would be stored there."""
    with Sandbox() as sb:
        yield sb


def host_port(sb: Sandbox) -> str:
    return sb.url[len("http://") :]


@pytest.mark.parametrize(
    "spelling",
    [
        "{foreign}/hooks/people",
        "{foreign}/v1/people",
        "{foreign}/ingest/v1",
        "http://localhost:{foreign_port}/v1/people",
        "http://{encharge}@{foreign_host}/v1/people",  # userinfo that looks like the Encharge host
        "http://{foreign_host}\\@{encharge}/v1/people",  # a backslash: urllib3 connects to the first host
    ],
)
def test_the_token_never_reaches_another_host_however_its_url_is_spelled(sandbox, foreign, spelling):
    url = spelling.format(
        foreign=foreign.url,
        foreign_host=host_port(foreign),
        encharge=host_port(sandbox),
        foreign_port=host_port(foreign).rsplit(":", 1)[1],
    )
    run = run_target(sandbox_config(sandbox, endpoint="manual", url=url, max_failures=-1), people(2), env=DEBUG)
    assert run.returncode == 0, run.stderr
    calls = foreign.requests()
    assert len(calls) == 2  # both records reached the other host...
    for call in calls:  # ...without the token
        assert call["auth"] is None and "x-encharge-token" not in call["headers"]
    assert foreign.people() == [] and foreign.events() == []
    assert not [r for r in sandbox.requests() if r["method"] != "GET"]


def test_plain_http_is_refused_to_any_host_but_this_machine_however_the_url_is_spelled(sandbox):
    # urllib.parse reads 127.0.0.1 here; the connection would go to api.example.com, in the clear
    for setting in (
        {"api_url": f"http://api.example.com\\@{host_port(sandbox)}/v1"},
        {"endpoint": "manual", "url": f"http://hooks.example.com\\@{host_port(sandbox)}/v1/people"},
    ):
        run = run_target({**sandbox_config(sandbox), **setting}, people(1))
        assert run.returncode == 1
        assert "must be an https URL" in run.error_line
    assert sandbox.requests() == []


class _Redirector(BaseHTTPRequestHandler):
    """Stands in for Encharge answering the start-up check itself and redirecting every other call."""

    protocol_version = "HTTP/1.1"
    server: t.Any

    def do_GET(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        self.server.seen.append((self.command, self.path, self.headers.get("X-Encharge-Token")))
        if self.path == "/v1/accounts/info":
            body = b'{"accountId": 1}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b""
            self.send_response(self.server.status)
            self.send_header("Location", self.server.to + self.path)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815 - http.server's names

    def log_message(self, *args: t.Any) -> None:
        pass


@pytest.fixture
def redirector(foreign) -> t.Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    server.seen, server.to, server.status = [], foreign.url, 307
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("stream", ["people", "events"])
def test_a_redirect_from_encharge_to_another_host_drops_the_token(redirector, foreign, status, stream):
    redirector.status = status
    base = f"http://{redirector.server_address[0]}:{redirector.server_address[1]}"
    config = {
        "api_key": SANDBOX_KEYS[0],
        "write_key": SANDBOX_KEYS[1],
        "api_url": base + "/v1",
        "ingest_url": base + "/ingest/v1",
        "retry_backoff": 0.01,
        "max_retries": 1,
        "max_failures": -1,
        "streams": {"events": {"endpoint": "track_event"}},
    }
    messages = (
        people(1)
        if stream == "people"
        else [
            schema("events", {"name": {"type": "string"}, "email": {"type": "string"}}),
            record("events", {"name": "Signed up", "email": "a@example.com"}),
        ]
    )
    run = run_target(config, messages, env=DEBUG)
    sent = [s for s in redirector.seen if s[0] == "POST"]
    assert sent and all(token == SANDBOX_KEYS[stream == "events"] for _, _, token in sent)  # Encharge got its key
    landed = [r for r in foreign.requests() if r["method"] == "POST"]
    assert landed  # ...the redirect was followed...
    for call in landed:  # ...and the other host never saw it
        assert call["auth"] is None and "x-encharge-token" not in call["headers"]
    assert foreign.people() == [] and foreign.events() == []
    assert leaks(run.stdout + run.stderr, SANDBOX_KEYS) == []


@pytest.mark.subprocess  # --config ENV
def test_keys_given_as_environment_variables_do_not_show_either(sandbox, tmp_path):
    env = {
        **os.environ,
        **DEBUG,
        "TARGET_ENCHARGE_API_KEY": SANDBOX_KEYS[0],
        "TARGET_ENCHARGE_WRITE_KEY": SANDBOX_KEYS[1],
        "TARGET_ENCHARGE_API_URL": sandbox.api_url,
        "TARGET_ENCHARGE_INGEST_URL": sandbox.ingest_url,
        "TARGET_ENCHARGE_RESPONSE_OUTPUT": "state",
    }
    exe = shutil.which("target-encharge") or str(Path(sys.executable).parent / "target-encharge")
    data = "".join(json.dumps(m) + "\n" for m in [*people(2), state({"n": 2})]).encode()
    proc = subprocess.run(
        [exe, "--config", "ENV"], input=data, capture_output=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0, output
    assert len(sandbox.people()) == 2
    assert leaks(output, SANDBOX_KEYS) == []


def test_a_key_of_the_wrong_type_is_refused_without_showing_it():
    run = run_target({"api_key": 987654321987, "write_key": ["765432187654"], "max_retries": "x"}, [])
    assert run.returncode == 1
    assert "api_key must be a string" in run.error_line and "write_key must be a string" in run.error_line
    assert "'x' is not of type" in run.error_line  # other settings' errors are quoted as they are
    for key in ("987654321987", "765432187654"):
        assert key not in run.stderr + run.stdout


@pytest.mark.parametrize(
    "ledger_url",
    [
        "postgresql://ledger:pass%40word-9@127.0.0.1:5432/ledger",
        "postgresql://ledger@127.0.0.1:5432/ledger?password=pass%40word-9",
    ],
)
def test_the_ledger_password_is_a_secret_in_either_place_a_url_carries_it(ledger_url):
    secrets = RunSettings.from_config({"ledger_url": ledger_url}).secrets
    assert "pass%40word-9" in secrets and "pass@word-9" in secrets  # as written and percent-decoded


RAW_AT_URL = "postgresql://ledger:Tr0ub4dor@home@127.0.0.1:5432/ledger"  # a raw '@' in the password


def test_a_password_with_a_raw_at_is_refused_alike_by_the_run_the_check_and_status_without_showing_it(
    sandbox, tmp_path, capsys
):
    from target_encharge.check import main as check_main
    from target_encharge.ledger import commands

    config = sandbox_config(sandbox, ledger_url=RAW_AT_URL)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    refusal = "percent-encode @ in the password as %40 (the URL is not shown: it holds a password)"

    run = run_target(config, people(3))
    assert run.returncode == 1
    assert run.error_line.startswith("target-encharge: error: ledger_url: its user name or password holds a raw '@'")
    assert run.error_line.endswith(refusal)
    assert check_main(["--config", str(path)]) == 1
    checked = capsys.readouterr().err
    assert refusal in checked
    assert commands.main(["status", "--config", str(path)]) == 1
    status = capsys.readouterr()
    assert refusal in status.err and status.out == ""
    for text in (run.stderr + run.stdout, checked, status.err):
        assert "Tr0ub4dor" not in text and "home" not in text  # neither part of the password
    assert sandbox.people() == []  # refused before anything was sent


def test_mask_url_hides_the_user_information_as_a_whole():
    from target_encharge.ledger import mask_url

    assert mask_url("postgresql://ledger:Tr0ub4dor%40home@127.0.0.1/db") == "postgresql://***@127.0.0.1/db"
    assert mask_url(RAW_AT_URL) == "postgresql://***@127.0.0.1:5432/ledger"  # no tail of the password left
    assert mask_url("postgresql://host/db?user=u&password=pw&x=1") == "postgresql://host/db?user=u&password=***&x=1"
    assert mask_url("sqlite:////var/lib/a@b.db") == "sqlite:////var/lib/a@b.db"  # a file's path is no password


def test_a_password_that_is_a_common_word_is_masked_only_where_it_stands_alone():
    from target_encharge.ledger.connection import locate
    from target_encharge.redaction import Redactor

    url = "postgresql://postgres:postgres@127.0.0.1:1/ledger"
    settings = RunSettings.from_config({"ledger_url": url, "api_key": API_KEY})
    redact = Redactor(settings.secrets, words=settings.passwords)
    hint = "PostgreSQL needs its driver: pip install 'target-encharge[postgres]'"
    assert redact(hint) == hint
    assert redact("stream postgresql_users sent to postgres-prod") == "stream postgresql_users sent to postgres-prod"
    assert redact("the password is postgres.") == "the password is ***."
    assert (
        redact(f"connecting to {url} with key {API_KEY}")
        == "connecting to postgresql://***@127.0.0.1:1/ledger with key ***"
    )
    location = locate(url)
    assert location.scrub(f"{hint}; password postgres refused") == f"{hint}; password *** refused"
    assert location.shown == "postgresql://***@127.0.0.1:1/ledger"


def test_a_run_whose_ledger_password_is_a_common_word_keeps_its_messages_readable(sandbox):
    run = run_target(sandbox_config(sandbox, ledger_url="postgresql://postgres:postgres@127.0.0.1:1/ledger"), people(1))
    assert run.returncode == 1
    assert run.error_line.startswith("target-encharge: error: ledger_url postgresql://***@127.0.0.1:1/")
    assert "cannot reach the server" in run.error_line
    assert ":postgres@" not in run.stderr


@pytest.mark.parametrize("raw", ["@", "/", "?", "#"])
def test_every_character_that_makes_a_ledger_url_ambiguous_is_named_and_the_url_never_shown(raw):
    from target_encharge.ledger import LedgerError, SyncLedger

    url = f"postgresql://ledger:Tr0ub{raw}dor9@127.0.0.1:5432/ledger"
    with pytest.raises(LedgerError) as caught:
        SyncLedger.open(url)
    message = str(caught.value)
    assert f"holds a raw {raw!r}" in message and "percent-encode" in message
    assert "Tr0ub" not in message and "dor9" not in message and "127.0.0.1" not in message
