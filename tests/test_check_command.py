"""`target-encharge-check`: the start-up checks for every configured stream, without data (issue 15)."""

from __future__ import annotations

import json

from helpers import sandbox_config

from target_encharge.check import main


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
    config = sandbox_config(sandbox, streams={
        "companies": {"endpoint": "create_custom_object", "object_name": "NoSuchObject"},
        "events": {"endpoint": "track_event"},
    })
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
