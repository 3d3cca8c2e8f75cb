"""Crash and resume: the target is killed hard mid-run, the tap is rerun from the last STATE the target emitted,
and every record is in Encharge afterwards.

What makes that safe is that a STATE comes out only once every record before it is in Encharge (or dead-lettered):
at the moment of the kill, the sandbox already holds everything the last emitted STATE covers.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import typing as t
from pathlib import Path

import pytest
from helpers import PERSON_PROPS, record, sandbox_config, schema, state, target_command

from target_encharge.sandbox import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # kill -9 and resume: a process of its own

TAP_FIELDS = ["_sdc_last_modified", "_sdc_filename", "_sdc_stream"]
REPO = Path(__file__).resolve().parent.parent


def tap_jsonl() -> str:
    found = os.environ.get("TAP_JSONL") or str(REPO / ".tools" / "tap-jsonl" / "bin" / "tap-jsonl")
    if not Path(found).exists():
        pytest.skip("tap-jsonl is not installed: run `make test`, which installs it")
    return found


def start_target(config: dict, workdir: Path, stdin: t.Any) -> subprocess.Popen:
    (workdir / "target.json").write_text(json.dumps(config))
    return subprocess.Popen(
        [*target_command(), "--config", str(workdir / "target.json")],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=(workdir / "target.log").open("ab"),
        cwd=workdir,
    )


def kill_after_states(target: subprocess.Popen, how_many: int) -> list[dict]:
    """Read the target's STATE lines; at the ``how_many``-th, SIGKILL it. Returns the states it emitted."""
    states = []
    for line in target.stdout:
        states.append(json.loads(line))
        if len(states) == how_many:
            target.send_signal(signal.SIGKILL)
            break
    target.wait(timeout=30)
    assert target.returncode == -signal.SIGKILL, "the target ended before it could be killed mid-run"
    return states


def emails(sandbox: Sandbox) -> set[str]:
    return {p["email"] for p in sandbox.people()}


# --- with the real tap ------------------------------------------------------------------------------------------


def test_a_pipeline_from_tap_jsonl_killed_mid_run_and_rerun_from_its_last_state_loses_nothing(tmp_path):
    tap = tap_jsonl()
    files = []
    for f in range(4):
        path = tmp_path / f"people-{f}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"email": f"f{f}-{i}@example.com", "firstName": f"File {f} #{i}"}) + "\n" for i in range(40)
            )
        )
        files.append(path)
    # one tap run per file, one after the other, as Meltano would run them: each emits its STATE at its end
    tap_configs = []
    for path in files:
        config = tmp_path / f"{path.stem}.tap.json"
        config.write_text(json.dumps({"path": str(path), "stream_name": "people", "primary_keys": ["email"]}))
        tap_configs.append(config)

    def taps(state_file: Path | None) -> subprocess.Popen:
        with_state = f" --state {shlex.quote(str(state_file))}" if state_file else ""
        chain = "; ".join(f"{shlex.quote(tap)} --config {shlex.quote(str(c))}{with_state}" for c in tap_configs)
        return subprocess.Popen(
            ["bash", "-c", f"({chain})"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
            start_new_session=True,
        )

    with Sandbox(latency_ms=40) as sandbox:
        # one call per record (people are batched by default): the run is still going when the kill comes
        config = sandbox_config(sandbox, max_concurrency=2, exclude_attributes=TAP_FIELDS, batch_records=False)
        first_taps = taps(None)
        target = start_target(config, tmp_path, first_taps.stdout)
        first_taps.stdout.close()
        states = kill_after_states(target, 1)
        at_kill = emails(sandbox)
        os.killpg(first_taps.pid, signal.SIGKILL)
        first_taps.wait(timeout=30)

        # the last STATE covers the first file: every record of it was in Encharge before the STATE came out
        (covered,) = [p["context"]["_sdc_filename"] for p in states[-1]["bookmarks"]["people"]["partitions"]]
        assert covered == str(files[0])
        assert {f"f0-{i}@example.com" for i in range(40)} <= at_kill
        assert len(at_kill) < 160, "the kill came after the run had finished"

        # the rerun, from that STATE, brings in everything (tap-jsonl 0.3.1 rereads its files whatever the
        # state says, so this is at least once; people are upserted by email, so it is exact)
        sandbox.set_faults(latency_ms=0)
        (tmp_path / "state.json").write_text(json.dumps(states[-1]))
        second_taps = taps(tmp_path / "state.json")
        resumed = start_target(config, tmp_path, second_taps.stdout)
        second_taps.stdout.close()
        out, _ = resumed.communicate(timeout=240)
        assert second_taps.wait(timeout=30) == 0
        assert resumed.returncode == 0, (tmp_path / "target.log").read_text()[-3000:]
        assert out.strip(), "the rerun emitted its STATE"
        everyone = {f"f{f}-{i}@example.com" for f in range(4) for i in range(40)}
        assert emails(sandbox) == everyone
        assert len(sandbox.people()) == len(everyone)
        assert not any(key in p for p in sandbox.people() for key in TAP_FIELDS)


# --- with a tap that resumes exactly where its STATE says -------------------------------------------------------

TOTAL, STATE_EVERY = 400, 25


def tap_from(offset: int) -> list[dict]:
    """A tap that resumes exactly at its bookmark: records ``offset``.. with a STATE every 25 records."""
    messages = [schema("people", PERSON_PROPS, ["email"])]
    for i in range(offset, TOTAL):
        messages.append(record("people", {"email": f"r{i}@example.com", "score": i}))
        if (i + 1) % STATE_EVERY == 0:
            messages.append(state({"bookmarks": {"people": {"offset": i + 1}}}))
    return messages


def write_input(path: Path, messages: list[dict]) -> Path:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    return path


@pytest.mark.parametrize("kill_at_state", [1, 4])
@pytest.mark.parametrize("batched", [False, True], ids=["one call per record", "batches of 5"])
def test_a_target_killed_after_any_state_resumes_from_it_without_losing_a_record(tmp_path, kill_at_state, batched):
    with Sandbox(latency_ms=50, error_rate=0.1, seed=kill_at_state) as sandbox:
        config = sandbox_config(sandbox, max_concurrency=2, max_retries=10, batch_records=batched, batch_size=5)
        with write_input(tmp_path / "run1.jsonl", tap_from(0)).open("rb") as stdin:
            target = start_target(config, tmp_path, stdin)
            states = kill_after_states(target, kill_at_state)
        at_kill = emails(sandbox)

        offset = states[-1]["bookmarks"]["people"]["offset"]
        assert offset == kill_at_state * STATE_EVERY
        assert {f"r{i}@example.com" for i in range(offset)} <= at_kill  # the STATE never ran ahead
        assert len(at_kill) < TOTAL, "the kill came after the run had finished"

        # the tap resumes exactly at the bookmark: anything the STATE claimed but Encharge lacked would be lost
        sandbox.set_faults(latency_ms=0)
        with write_input(tmp_path / "run2.jsonl", tap_from(offset)).open("rb") as stdin:
            resumed = start_target(config, tmp_path, stdin)
            out, _ = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, (tmp_path / "target.log").read_text()[-3000:]
        assert json.loads(out.splitlines()[-1]) == {"bookmarks": {"people": {"offset": TOTAL}}}
        people = sandbox.people()
        assert {p["email"] for p in people} == {f"r{i}@example.com" for i in range(TOTAL)}
        assert len(people) == TOTAL
        assert all(p["score"] == int(p["email"][1:].split("@")[0]) for p in people)
