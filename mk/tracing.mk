# Jaeger for the tracing tests and `bench.hops --tracing`: built once from the Go module proxy
# into .tools/bin/jaeger (gitignored). `make test` depends on it; with the binary there it is a
# no-op. tools/jaeger/go.mod pins the version (a `tool` directive: Jaeger's own go.mod has
# replace directives, so `go install pkg@version` refuses it). The build uses Go's default
# caches in $HOME, not .tools/go, so a fresh clone on a machine that built it once links in
# seconds instead of compiling for minutes (about 3.5 min on 2 cores, cold).

JAEGER := $(CURDIR)/.tools/bin/jaeger

$(JAEGER): tools/jaeger/go.mod tools/jaeger/go.sum
	cd tools/jaeger && env -u GOCACHE -u GOMODCACHE $(GO) build -o $(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger
	touch $@

.PHONY: jaeger
jaeger: $(JAEGER) ## Build Jaeger (v2, cmd/jaeger) once into .tools/bin for the tracing tests
