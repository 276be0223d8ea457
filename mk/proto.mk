# Contracts: protos/ -> generated Python in clients/python/stellwerk_api/<area>/v1/, Go in
# clients/go/gen/, TypeScript in clients/typescript/src/gen/ (see scripts/gen_protos.py).
# Included by the top-level Makefile after mk/polyglot.mk (which installs the Go/TS plugins;
# they are put on PATH from $(TOOLS), so a shared TOOLS=... folder works too).

VENV ?= .venv

.PHONY: proto
proto: $(GO_PLUGINS) $(TS_DEPS) ## Format and lint the protos, regenerate the committed Python, Go and TS stubs
	PATH="$(TOOLS)/go/bin:$$PATH" $(VENV)/bin/python scripts/gen_protos.py

.PHONY: proto-check
proto-check: $(GO_PLUGINS) $(TS_DEPS) ## Fail if the protos are unformatted or lint-dirty, or the committed stubs are stale
	PATH="$(TOOLS)/go/bin:$$PATH" $(VENV)/bin/python scripts/gen_protos.py --check

.PHONY: proto-breaking
proto-breaking: ## Fail on breaking proto changes against the main branch (needs a commit on main)
	$(VENV)/bin/buf breaking --against '.git#branch=main'
