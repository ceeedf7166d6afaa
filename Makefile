# cellnb: `make test` (everything CI runs), `make study` (the quick study on the embedded synthetic set).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cellnb-installed

.PHONY: install test test-slow export check-export nbtest pytest readme study clean-nbs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

export: install
	$(BIN)/nbdev-export

# nbdev-export must leave cellnb/ unchanged: the notebooks are the source.
check-export: install
	@rm -rf .export-check && cp -r cellnb .export-check
	$(BIN)/nbdev-export
	@diff -r -x __pycache__ .export-check cellnb > /dev/null || { diff -r -x __pycache__ .export-check cellnb | head -40; rm -rf .export-check; echo "nbdev-export changed cellnb/: export the notebooks and commit"; exit 1; }
	@rm -rf .export-check; echo "nbdev-export leaves cellnb/ unchanged"

readme: install
	$(BIN)/python tools/nb2readme.py

nbtest: install
	$(BIN)/nbdev-test --n-workers 2 --timing

pytest: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test: install check-export
	$(BIN)/python tools/nb2readme.py --check
	$(MAKE) --no-print-directory nbtest
	$(MAKE) --no-print-directory pytest

# The slow cells too (a full re-run of the documented outputs).
test-slow: install
	$(BIN)/nbdev-test --n-workers 2 --flags slow --timing

clean-nbs: install
	$(BIN)/nbdev-clean

study: install
	$(BIN)/cellnb-study --quick --out study/
