# Two commands on a fresh Debian 12 or 13: `make run` and `make test`. Both install what is missing first.
VENV ?= $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
export VENV

.PHONY: install install-test run test test-debian13 test-unit lint demo bench bench-inference bench-events stress

install:
	scripts/install.sh

install-test:
	WITH_TESTS=1 scripts/install.sh

run: install
	scripts/run-orthanc.sh

test: install-test lint
	$(PYTHON) -m pytest -ra

# The same `make test` on Debian 13 "trixie" (Orthanc 1.12, Python 3.13), in a chroot of a debootstrap root cached
# in /var/tmp (needs root or sudo; the first run downloads Debian's packages and torch, later runs reuse them).
test-debian13:
	scripts/test-debian13.sh

# The structure (import-linter contracts in pyproject.toml), then ruff and mypy: all must pass.
lint: install-test
	PYTHONPATH=plugin $(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check plugin tests bench scripts models
	$(VENV)/bin/mypy

test-unit: install-test
	$(PYTHON) -m pytest -ra tests/unit

bench: install-test
	$(PYTHON) bench/workitems.py

bench-inference: install-test
	$(PYTHON) bench/inference.py

bench-events: install-test
	$(PYTHON) bench/events.py

demo: install
	PYTHONPATH=plugin $(PYTHON) scripts/demo.py

# Everything at once against one real Orthanc (bench/stress.py): 50 HTTP clients on both doors, 200 studies by
# C-STORE, 100 WebSocket subscribers; fails unless it holds (no 5xx, one winner per claim, every State Report in
# order, p95 targets). About two minutes. STRESS_ARGS=--latency-report-only prints the p95 figures without failing on
# them (CI: see .ci/run).
stress: install-test
	$(PYTHON) bench/stress.py $(STRESS_ARGS)
