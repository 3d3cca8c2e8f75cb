# The whole set-up: `make demo` to see a pipeline run against the local sandbox, `make test` to run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
TAP_JSONL := $(TOOLS)/tap-jsonl/bin/tap-jsonl
TARGET_CSV := $(TOOLS)/target-csv/bin/target-csv
MELTANO := $(TOOLS)/meltano/bin/meltano
TAP_POSTGRES := $(TOOLS)/tap-postgres/bin/tap-postgres
TAP_MYSQL := $(TOOLS)/tap-mysql/bin/tap-mysql
# singer-io tap-mysql 1.17.7 needs Python 3.11 or older (it uses ssl.match_hostname, gone in 3.12): the first of
# these that has it.
TAP_MYSQL_PYTHON ?= $(shell for p in $(PYTHON) python3.11 python3.10; do \
	$$p -c 'import ssl; ssl.match_hostname' 2>/dev/null && { echo $$p; break; }; done)
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: install demo test lint bench sandbox docs clean

# The venv is made once; a changed pyproject.toml only reinstalls the project into it.
$(BIN)/target-encharge: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) -e '.[test,postgres]'
	touch $@

# A tool's venv, made whole or not at all (a half-made one is removed, so the next `make` starts it again).
tool_venv = $(or $(3),$(PYTHON)) -m venv $(TOOLS)/$(1) && $(TOOLS)/$(1)/bin/pip install $(PIP_QUIET) $(2) \
	|| { rm -rf $(TOOLS)/$(1); exit 1; }

# Singer taps and targets live in venvs of their own, as Meltano keeps them (their singer-sdk pins differ from ours).
$(TAP_JSONL):
	$(call tool_venv,tap-jsonl,tap-jsonl==0.3.1)

# Real database taps, one of each family: tests/taps.py runs them against the test PostgreSQL and MariaDB servers.
$(TAP_POSTGRES):
	$(call tool_venv,tap-postgres,meltanolabs-tap-postgres==0.10.0)

$(TAP_MYSQL):
	$(call tool_venv,tap-mysql,tap-mysql==1.17.7,$(TAP_MYSQL_PYTHON))

# A downstream target: the tests pipe the response stream into it.
$(TARGET_CSV):
	$(call tool_venv,target-csv,meltanolabs-target-csv==0.5.0)

# Meltano, pinned, in a venv of its own: tests/test_meltano.py runs `meltano install` and `meltano run` with it.
$(MELTANO):
	$(call tool_venv,meltano,meltano==4.4.1)

# What is missing is built in parallel; what is there is left alone.
install:
	@$(MAKE) --no-print-directory -j4 $(BIN)/target-encharge $(TAP_JSONL) $(TARGET_CSV) $(MELTANO) $(TAP_POSTGRES) $(TAP_MYSQL)

# The demo needs only the project and tap-jsonl (not Meltano nor target-csv).
demo: $(BIN)/target-encharge $(TAP_JSONL)
	PATH="$(CURDIR)/$(BIN):$$PATH" TAP_JSONL="$(CURDIR)/$(TAP_JSONL)" $(BIN)/python demo/run_demo.py

# Every test, on TEST_WORKERS pytest-xdist workers (the longest tests first; see tests/conftest.py). Fails when
# a test fails and when none ran (pytest's exit 5). The quick tier: make test PYTEST_ARGS='-m "not slow"'.
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (it goes to __pycache__ directories, which git
# ignores): otherwise each worker compiles and assertion-rewrites every test module again (~3 s of CPU) and each
# target-encharge process the tests start compiles the package again.
TEST_WORKERS ?= 3
PYTEST_ARGS ?=
test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" TAP_JSONL="$(CURDIR)/$(TAP_JSONL)" TARGET_CSV="$(CURDIR)/$(TARGET_CSV)" \
		MELTANO="$(CURDIR)/$(MELTANO)" TAP_POSTGRES="$(CURDIR)/$(TAP_POSTGRES)" TAP_MYSQL="$(CURDIR)/$(TAP_MYSQL)" \
		PYTHONDONTWRITEBYTECODE= \
		$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Lint rules and formatting (ruff), types (mypy) and the import contracts (import-linter), all configured in
# pyproject.toml.
$(BIN)/lint-imports: pyproject.toml $(BIN)/target-encharge
	$(BIN)/pip install $(PIP_QUIET) -e '.[test,postgres,lint]'
	touch $@

lint: $(BIN)/lint-imports
	$(BIN)/ruff check target_encharge tests benchmarks
	$(BIN)/ruff format --check target_encharge tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# P1..P5 and start-up (README "Performance"); each run in a scratch directory with its own ledger. Exits 1 when a
# goal is missed. A smoke run: make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
# Bytecode written even where PYTHONDONTWRITEBYTECODE is set: an installed target has it (pip compiles on install).
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONDONTWRITEBYTECODE= $(BIN)/python benchmarks/run.py $(BENCH_ARGS)

sandbox: install
	$(BIN)/target-encharge-sandbox

# The settings reference in README.md, meltano.yml's loader settings and the Meltano Hub file, from --about.
docs: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/docs.py

clean:
	rm -rf $(VENV) $(TOOLS) .meltano *.egg-info
