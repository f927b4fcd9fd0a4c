# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test venv deps-run deps-test system-deps-test system-deps-run lint clean

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

test: $(VENV)/.dev-installed system-deps-test
	scripts/run_tests.sh

clean:
	rm -rf var/broker var/broker-processed var/test-media
