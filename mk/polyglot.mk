# Go and TypeScript: code generation plugins, the clients' dependencies and their tests.
# Included by the top-level Makefile. Everything downloaded lands in .tools/ (gitignored; cache it
# in CI): Go modules, Go's build cache, the protoc-gen-go* binaries and npm's cache. Go and Node
# themselves come from the machine (Go >= 1.26, as clients/go/go.mod says; Node >= 20).

TOOLS ?= $(CURDIR)/.tools
GO ?= go
NPM ?= npm
# Pinned: `make proto` output depends on these versions (proto-check compares byte for byte).
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

export GOMODCACHE := $(TOOLS)/go/mod
export GOCACHE := $(TOOLS)/go/cache
export GOFLAGS := -modcacherw
export GOTOOLCHAIN := local
export npm_config_cache := $(TOOLS)/npm
export npm_config_update_notifier := false
export npm_config_fund := false
export npm_config_audit := false

GO_PLUGINS := $(TOOLS)/go/bin/protoc-gen-go $(TOOLS)/go/bin/protoc-gen-go-grpc
TS_DEPS := clients/typescript/node_modules/.package-lock.json

$(TOOLS)/go/bin/protoc-gen-go: mk/polyglot.mk
	GOBIN=$(TOOLS)/go/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	touch $@

$(TOOLS)/go/bin/protoc-gen-go-grpc: mk/polyglot.mk
	GOBIN=$(TOOLS)/go/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@

# npm ci from the committed lockfile; rerun when the lockfile changes.
$(TS_DEPS): clients/typescript/package-lock.json
	cd clients/typescript && $(NPM) ci --no-progress --loglevel=error
	touch $@

.PHONY: tools
tools: $(GO_PLUGINS) $(TS_DEPS) ## Install the Go plugins and the TypeScript packages into .tools/ and node_modules
	cd clients/go && $(GO) mod download

.PHONY: lint-polyglot
lint-polyglot: tools ## gofmt + go vet (clients/go), tsc --noEmit (clients/typescript)
	@unformatted="$$(cd clients/go && gofmt -l $$(find . -name '*.go' -not -path './gen/*'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	cd clients/go && $(GO) vet ./...
	cd clients/typescript && $(NPM) run --silent typecheck

# The suites alone; they test against the stack at STELLWERK_ADDRESS (and a worker against
# STELLWERK_EXECUTOR_ADDRESS) when set, else only their offline parts. `make test` runs them
# against a stack it starts (tests/polyglot/test_clients.py).
.PHONY: test-go
test-go: tools ## go test in clients/go
	cd clients/go && $(GO) test ./...

.PHONY: test-ts
test-ts: tools ## node --test in clients/typescript
	cd clients/typescript && $(NPM) test --silent
