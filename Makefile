# The whole set-up: `make demo` to see a pipeline run against the local sandbox, `make test` to run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
TAP_JSONL := $(TOOLS)/tap-jsonl/bin/tap-jsonl
TARGET_CSV := $(TOOLS)/target-csv/bin/target-csv
MELTANO := $(TOOLS)/meltano/bin/meltano
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: install demo test lint bench sandbox docs clean

$(BIN)/target-encharge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) -e '.[test]'
	touch $@

# Singer taps and targets live in venvs of their own, as Meltano keeps them (their singer-sdk pins differ from ours).
$(TAP_JSONL):
	$(PYTHON) -m venv $(TOOLS)/tap-jsonl
	$(TOOLS)/tap-jsonl/bin/pip install $(PIP_QUIET) tap-jsonl==0.3.1

# A downstream target: the tests pipe the response stream into it.
$(TARGET_CSV):
	$(PYTHON) -m venv $(TOOLS)/target-csv
	$(TOOLS)/target-csv/bin/pip install $(PIP_QUIET) meltanolabs-target-csv==0.5.0

# Meltano, pinned, in a venv of its own: tests/test_meltano.py runs `meltano install` and `meltano run` with it.
$(MELTANO):
	$(PYTHON) -m venv $(TOOLS)/meltano
	$(TOOLS)/meltano/bin/pip install $(PIP_QUIET) meltano==4.4.1

install: $(BIN)/target-encharge $(TAP_JSONL) $(TARGET_CSV) $(MELTANO)

# The demo needs only the project and tap-jsonl (not Meltano nor target-csv).
demo: $(BIN)/target-encharge $(TAP_JSONL)
	PATH="$(CURDIR)/$(BIN):$$PATH" TAP_JSONL="$(CURDIR)/$(TAP_JSONL)" $(BIN)/python demo/run_demo.py

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" TAP_JSONL="$(CURDIR)/$(TAP_JSONL)" TARGET_CSV="$(CURDIR)/$(TARGET_CSV)" \
		MELTANO="$(CURDIR)/$(MELTANO)" $(BIN)/python -m pytest

# Types (mypy), lint rules (ruff) and the import contracts (import-linter), all configured in pyproject.toml.
$(BIN)/lint-imports: pyproject.toml $(BIN)/target-encharge
	$(BIN)/pip install $(PIP_QUIET) -e '.[test,lint]'
	touch $@

lint: $(BIN)/lint-imports
	$(BIN)/ruff check target_encharge
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run.py

sandbox: install
	$(BIN)/target-encharge-sandbox

# The settings reference in README.md, meltano.yml's loader settings and the Meltano Hub file, from --about.
docs: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/docs.py

clean:
	rm -rf $(VENV) $(TOOLS) .meltano *.egg-info
