# GrimBots: `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help run venv services lint test test-app test-faults test-molecule test-lab lab lab-down lab-status bench bench-lab soak wheels clean

help: ## List every target with one line each
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n",$$1,$$2}'

# The app on its locked versions (what the hosts get). pip turns a constraints file with hashes
# into hash-checking mode, which an editable install cannot pass: the pins alone constrain.
$(BIN)/grimbots: requirements-dev.txt app/pyproject.toml app/requirements.lock
	bash scripts/services.sh base
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' app/requirements.lock >$(VENV)/lock-constraints.txt
	$(BIN)/pip install -q -r requirements-dev.txt -e 'app[test]' -c $(VENV)/lock-constraints.txt
	touch $@

venv: $(BIN)/grimbots ## Create .venv with the app (editable) and every dev tool

services: ## Install and start local Redis, PostgreSQL and the Docker engine (idempotent)
	bash scripts/services.sh

run: venv ## Run the app without Docker or PostgreSQL: SQLite, local Redis, web, workers, fake Telegram
	bash scripts/services.sh redis
	bash scripts/run-local.sh

lint: venv ## ruff, yamllint, ansible-lint (production profile), role argument_specs drift
	bash scripts/lint.sh

test-app: venv services ## App unit + integration tests (real Redis, PostgreSQL, SQLite)
	bash scripts/test-app.sh

test-faults: venv services ## Fault-injection scenarios on the real funnel (FAULT_SCENARIOS, FAULT_SEED)
	bash scripts/test-faults.sh

test-molecule: venv services ## molecule test for every role (docker driver, lab image)
	bash scripts/test-molecule.sh

test-lab: venv services ## Lab: every phase from empty hosts with Ansible, then pyinfra; suites, reruns
	bash scripts/test-lab.sh ansible && bash scripts/test-lab.sh pyinfra

test: venv services ## Everything CI runs: lint, app, molecule, lab phases (timed stages)
	bash scripts/test-all.sh

lab: venv services ## Build the lab image, start the lab hosts, deploy every phase, show status
	bash lab/lab.sh up && bash scripts/deploy-lab.sh && bash lab/lab.sh status

lab-down: ## Remove the lab containers and network
	bash lab/lab.sh down

lab-status: ## Show the lab hosts, addresses and services
	bash lab/lab.sh status

# The soak's length (minutes), fault interval (s) and rate (updates/s): `make soak SOAK_MINUTES=10`.
SOAK_MINUTES ?= 30
SOAK_INTERVAL ?= 120
SOAK_RATE ?= 15
soak: venv ## Availability on the running phase-4 lab: traffic with a fault every SOAK_INTERVAL s
	GRIMBOTS_LAB_PHASE=4 SOAK_MINUTES=$(SOAK_MINUTES) SOAK_INTERVAL=$(SOAK_INTERVAL) \
	  GRIMBOTS_CHAOS_RATE=$(SOAK_RATE) $(BIN)/pytest -p no:cacheprovider -p no:randomly -v -s \
	  tests/phase3/test_soak.py

wheels: venv ## Build the app wheel and its dependencies into dist/wheels (for pip --no-index on hosts)
	bash scripts/build-wheels.sh

bench: venv services ## Webhook intake benchmark with wrk (prints req/s, p50/p99, ratio)
	bash bench/webhook_bench.sh

bench-lab: venv ## Webhook intake through HAProxy on the lab at 1,000 req/s open loop (BENCH_LAB_ARGS)
	$(BIN)/python bench/lab_bench.py $(BENCH_LAB_ARGS)

clean: ## Remove build output (not the lab)
	rm -rf dist build app/build .pytest_cache .ruff_cache
