# Contracts: protos/ -> generated Python in clients/python/stellwerk_api/<area>/v1/ (see scripts/gen_protos.py).
# Included by the top-level Makefile.

VENV ?= .venv

.PHONY: proto
proto: ## Format and lint the protos, regenerate the committed Python stubs
	$(VENV)/bin/python scripts/gen_protos.py

.PHONY: proto-check
proto-check: ## Fail if the protos are unformatted or lint-dirty, or the committed stubs are stale
	$(VENV)/bin/python scripts/gen_protos.py --check

.PHONY: proto-breaking
proto-breaking: ## Fail on breaking proto changes against the main branch (needs a commit on main)
	$(VENV)/bin/buf breaking --against '.git#branch=main'
