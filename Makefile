# The two commands: `make run` (the service with the embedded defaults) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint lock bench clean-instance screenshots

# requirements.lock pins every package (runtime and dev) for reproducible installs; refresh it with `make lock`.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q -e . --no-deps
	@touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/run_dev.py

test: $(STAMP)
	@bash scripts/ensure_test_tools.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_imports.py

# Re-resolve requirements.lock from pyproject.toml (after changing a dependency, or to take upgrades).
# pip-tools runs in a venv of its own so that it never enters the locked environment.
lock:
	rm -rf .cache/lock-venv
	$(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q pip-tools
	.cache/lock-venv/bin/pip-compile --quiet --upgrade --strip-extras --extra dev --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml

# make bench BENCH=ack_profile|auth|audit_scale|dsync_bench|load|scale BENCH_ARGS="--duration 10"
BENCH ?= auth
bench: $(STAMP)
	$(PY) -m bench.$(BENCH) $(BENCH_ARGS)

# Every SSO wizard page at 1280 px and 390 px, into .cache/screenshots/ (ignored) for review.
screenshots: $(STAMP)
	@bash scripts/ensure_test_tools.sh
	$(PY) scripts/wizard_screenshots.py

clean-instance:
	rm -rf instance
