# `make demo` and `make test` set up whatever is missing on a Debian/Ubuntu
# machine (a venv with the pinned packages; ClamAV from apt), then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_STAMP := .make/apt.installed
# The CDK CLI (package.json pins it): the tests and `make synth` synthesize through it.
NODE_STAMP := node_modules/.installed
PACKAGES := $(shell grep -hv '^\s*\#' docker/clamav-packages.txt docker/test-packages.txt)
export AWS_EC2_METADATA_DISABLED := true

.PHONY: setup demo test test-fast lint format synth bench bench-quick faults diagrams clean

setup: $(STAMP) $(APT_STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Installs with apt only what is missing; needs root (or sudo) the first time.
$(APT_STAMP): docker/clamav-packages.txt docker/test-packages.txt
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p $(dir $@) && touch $@

# Node.js and npm from apt only when there is no npm at all (the CLI needs Node 18+).
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "Installing Debian packages: nodejs npm"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(PY) -m scanctl demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# One worker per CPU; a test file stays on one worker (its fixtures are per file).
	$(PY) -m pytest -n auto --dist loadfile

test-fast: setup
	$(PY) -m pytest -x -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Exactly what `npx cdk synth` does for a user (cdk.json's context, the CLI's
# default region, cdk-nag judged by the CLI), with the venv's Python.
synth: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" CDK_DISABLE_CLI_TELEMETRY=true npx cdk synth --quiet --no-notices

# The README's pictures, drawn by Graphviz (installed with apt when missing): the
# architecture from docs/diagrams/architecture.dot, the state machine from its ASL.
diagrams: setup
	@command -v dot >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }
	$(PY) -m statemachines.graph > docs/diagrams/state-machine.dot
	dot -Tsvg docs/diagrams/architecture.dot -o docs/architecture.svg
	dot -Tsvg docs/diagrams/state-machine.dot -o docs/state-machine.svg

clean:
	rm -rf $(VENV) .make cdk.out .pytest_cache

# Speed and memory are measured here, never asserted in tests.
bench: setup
	$(PY) -m bench.run

bench-quick: setup
	$(PY) -m bench.run --quick --results bench/work/quick-results.json --report bench/work/QUICK.md

# 1,000 objects through the local pipeline with faults in every step, then the
# reconciliation table and one redrive (bench/faults.py).
faults: setup
	$(PY) -m bench.faults --objects 1000 --json bench/work/faults.json
