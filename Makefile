# Two commands on a fresh Debian bookworm machine: `make run` and `make test`. Both install what is missing first.
VENV ?= $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
export VENV

.PHONY: install install-test run test test-unit lint demo bench bench-inference bench-events

install:
	scripts/install.sh

install-test:
	WITH_TESTS=1 scripts/install.sh

run: install
	scripts/run-orthanc.sh

test: install-test lint
	$(PYTHON) -m pytest -ra

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
