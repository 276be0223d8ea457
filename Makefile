# Stellwerk — the two commands are `make run` and `make test` (see README.md).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

include mk/polyglot.mk
include mk/proto.mk
include mk/tracing.mk

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Both distributions, editable, in one resolve: the server (.) depends on the client
# (clients/python, `stellwerk-client`), which pip finds here rather than on an index.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./clients/python -e '.[dev]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv; install server and client (editable) and the dev tools

.PHONY: run
run: install ## Start the embedded stack, run examples/simple_mcp_workflow.yaml, print results, stop
	scripts/run_example.sh examples/simple_mcp_workflow.yaml

.PHONY: lint
lint: install ## ruff (lint + format check) and buf lint via the proto check
	$(BIN)/ruff check services clients tests scripts
	$(BIN)/ruff format --check services clients tests scripts

.PHONY: typecheck
typecheck: install ## mypy --strict
	$(BIN)/mypy

.PHONY: test
test: install tools lint lint-polyglot typecheck proto-check jaeger ## Everything CI runs: lint, types, stale stubs, the whole suite (Go and TypeScript too)
	$(BIN)/pytest

.PHONY: chaos
chaos: install ## Long chaos run (several minutes)
	$(BIN)/python -m tests.chaos --long

.PHONY: cluster
cluster: install ## Failover on a real 3-node JetStream cluster: leader, follower, leader+services
	$(BIN)/python -m tests.cluster

.PHONY: bench
bench: install jaeger ## Benchmark vs Gleitzeit and Celery (and Stellwerk with tracing on), peers installed in bench/.peers (QUICK=1: one short run)
	$(BIN)/python -m bench $(if $(filter 1 yes true,$(QUICK)),--quick,)

.PHONY: clean
clean: ## Remove caches (keeps .venv)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build dist
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
