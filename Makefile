# The README's two commands are `make demo` and `make test`; both build .venv from the lock first.
# `make test` is `make check` (every static check) and then the test suites. .ci/run, the pre-commit hooks
# (.pre-commit-config.yaml) and the GitHub workflows (.github/workflows/) call these targets and hold no
# check of their own (docs/ci.md).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
# This machine's pip config lists local wheel folders that hold only some packages; pip warns for every other one.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCKS := requirements/lock.txt requirements/training.txt
SBOM := dist/sbom.cdx.json

# Every static check, fastest first, so that a planted problem fails within seconds. A new check is a target
# below and one word here.
CHECKS := format-check lint audit secrets typecheck sbom

.PHONY: venv demo up down test test-unit test-dags test-integration test-e2e check $(CHECKS) pip-audit browser contracts model-ci clean dvc-repro release verify-release bench reliability fuzz

# --no-deps: the lock is the whole environment, nothing more (requirements/requirements.in says what it leaves out).
$(STAMP): requirements/lock.txt setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked environment into $(VENV) (first run: about two minutes) ..."
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt $(QUIET_PIP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . $(QUIET_PIP)
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/falaj demo

test: venv check contracts model-ci browser
	$(BIN)/python -m pytest tests -q --durations=15 --ignore=tests/fuzz --ignore=tests/reliability

check: $(CHECKS)

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

format-check: venv
	$(BIN)/ruff format --check .

# ruff's rules include bandit's security rules (S; every ignore is justified in ruff.toml); hadolint the images.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/hadolint docker/Dockerfile.*

# pipelines/, models/ and the Airflow plugins (setup.cfg's [mypy]).
typecheck: venv
	$(BIN)/mypy

# The locked requirements against the known-vulnerable versions in policies/vulnerable-versions.yaml.
audit: venv
	$(BIN)/python -m pipelines.supply_chain $(LOCKS)

# Every file of the tree, tracked or not, against the audited false positives in .secrets.baseline.
secrets: venv
	$(BIN)/python -m pipelines.secret_scan

# A CycloneDX SBOM of the installed locked environment, which must list every pin of the locks.
sbom: venv
	@mkdir -p $(dir $(SBOM))
	$(BIN)/cyclonedx-py environment --output-reproducible --output-file $(SBOM) $(VENV)
	$(BIN)/python -m pipelines.sbom $(SBOM) $(LOCKS)

# The locks against the OSV vulnerability database (it takes local versions such as torch's +cpu). Hosted CI
# only: the development machines reach no vulnerability database, so `make audit` is their half. The
# deny-list's accepted advisories are the only ones ignored.
pip-audit: venv
	$(BIN)/pip-audit --vulnerability-service osv --strict --no-deps --disable-pip --progress-spinner off \
	  $(addprefix --ignore-vuln ,$(shell $(BIN)/python -m pipelines.supply_chain --accepted)) \
	  $(addprefix --requirement ,$(LOCKS))

# The browser test drives Debian's chromium.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium"; \
	  apt="$$([ "$$(id -u)" = 0 ] || echo sudo) apt-get"; \
	  $$apt install -y -q chromium >/dev/null || { $$apt update -q && $$apt install -y -q chromium >/dev/null; }; }

clean:
	rm -rf .falaj

# Retrain every family with DVC on the training set the training DAG built last.
dvc-repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/dvc push

# Data contracts: `feast plan` against the configured registry, every deployed model's feature service still
# there with the same schema, every expectation suite against its good and bad fixtures.
contracts: venv
	$(BIN)/python -m pipelines.data_contracts

# Model CI: the working tree's models against the base revision's (origin/main, else HEAD~1), trained on the
# same sample through the DVC stages and judged by the gate's policy; the report lands in dist/model-ci/.
model-ci: venv contracts
	$(BIN)/python -m pipelines.model_ci

# A signed release of the tagged HEAD (docs/operations.md): platform-admin, with the second-factor code in OTP.
release: venv
	$(BIN)/falaj release build --out dist/release --otp "$(OTP)"

verify-release: venv
	$(BIN)/falaj verify-release dist/release

# Benchmarks: each figure next to a floor measured in the same run; one report in bench/results/report.{md,json}.
bench: venv
	$(BIN)/python -m bench

# Faults, load and fuzzing against the real services: schema fuzz, 2x load, Redis outage, SIGTERM, retried tasks.
reliability: venv
	$(BIN)/python -m pytest tests/reliability -q -s

# Long suites of their own: the audit chain's full tamper fuzz (1,000 mutations of 10,000 events).
fuzz: venv
	$(BIN)/python -m pytest tests/fuzz -q
