"""`target-encharge-check`: the start-up checks for every configured stream, without data (issue 15); it touches
nothing (issue 21), and refuses a setting in the words the target and `target-encharge-ledger` use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import run_target, sandbox_config

from target_encharge.check import main
from target_encharge.ledger import commands


def check(tmp_path, capsys, config: dict) -> tuple[int, list[str]]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = main(["--config", str(path)])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_good_config_passes_and_exits_0(sandbox, tmp_path, capsys):
    code, lines = check(tmp_path, capsys, sandbox_config(sandbox, streams={"tags": {"endpoint": "add_tag"}}))
    assert code == 0, lines
    assert lines == ["target-encharge-check: ok: every configured stream passed the start-up checks"]


def test_each_problem_is_one_line_naming_the_stream_and_the_exit_is_1(sandbox, tmp_path, capsys):
    config = sandbox_config(
        sandbox,
        streams={
            "companies": {"endpoint": "create_custom_object", "object_name": "NoSuchObject"},
            "events": {"endpoint": "track_event"},
        },
    )
    del config["write_key"]
    code, lines = check(tmp_path, capsys, config)
    assert code == 1
    assert len(lines) == 2, lines
    assert "streams.companies" in lines[0] and "NoSuchObject" in lines[0]
    assert "streams.events" in lines[1] and "write_key" in lines[1]


def test_a_refused_api_key_is_a_problem_and_never_shown(sandbox, tmp_path, capsys):
    config = sandbox_config(sandbox, api_key="wrong-key-123456")
    code, lines = check(tmp_path, capsys, config)
    assert code == 1
    assert lines and all("api_key" in line for line in lines)
    assert "wrong-key-123456" not in "\n".join(lines)


def test_the_command_leaves_no_file_where_it_runs(sandbox, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(sandbox_config(sandbox, streams={"tags": {"endpoint": "add_tag"}})))
    workdir = tmp_path / "empty"
    workdir.mkdir()
    exe = shutil.which("target-encharge-check") or str(Path(sys.executable).parent / "target-encharge-check")
    run = subprocess.run(
        [exe, "--config", str(config)], capture_output=True, text=True, cwd=workdir, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in workdir.iterdir()) == []  # no ledger, no -wal or -shm, no dead letters


def test_a_setting_of_the_wrong_type_is_refused_alike_by_the_target_the_check_and_the_ledger_commands(
    sandbox, tmp_path, capsys
):
    config = sandbox_config(sandbox, ledger_url=123)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    refusal = "invalid config: ledger_url must be a string (its value is not shown: it is a secret)"

    assert main(["--config", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"target-encharge-check: {refusal}"
    assert commands.main(["status", "--config", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"target-encharge-ledger: error: {refusal}"
    run = run_target(config, [])
    assert run.returncode == 1
    assert run.error_line == f"target-encharge: error: {refusal}"
