# cellnb: `make test` (everything CI runs), `make study` (the quick study on the embedded synthetic set).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
MIN_FREE_GB ?= 7
BIN := $(VENV)/bin
# The install stamp is named by pyproject.toml's content, not its time: nbdev-export rewrites the file unchanged,
# and a time stamp would reinstall on every `make test`.
PYPROJECT_SHA := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml', 'rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.cellnb-installed-$(PYPROJECT_SHA)

.PHONY: install test test-slow export check-export nbtest pytest readme study clean-nbs gpu-wheels figures lab

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# a first install below MIN_FREE_GB free cannot finish (torch from PyPI is a CUDA build): say so, not pip's OSError
	@$(BIN)/python -c "import importlib.util as u, shutil, sys; free = shutil.disk_usage('.').free / 1e9; \
	  sys.exit(0 if u.find_spec('torch') or free >= $(MIN_FREE_GB) else f'make install: only {free:.1f} GB free on this disk; installing cellnb needs about 7-9 GB (torch from PyPI is a CUDA build): free some disk and run make again')"
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[dev]"
	rm -f $(VENV)/.cellnb-installed*
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

# Two test processes, one per core of a CI machine; a test file stays in one process (its module fixtures are built
# once); the 25 slowest tests are listed at the end. The tests that start Ray clusters run afterwards on their own: Ray
# gives its processes fixed seconds to start.
pytest: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25 --ignore=tests/test_ray_cluster.py tests
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_ray_cluster.py

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

# The study's tidy results tables from the experiments' JSONs, then every figure of BENCHMARKS.md redrawn from them
# (nbs/20_crchisto_study.ipynb with CELLNB_FIGURES=1 writes benchmarks/figures/*.png).
figures: install
	$(BIN)/python benchmarks/results_tables.py
	CELLNB_FIGURES=1 $(BIN)/nbdev-test nbs/20_crchisto_study.ipynb

# Open the notebooks in JupyterLab (a dev extra).
lab: install
	$(BIN)/jupyter lab nbs/

# The wheels a lent GPU machine lacks (tools/gpu_check.sh runs the CUDA checks there in one call).
gpu-wheels: install
	bash tools/gpu_check.sh prepare
