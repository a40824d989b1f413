# The README's two commands are `make demo` and `make test`; both build .venv from the lock first.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
# This machine's pip config lists local wheel folders that hold only some packages; pip warns for every other one.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo up down test test-unit test-dags test-integration test-e2e lint typecheck audit clean dvc-repro bench fuzz

$(STAMP): requirements/lock.txt setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked environment into $(VENV) (first run: about two minutes) ..."
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/lock.txt $(QUIET_PIP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . $(QUIET_PIP)
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/falaj demo

test: venv lint typecheck audit
	$(BIN)/python -m pytest tests -q --ignore=tests/fuzz

test-unit: venv
	$(BIN)/python -m pytest tests/unit -q

test-dags: venv
	$(BIN)/python -m pytest tests/dags -q

test-integration: venv
	$(BIN)/python -m pytest tests/integration -q

test-e2e: venv
	$(BIN)/python -m pytest tests/e2e -q

# The whole stack in the background (Airflow's UI, scheduler, DAG processor, triggerer; the scoring service).
up: venv
	$(BIN)/falaj up

down: venv
	$(BIN)/falaj down

lint: venv
	$(BIN)/ruff check .
	$(BIN)/hadolint docker/Dockerfile.*

typecheck: venv
	$(BIN)/mypy

# The locked requirements against the known-vulnerable versions in policies/vulnerable-versions.yaml.
audit: venv
	$(BIN)/python -m pipelines.supply_chain requirements/lock.txt requirements/training.txt

clean:
	rm -rf .falaj

# Retrain every family with DVC on the training set the training DAG built last.
dvc-repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/dvc push

# Benchmarks: each figure next to a floor measured in the same run; reports land in bench/results/.
bench: venv
	$(BIN)/python -m bench.feature_store --size demo
	$(BIN)/python -m bench.model_latency
	$(BIN)/python -m bench.serving --seconds 5
	$(BIN)/python -m bench.drift

# Long suites of their own: the audit chain's full tamper fuzz (1,000 mutations of 10,000 events).
fuzz: venv
	$(BIN)/python -m pytest tests/fuzz -q
