# Two entry points: `make demo` and `make test`. Each creates .venv if missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.stamp-run
STAMP_TEST := $(VENV)/.stamp-test

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/rlds-loader demo

test: $(STAMP_TEST)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest -q

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests benchmarks examples

bench: $(STAMP_TEST)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
