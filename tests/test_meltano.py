"""target-encharge as a Meltano loader: settings from environment variables, the SDK's stream maps and record
validation in front of our sinks, and real `meltano install` + `meltano run` from meltano.yml into the sandbox,
with Meltano's saved state exactly the tap's."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import yaml
from helpers import (
    API_KEY,
    PERSON_PROPS,
    WRITE_KEY,
    file_lock,
    record,
    run_target,
    sandbox_config,
    schema,
    state,
    target_command,
)

from target_encharge.responses import SUMMARY_KEY


def run_with_env(env: dict[str, str], messages: list[dict]) -> subprocess.CompletedProcess:
    """The target with `--config ENV`: every setting from TARGET_ENCHARGE_* variables, as a shell passes them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_ENCHARGE_")}
    return subprocess.run(
        [*target_command(), "--config", "ENV"],
        input="".join(json.dumps(m) + "\n" for m in messages),
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        check=False,
    )


def sandbox_env(sandbox: t.Any, **settings: str) -> dict[str, str]:
    return {
        "TARGET_ENCHARGE_API_KEY": API_KEY,
        "TARGET_ENCHARGE_WRITE_KEY": WRITE_KEY,
        "TARGET_ENCHARGE_API_URL": sandbox.api_url,
        "TARGET_ENCHARGE_INGEST_URL": sandbox.ingest_url,
        **{f"TARGET_ENCHARGE_{k.upper()}": v for k, v in settings.items()},
    }


TAG_PROPS = {"email": {"type": "string"}, "tag": {"type": "string"}}


@pytest.mark.subprocess  # --config ENV
def test_every_kind_of_setting_comes_from_environment_variables(sandbox):
    env = sandbox_env(
        sandbox,
        streams=json.dumps({"user_tags": {"endpoint": "add_tag", "request_headers": {"X-Stream": "tags"}}}),
        exclude_attributes='["internalNote"]',
        request_headers='{"X-Source": "warehouse"}',
        request_timeout="5",
        retry_backoff="0.01",
        max_requests_per_second="50",
        max_retries="2",
        batch_records="true",
    )
    run = run_with_env(
        env,
        [
            schema("people", {**PERSON_PROPS, "internalNote": {"type": "string"}}, ["email"]),
            record("people", {"email": "ann@example.com", "firstName": "Ann", "internalNote": "do not send"}),
            schema("user_tags", TAG_PROPS),
            record("user_tags", {"email": "ann@example.com", "tag": "vip"}),
            state({"bookmarks": {"people": {"n": 1}}}),
        ],
    )
    assert run.returncode == 0, run.stderr
    ann = sandbox.person(email="ann@example.com")
    assert ann["firstName"] == "Ann" and ann["tags"] == ["vip"]
    assert "internalNote" not in ann
    by_path = {r["path"]: r for r in sandbox.requests() if r["method"] == "POST"}
    assert by_path["/v1/people"]["headers"]["x-source"] == "warehouse"
    assert by_path["/v1/tags"]["headers"]["x-stream"] == "tags"
    assert [json.loads(line) for line in run.stdout.splitlines()] == [{"bookmarks": {"people": {"n": 1}}}]
    assert API_KEY not in run.stderr and WRITE_KEY not in run.stderr


@pytest.mark.subprocess  # --config ENV
def test_headers_as_text_from_an_environment_variable(sandbox):
    run = run_with_env(
        sandbox_env(sandbox, request_headers="X-Source:warehouse,X-Team:growth"),
        [schema("people", PERSON_PROPS, ["email"]), record("people", {"email": "ann@example.com"})],
    )
    assert run.returncode == 0, run.stderr
    headers = next(r for r in sandbox.requests() if r["path"] == "/v1/people")["headers"]
    assert (headers["x-source"], headers["x-team"]) == ("warehouse", "growth")


@pytest.mark.subprocess  # --config ENV
def test_a_bad_number_or_json_in_an_environment_variable_is_one_clear_line(sandbox):
    for name, value, says in (
        ("request_timeout", "soon", "request_timeout: 'soon' is not a number"),
        ("streams", "{tags: add_tag}", "is not valid JSON"),
    ):
        run = run_with_env(sandbox_env(sandbox, **{name: value}), [schema("people", PERSON_PROPS, ["email"])])
        assert run.returncode == 1
        assert says in run.stderr.splitlines()[-1], run.stderr
        assert "Traceback" not in run.stderr
    assert sandbox.requests() == []


# The SDK's stream maps and record validation run before our sinks: what Encharge receives is the mapped record.


def test_a_stream_map_renames_and_drops_fields_before_they_reach_encharge(sandbox):
    maps = {
        "people": {"first_name": "firstName", "firstName": "__NULL__", "plan": "__NULL__", "email": "email.lower()"}
    }
    run = run_target(
        sandbox_config(sandbox, stream_maps=maps),
        [
            schema("people", PERSON_PROPS, ["email"]),
            record("people", {"email": "Ann@Example.com", "firstName": "Ann", "plan": "pro"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    [sent] = next(r for r in sandbox.requests() if r["path"] == "/v1/people")["body"]
    assert sent["email"] == "ann@example.com" and sent["first_name"] == "Ann"
    assert "firstName" not in sent and "plan" not in sent


def test_a_stream_map_can_route_a_copy_of_a_stream_to_another_endpoint(sandbox):
    maps = {"signups": {"__source__": "people", "email": "email", "tag": "'signed-up'", "__else__": "__NULL__"}}
    config = sandbox_config(sandbox, stream_maps=maps, streams={"signups": {"endpoint": "add_tag"}})
    run = run_target(
        config,
        [schema("people", PERSON_PROPS, ["email"]), record("people", {"email": "ann@example.com", "firstName": "Ann"})],
    )
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="ann@example.com")["tags"] == ["signed-up"]


def test_validation_checks_the_mapped_record_and_dead_letters_what_fails(sandbox):
    maps = {"people": {"points": "score", "score": "__NULL__"}}
    messages = [
        schema("people", PERSON_PROPS, ["email"]),
        record("people", {"email": "ann@example.com", "score": 3}),
        record("people", {"email": "bob@example.com", "score": "lots"}),
    ]
    run = run_target(
        sandbox_config(sandbox, stream_maps=maps, max_failures=1, dead_letter_path="@work/dead.jsonl"), messages
    )
    assert run.returncode == 0, run.stderr
    assert [p["email"] for p in sandbox.people()] == ["ann@example.com"]
    assert sandbox.person(email="ann@example.com")["points"] == 3
    [dead] = run.file_lines("dead.jsonl")
    assert dead["record"]["email"] == "bob@example.com" and "points" in dead["reason"]

    sandbox.reset()
    run = run_target(sandbox_config(sandbox, stream_maps=maps, validate_records=False), messages)
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="bob@example.com")["points"] == "lots"


# The README's example for a database tap (MeltanoLabs tap-postgres): columns renamed to Encharge's fields, the
# database key put in `userId` (never `id`, Encharge's own), streams in the tap's alphabetical order.
POSTGRES_MAPS = {
    "public-customers": {
        "userId": "str(id)",
        "id": "__NULL__",
        "firstName": "first_name",
        "first_name": "__NULL__",
        "lastName": "last_name",
        "last_name": "__NULL__",
        "__key_properties__": ["userId"],
    }
}
CUSTOMER_PROPS = {
    "id": {"type": "integer"},
    "email": {"type": "string"},
    "first_name": {"type": ["string", "null"]},
    "last_name": {"type": ["string", "null"]},
}


def test_the_readme_database_tap_example_maps_columns_and_key_and_tags_people_who_come_later(sandbox):
    config = sandbox_config(
        sandbox, stream_maps=POSTGRES_MAPS, streams={"public-customer_tags": {"endpoint": "add_tag"}}
    )
    customers = [
        {"id": n, "email": f"c{n}@example.com", "first_name": f"First{n}", "last_name": f"Last{n}"} for n in range(1, 6)
    ]
    run = run_target(
        config,
        [
            schema("public-customer_tags", TAG_PROPS),  # alphabetical: the tags come before their people
            *[record("public-customer_tags", {"email": c["email"], "tag": "customer"}) for c in customers],
            schema("public-customers", CUSTOMER_PROPS, ["id"]),
            *[record("public-customers", c) for c in customers],
        ],
    )
    assert run.returncode == 0, run.stderr
    for c in customers:
        person = sandbox.person(email=c["email"])
        assert (person["userId"], person["firstName"], person["lastName"]) == (
            str(c["id"]),
            c["first_name"],
            c["last_name"],
        )
        assert person["tags"] == ["customer"]
    sent = [r["body"] for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/v1/people"]
    assert len(sent) == 1 and len(sent[0]) == len(customers)  # batched by default
    assert not any("id" in p or "first_name" in p for p in sent[0])


# The plugin definitions: every setting of `target-encharge --about`, as Meltano should offer it.


@pytest.mark.subprocess  # --about, as Meltano runs it
def test_meltano_yml_and_the_hub_definition_declare_every_setting_with_its_kind():
    about = json.loads(
        subprocess.run(
            [*target_command(), "--about", "--format=json"], capture_output=True, text=True, check=True
        ).stdout
    )
    names = list(about["settings"]["properties"])
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    [loader] = project["plugins"]["loaders"]
    hub = yaml.safe_load((ROOT / "hub" / "loaders" / "target-encharge" / "encharge.yml").read_text())
    for definition in (loader, hub):
        assert definition["namespace"] == "target_encharge" and definition["executable"] == "target-encharge"
        assert set(definition["capabilities"]) == set(about["capabilities"])
        settings = {s["name"]: s for s in definition["settings"]}
        assert list(settings) == names
        for key in ("api_key", "write_key", "ledger_url"):  # ledger_url may hold a database password
            assert settings[key]["kind"] == "password" and settings[key]["sensitive"] is True
        assert "value" not in settings["batch_records"]  # unset: on for people and custom objects
        assert [o["value"] for o in settings["sync_mode"]["options"]] == ["upsert", "update", "create", "mirror"]
        assert {name: (c["executable"], c["args"]) for name, c in definition["commands"].items()} == {
            "check": ("target-encharge-check", "--config ENV"),
            "ledger-status": ("target-encharge-ledger", "status"),
            "ledger-forget": ("target-encharge-ledger", "forget"),
            "ledger-runs": ("target-encharge-ledger", "runs"),
            "ledger-explain": ("target-encharge-ledger", "explain"),
            "ledger-replay": ("target-encharge-ledger", "replay"),
        }
        assert settings["streams"]["kind"] == "object" and settings["stream_maps"]["kind"] == "object"
        endpoints = about["settings"]["properties"]["endpoint"]["enum"]
        assert [o["value"] for o in settings["endpoint"]["options"]] == endpoints
        assert settings["batch_size"]["kind"] == "integer" and settings["batch_size"]["value"] == 100
        assert all(s["label"] and s["description"] for s in settings.values())
    assert loader["pip_url"] == "-e ."
    [tap] = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-jsonl"]
    assert tap["pip_url"] == "tap-jsonl==0.3.1" and tap["namespace"] == "tap_jsonl"


def test_readme_meltano_yml_and_hub_file_are_what_make_docs_generates():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# Meltano itself: `meltano install` and `meltano run` on a copy of this project, as from a fresh clone.

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo" / "data"
NOT_PROJECT = shutil.ignore_patterns(
    ".git", ".venv", ".tools", ".meltano", ".env", "__pycache__", "*.egg-info", ".pytest_cache", "out", "build", "dist"
)
ALL_DEMO_STREAMS = [
    "tap-jsonl-people",
    "target-encharge",
    "tap-jsonl-tags",
    "target-encharge",
    "tap-jsonl-events",
    "target-encharge",
    "tap-jsonl-companies",
    "target-encharge",
]


def meltano_executable() -> str:
    found = os.environ.get("MELTANO") or str(ROOT / ".tools" / "meltano" / "bin" / "meltano")
    if not Path(found).exists():
        pytest.fail(f"Meltano not found at {found}: `make install` installs it (or set MELTANO)")
    return found


# Before each `run`, `el` or `invoke`, Meltano works out whether their plugins need installing (~1 s of CPU each
# time; 4.4.1 does so even with `auto_install: false`). The fixtures installed them: the tests say --no-install.
NO_INSTALL_CHECK = {"run", "el", "invoke"}


@dataclasses.dataclass
class MeltanoProject:
    """A copy of this repository's Meltano project, with the plugins `meltano install` put in it."""

    root: Path
    exe: str
    install_seconds: float

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        if args and args[0] in NO_INSTALL_CHECK:
            args = (args[0], "--no-install", *args[1:])
        # PYTHONDONTWRITEBYTECODE is dropped: Meltano installs the plugins with uv, which compiles no bytecode,
        # so without it every plugin start would compile singer-sdk and SQLAlchemy from source again (~2 s of CPU)
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TARGET_ENCHARGE_", "TAP_JSONL", "MELTANO_"))
            and k not in ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
        }
        return subprocess.run(
            [self.exe, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={
                **clean,
                "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
                "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
                **(env or {}),
            },
            check=False,
        )

    def state(self, state_id: str) -> dict:
        """The state Meltano saved for ``state_id``, read from its system database: what `meltano state get`
        prints, without a Meltano start-up (2-3 s of CPU each). A run that completed leaves no partial state, so
        the completed state is the whole of it (the `state` table that Meltano 4.4's meltano.core.state_store.db
        writes)."""
        with contextlib.closing(sqlite3.connect(self.root / ".meltano" / "meltano.db")) as db:
            row = db.execute(
                "SELECT partial_state, completed_state FROM state WHERE state_id = ?", (state_id,)
            ).fetchone()
        assert row is not None, f"Meltano saved no state for {state_id}"
        partial, completed = (json.loads(column) for column in row)
        assert partial == {}, f"{state_id}: a partial state is left: {partial}"
        return completed["singer_state"]

    def tap_command(self, extractor: str) -> list[str]:
        """How Meltano starts ``extractor``: the executable `meltano install` put in its base plugin's venv, with
        the config Meltano gives it (the base's setting values, under the base's and then its own ``config``)."""
        extractors = yaml.safe_load((self.root / "meltano.yml").read_text())["plugins"]["extractors"]
        plugins = {plugin["name"]: plugin for plugin in extractors}
        own = plugins[extractor]
        base = plugins[own.get("inherit_from", extractor)]
        defaults = {setting["name"]: setting["value"] for setting in base.get("settings", []) if "value" in setting}
        config = self.root / f"{extractor}.config.json"
        config.write_text(json.dumps({**defaults, **base.get("config", {}), **own.get("config", {})}))
        venv = self.root / ".meltano" / "extractors" / base["name"] / "venv"
        return [str(venv / "bin" / base["executable"]), "--config", str(config)]

    def tap_state(self, extractor: str) -> dict:
        """The last STATE the tap itself writes on a full run, started as Meltano starts it, in the project
        directory, but without a Meltano start-up (3-4 s of CPU each)."""
        done = subprocess.run(
            self.tap_command(extractor), cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        states = [m["value"] for m in map(json.loads, done.stdout.splitlines()) if m.get("type") == "STATE"]
        return states[-1]

    def tap_states(self, *extractors: str) -> dict[str, dict]:
        """Each extractor's tap_state, at once."""
        with concurrent.futures.ThreadPoolExecutor(len(extractors)) as pool:
            return dict(zip(extractors, pool.map(self.tap_state, extractors), strict=True))


def slow_with_meltano(test: t.Callable) -> t.Callable:
    """Slow: Meltano and its plugins start as processes of their own, seconds each."""
    return pytest.mark.slow(test)


@pytest.fixture(scope="session")
def meltano_install(tmp_path_factory: pytest.TempPathFactory) -> MeltanoProject:
    """`meltano install` on a copy of this project, as from a fresh clone: once per session for every
    pytest-xdist worker (the first worker to need it installs under a file lock, the others wait and reuse it)."""
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the session's own directory, above each worker's
    installed = shared / "meltano-install"
    project = MeltanoProject(installed / "project", meltano_executable(), 0.0)
    with file_lock(shared / "meltano-install.lock"):
        if not (installed / "seconds").exists():
            shutil.rmtree(installed, ignore_errors=True)  # what a failed attempt left
            shutil.copytree(ROOT, project.root, ignore=NOT_PROJECT)
            started = time.monotonic()
            done = project.run("install", timeout=1200)
            assert done.returncode == 0, done.stderr[-3000:]
            (installed / "seconds").write_text(f"{time.monotonic() - started:.1f}")
    project.install_seconds = float((installed / "seconds").read_text())
    return project


@pytest.fixture
def meltano(meltano_install: MeltanoProject, tmp_path: Path) -> MeltanoProject:
    """A copy of this project of the test's own, with the session's installed plugins: its own Meltano system
    database (state, runs), sync ledger and run directory, so tests on any worker, at once, never meet."""
    project = MeltanoProject(tmp_path / "project", meltano_install.exe, meltano_install.install_seconds)
    shutil.copytree(ROOT, project.root, ignore=NOT_PROJECT)
    system = project.root / ".meltano"
    system.mkdir()
    for kind in ("extractors", "loaders"):  # the plugins' venvs, as `meltano install` made them
        (system / kind).symlink_to(meltano_install.root / ".meltano" / kind)
    shutil.copy2(meltano_install.root / ".meltano" / "meltano.db", system / "meltano.db")  # made and migrated
    return project


def jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def keys_env(sandbox: t.Any) -> dict[str, str]:
    """The keys and the sandbox's URLs as Meltano users pass settings: TARGET_ENCHARGE_* variables."""
    return sandbox_env(sandbox, retry_backoff="0.01")


@slow_with_meltano
def test_meltano_run_delivers_every_demo_record_and_saves_exactly_the_taps_state(meltano, sandbox):
    done = meltano.run("run", *ALL_DEMO_STREAMS, "--state-id-suffix=all", env=keys_env(sandbox))
    assert done.returncode == 0, done.stderr[-3000:]

    assert {p["email"] for p in sandbox.people()} == {p["email"] for p in jsonl("people")}
    for tagging in jsonl("tags"):
        tags = tagging["tag"] if isinstance(tagging["tag"], list) else tagging["tag"].split(",")
        assert {t.strip() for t in tags} <= set(sandbox.person(email=tagging["email"])["tags"])
    assert sorted((e["name"], e["user"]["email"]) for e in sandbox.events()) == sorted(
        (e["name"], e["email"]) for e in jsonl("events")
    )
    assert sorted(o["externalId"] for o in sandbox.objects("company")) == sorted(
        c["externalId"] for c in jsonl("companies")
    )
    assert not any(f.startswith("_sdc_") for p in sandbox.people() for f in p)  # exclude_attributes from meltano.yml

    extractors = [f"tap-jsonl-{stream}" for stream in ("people", "tags", "events", "companies")]
    for extractor, tap_state in meltano.tap_states(*extractors).items():
        assert meltano.state(f"dev:{extractor}-to-target-encharge:all") == tap_state
    assert API_KEY not in done.stdout + done.stderr and WRITE_KEY not in done.stdout + done.stderr


@slow_with_meltano
def test_with_response_output_state_meltano_saves_the_taps_state_plus_one_bounded_summary(meltano, sandbox):
    env = {**keys_env(sandbox), "TARGET_ENCHARGE_RESPONSE_OUTPUT": "state"}
    state_id = "dev:tap-jsonl-people-to-target-encharge:summary"
    tap_state = meltano.tap_state("tap-jsonl-people")
    for run in (1, 2):  # the second run starts from the saved state, summary key and all
        done = meltano.run("run", "tap-jsonl-people", "target-encharge", "--state-id-suffix=summary", env=env)
        assert done.returncode == 0, f"run {run}: {done.stderr[-3000:]}"
        saved = meltano.state(state_id)
        assert {k: v for k, v in saved.items() if k != SUMMARY_KEY} == tap_state
        assert set(saved) == {*tap_state, SUMMARY_KEY}
        summary = saved[SUMMARY_KEY]
        assert summary["streams"]["people"]["failed"] == 0
        people = summary["streams"]["people"]
        # the first run delivers every person; the second, the same people again, finds them in the sync ledger
        assert people["succeeded" if run == 1 else "unchanged"] == people["records"] > 0, f"run {run}: {people}"
        assert len(json.dumps(summary)) < 2000
    assert {p["email"] for p in sandbox.people()} == {p["email"] for p in jsonl("people")}


@slow_with_meltano
def test_a_stream_map_set_through_meltano_changes_what_encharge_receives(meltano, sandbox):
    maps = {"people": {"first_name": "firstName", "firstName": "__NULL__", "company": "__NULL__"}}
    env = {**keys_env(sandbox), "TARGET_ENCHARGE_STREAM_MAPS": json.dumps(maps)}
    readme_map = {"people": {"email": "email.lower()", "company": "__NULL__"}}  # the README's, on the demo data
    done = meltano.run(
        "run",
        "tap-jsonl-people",
        "target-encharge",
        "--state-id-suffix=readme-map",
        env={**keys_env(sandbox), "TARGET_ENCHARGE_STREAM_MAPS": json.dumps(readme_map)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p["email"] for p in sandbox.people()} == {p["email"].lower() for p in jsonl("people")}
    assert not any("company" in p for p in sandbox.people())
    sandbox.reset()
    done = meltano.run("run", "tap-jsonl-people", "target-encharge", "--state-id-suffix=maps", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    sent = [p for r in sandbox.requests() if r["path"] == "/v1/people" for p in r["body"]]
    assert sorted(p["first_name"] for p in sent) == sorted(p["firstName"] for p in jsonl("people"))
    assert not any("firstName" in p or "company" in p for p in sent)


@slow_with_meltano
def test_meltano_install_gives_each_plugin_its_own_venv(meltano_install):
    """From the package registry alone (no Meltano Hub); the time it took is printed, not asserted."""
    print(f"meltano install: {meltano_install.install_seconds:.1f} s")
    for plugin in ("extractors/tap-jsonl", "loaders/target-encharge"):
        assert (meltano_install.root / ".meltano" / plugin / "venv" / "bin").is_dir()


# The sync ledger under Meltano: a file in the project directory by default, looked into with plugin commands.


def writes(sandbox: t.Any) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in sandbox.requests() if r["method"] != "GET"]


@slow_with_meltano
def test_an_hourly_rerun_under_meltano_sends_no_write_and_ledger_status_shows_the_stream(meltano, sandbox):
    env = keys_env(sandbox)
    first = meltano.run("run", "tap-jsonl-people", "target-encharge", "--state-id-suffix=hourly", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    people = {p["email"] for p in jsonl("people")}
    assert {p["email"] for p in sandbox.people()} == people
    assert (meltano.root / ".target-encharge-ledger.db").is_file()  # the ledger lives in the Meltano project
    sent = writes(sandbox)
    assert sent

    # `meltano el` (not the deprecated `elt`), with a full refresh: the tap sends every person again
    second = meltano.run("el", "tap-jsonl-people", "target-encharge", "--state-id=hourly-el", "--full-refresh", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert writes(sandbox) == sent  # nothing changed: no write

    account = f"@127.0.0.1:{sandbox.api_url.split(':')[2].split('/')[0]}"
    status = meltano.run("invoke", "target-encharge:ledger-status", env=env)
    assert status.returncode == 0, status.stderr[-3000:]
    [row] = [line.split() for line in status.stdout.splitlines() if account in line]
    assert row[1:4] == ["create_or_update_person", "people", str(len(people))], status.stdout

    forget = meltano.run("invoke", "target-encharge:ledger-forget", "--stream", "people", env=env)
    assert forget.returncode == 0, forget.stderr[-3000:]
    # the status again, from the plugin's venv in the project directory as Meltano starts it (a Meltano start-up
    # is 3-4 s of CPU; the `meltano invoke` above showed the command works under Meltano)
    ledger = meltano.root / ".meltano" / "loaders" / "target-encharge" / "venv" / "bin" / "target-encharge-ledger"
    status = subprocess.run(
        [ledger, "status"], cwd=meltano.root, capture_output=True, text=True, timeout=120, check=False
    )
    assert status.returncode == 0, status.stderr[-3000:]
    assert str(meltano.root / ".target-encharge-ledger.db") in status.stdout  # the ledger the runs wrote
    assert account not in status.stdout, status.stdout
    third = meltano.run("el", "tap-jsonl-people", "target-encharge", "--state-id=hourly-el", "--full-refresh", env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(writes(sandbox)) > len(sent)  # forgotten: sent again
    assert API_KEY not in status.stdout + status.stderr + third.stdout + third.stderr


@slow_with_meltano
def test_ledger_replay_under_meltano_prints_a_dead_letter_file_as_singer_messages(meltano, tmp_path):
    dead = tmp_path / "dead.jsonl"
    dead.write_text(json.dumps({"stream": "people", "record": {"email": "ann@example.com"}, "reason": "400"}) + "\n")
    done = meltano.run("invoke", "target-encharge:ledger-replay", str(dead))
    assert done.returncode == 0, done.stderr[-3000:]
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(m["type"], m["stream"]) for m in messages] == [("SCHEMA", "people"), ("RECORD", "people")]
    assert messages[1]["record"] == {"email": "ann@example.com"}


@slow_with_meltano
def test_meltano_invoke_check_passes_for_this_project_and_names_a_bad_key(meltano, sandbox):
    done = meltano.run("invoke", "target-encharge:check", env=keys_env(sandbox))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    bad = meltano.run(
        "invoke",
        "target-encharge:check",
        env={**keys_env(sandbox), "TARGET_ENCHARGE_API_KEY": "not-the-key-0123456789abcdef"},
    )
    assert bad.returncode == 1
    assert "api_key" in bad.stdout + bad.stderr and "not-the-key" not in bad.stdout + bad.stderr
    assert writes(sandbox) == []


MELTANO_TERMINATE_RACE = "ProcessLookupError"  # Meltano 4.4.1: see the test below


@slow_with_meltano
def test_meltano_config_test_checks_the_connection_and_writes_nothing(meltano, sandbox):
    """`meltano config test target-encharge` (Meltano 4.4.1, meltano/core/plugin_test_service.py) sends SCHEMA, one
    RECORD {"id": 1, "name": "Meltano Test Record"} on `meltano_test_stream`, a STATE and, as the loader declares
    activate-version, an ACTIVATE_VERSION; it fails when the loader exits non-zero or prints a line with "error" or
    "exception" in it. The target checks the connection (`GET /accounts/info`), writes nothing and exits 0.

    Meltano then prints "Plugin configuration is valid", except when it loses a race of its own: after the loader
    exited it calls `process.terminate()` in a `finally`, which raises ProcessLookupError once asyncio has let go
    of the process (whenever Meltano waited for the exit before it was seen). The debug log says what the loader
    did either way ("Process return code: 0"), and that is what is asserted."""
    done = meltano.run("--log-level=debug", "config", "test", "--no-install", "target-encharge", env=keys_env(sandbox))
    printed = done.stdout + done.stderr
    assert "Process return code: 0" in printed, printed[-3000:]
    assert "Stream 'meltano_test_stream': the connection is checked; its records are not sent" in printed
    if done.returncode != 0:  # Meltano's race, never the loader's doing
        assert MELTANO_TERMINATE_RACE in printed and "Plugin configuration is invalid" not in printed, printed[-3000:]
    else:
        assert "Plugin configuration is valid" in printed
    assert [(r["method"], r["path"]) for r in sandbox.requests()] == [("GET", "/v1/accounts/info")]  # the check only
    assert sandbox.people() == []
    ledger = meltano.root / ".target-encharge-ledger.db"
    if ledger.exists():  # created when opened, with nothing in it: no delivery, no failure, no run
        with contextlib.closing(sqlite3.connect(ledger)) as db:
            for table in ("deliveries", "failures", "runs"):
                assert db.execute(f"SELECT count(*) FROM encharge_ledger_{table}").fetchone() == (0,)

    refused_key = "x" * 20
    refused = meltano.run(
        "--log-level=debug",
        "config",
        "test",
        "--no-install",
        "target-encharge",
        env={**keys_env(sandbox), "TARGET_ENCHARGE_API_KEY": refused_key},
    )
    printed = refused.stdout + refused.stderr
    assert refused.returncode == 1
    assert "Process return code: 1" in printed
    assert "target-encharge: error: " in printed and "api_key" in printed  # the reason, in one line
    assert refused_key not in printed
