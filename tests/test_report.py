"""The run report: its content, bounded examples, its signature, and a notification that fails or times out
never failing anything. The receiver is a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
import typing as t

import pytest

from target_encharge import report
from target_encharge.counts import RunCounts


class Receiver(http.server.ThreadingHTTPServer):
    """A loopback endpoint that keeps what it was sent (and can be slow to answer)."""

    def __init__(self, delay: float = 0.0, status: int = 204) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.delay, self.status = delay, status
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: t.Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/encharge"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def receiver() -> t.Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def _ended_run() -> tuple[report.RunRecord, report.FailureExamples]:
    counts = RunCounts()
    failures = report.FailureExamples()
    for i in range(15):
        counts.record_seen("people")
        counts.failed("people", {"email": f"p{i}@example.com"}, "HTTP 400: bad field")
        failures.add("people", {"email": f"p{i}@example.com"}, "HTTP 400: bad field")
    counts.record_seen("people")
    counts.call_made("people", retried=True)
    counts.succeeded("people", 1)
    failures.add("tags", {"email": "z@example.com", "tag": "vip"}, "HTTP 404: no such person")
    record = report.RunRecord.begin("abc")
    record.end(counts, exit_code=1, reason="16 record(s) failed")
    return record, failures


def test_the_report_holds_the_history_row_and_failures_by_reason_with_ten_examples() -> None:
    record, failures = _ended_run()
    document = report.report(record, failures)
    assert document["status"] == "failed" and document["exit_code"] == 1
    assert document["reason"] == "16 record(s) failed"
    assert document["records_read"] == 16 and document["calls"] == 1 and document["retries"] == 1
    assert document["streams"]["people"]["failed"] == 15
    first, second = document["failures"]
    assert (first["stream"], first["reason"], first["count"]) == ("people", "HTTP 400: bad field", 15)
    assert len(first["examples"]) == report.MAX_EXAMPLES
    assert first["examples"][0] == {"email": "p0@example.com"}
    assert second["count"] == 1 and second["examples"] == [{"email": "z@example.com", "tag": "vip"}]


def test_failure_reasons_are_bounded() -> None:
    failures = report.FailureExamples()
    for i in range(report.MAX_REASONS + 7):
        failures.add("s", {"id": str(i)}, f"reason {i}")
    listed = failures.listed()
    assert len(listed) == report.MAX_REASONS + 1
    assert listed[-1] == {"stream": None, "reason": "other reasons", "count": 7, "examples": []}


def test_the_settings_fingerprint_leaves_secrets_and_the_ledger_password_out() -> None:
    def secret(name: str) -> bool:
        return name in ("api_key", "notify_secret")

    base = {"api_key": "k1", "ledger_url": "postgresql://u:pw1@db/x", "batch_size": 10}
    same = {"api_key": "k2", "ledger_url": "postgresql://u:pw2@db/x", "batch_size": 10}
    other = {**base, "batch_size": 11}
    assert report.settings_fingerprint(base, secret) == report.settings_fingerprint(same, secret)
    assert report.settings_fingerprint(base, secret) != report.settings_fingerprint(other, secret)


def test_the_report_file_is_written_whole(tmp_path) -> None:
    record, failures = _ended_run()
    path = tmp_path / "report.json"
    report.write(str(path), report.report(record, failures))
    assert json.loads(path.read_text())["run_id"] == record.run_id
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_notification_is_signed_with_hmac_sha256_of_its_body(receiver: Receiver) -> None:
    record, failures = _ended_run()
    assert report.notify(receiver.url, "s3cret", report.report(record, failures), timeout=5)
    ((headers, body),) = receiver.received
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[report.SIGNATURE_HEADER] == expected
    assert json.loads(body)["run_id"] == record.run_id
    assert "s3cret" not in body.decode()


def test_a_notification_that_times_out_is_logged_and_never_raises(caplog) -> None:
    slow = Receiver(delay=2.0)
    try:
        started = time.monotonic()
        assert not report.notify(slow.url + "?token=abc", None, {"status": "failed"}, timeout=0.3)
        assert time.monotonic() - started < 1.5
    finally:
        slow.stop()
    assert "Could not send the run report" in caplog.text and "token=abc" not in caplog.text


def test_a_notification_refused_by_the_receiver_is_logged(caplog) -> None:
    refusing = Receiver(status=500)
    try:
        assert not report.notify(refusing.url, None, {"status": "failed"}, timeout=5)
    finally:
        refusing.stop()
    assert "answered HTTP 500" in caplog.text
