# The two commands: `make run` (the service with the embedded defaults) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean-instance

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/run_dev.py

test: $(STAMP)
	@bash scripts/ensure_test_tools.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# make bench BENCH=auth|dsync_bench|load BENCH_ARGS="--duration 10"
BENCH ?= auth
bench: $(STAMP)
	$(PY) -m bench.$(BENCH) $(BENCH_ARGS)

clean-instance:
	rm -rf instance
