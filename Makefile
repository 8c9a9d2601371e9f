# liver-agent: `make run` starts the agent on its embedded defaults, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run demo test install install-test system-deps lint typecheck bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Start the agent: SQLite and spool under ./var, DICOM on 127.0.0.1:11112, AE title LIVERAGENT,
## worklist on http://127.0.0.1:8080/worklist.
run: install
	mkdir -p var
	@echo "liver-agent: DICOM on 127.0.0.1:11112 (AE title LIVERAGENT); worklist on http://127.0.0.1:8080/worklist"
	@$(VENV)/bin/liver-agent web list-users | grep -q . || \
	  echo "liver-agent: no worklist user yet; add the first one with: $(VENV)/bin/liver-agent web add-user NAME"
	$(VENV)/bin/liver-agent serve

## A local PACS (Orthanc) with one synthetic GIST patient, the agent against it; prints the worklist and a
## login; Ctrl-C stops both. DEMO_ARGS="--screenshots docs/img" writes the README's screenshots instead.
DEMO_ARGS ?=
demo: install
	bash scripts/demo.sh $(DEMO_ARGS)

## System packages the tests drive (DCMTK, Orthanc, dicom3tools, poppler, iproute2).
system-deps:
	bash scripts/install-system-deps.sh

## Everything the tests need, then the whole suite (integration tests included).
test: system-deps install-test
	bash scripts/test.sh $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check agent tests bench
	$(VENV)/bin/ruff format --check agent/response agent/sr

typecheck: install-test
	$(VENV)/bin/mypy agent

bench: install-test
	$(PY) bench/assess.py
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
