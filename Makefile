# The two set-up commands of the README: `make run` and `make test`; `make check` and `make lint` for the inner loop;
# `make demo` (with `make run` going in another terminal) walks the example job's whole story through the API.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run demo test check lint format system-deps-test system-deps-run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

system-deps-run:
	@scripts/ensure_debian_packages.sh bubblewrap

system-deps-test:
	@scripts/ensure_debian_packages.sh bubblewrap chromium docker-compose

run: $(VENV)/.runtime-installed system-deps-run
	scripts/run_local.sh

# DEMO_ARGS passes options through, e.g. `make demo DEMO_ARGS="--out /tmp/story"`; SPEEDPROOF_PORT as for `make run`.
demo: $(VENV)/.runtime-installed
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

test: $(VENV)/.dev-installed system-deps-test
	scripts/run_tests.sh

# Lint, then the unit and API tests without the real-process suites (e2e, browser, chaos, fuzz), in parallel,
# keeping the test databases between runs. `make test` stays the whole suite, and is what CI runs.
# Tests that start sandboxes run after, one at a time (they share uid 65534's process limit).
check: lint system-deps-run
	scripts/run_tests.sh -m "not e2e and not browser and not chaos and not fuzz and not sandbox" --reuse-db -n 2 -q
	scripts/run_tests.sh -m "sandbox and not e2e and not browser and not chaos and not fuzz" --reuse-db -q

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/broker var/broker-processed var/test-media
