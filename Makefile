# Ferry's tasks. `make deps` installs what the tests need on a fresh Debian
# machine with Go; `make test` runs the whole suite.
GO ?= go
BIN := bin/ferry

.PHONY: build build-lean deps test test-faults fuzz bench lint demo clean

build:
	$(GO) build -o $(BIN) ./cmd/ferry

# The legacy host's agent without demo and bench (no embedded NATS server,
# no pgx): ~19 MB smaller and ~12 MB less RSS (README.md).
build-lean:
	$(GO) build -tags lean -o bin/ferry-lean ./cmd/ferry

# PostgreSQL (and wal2json) are the stand-in legacy database of the bench
# suite; headless Chromium drives the receiver's cockpit page in its test;
# promtool (Debian's prometheus package) checks the alerting rules.
deps:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; pkgs=; \
	if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/lib/wal2json.so >/dev/null 2>&1; then \
		pkgs="postgresql postgresql-15-wal2json"; \
	fi; \
	command -v chromium >/dev/null 2>&1 || pkgs="$$pkgs chromium"; \
	command -v promtool >/dev/null 2>&1 || pkgs="$$pkgs prometheus"; \
	if [ -n "$$pkgs" ]; then \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs >/dev/null; \
	fi
	$(GO) mod download

# The whole suite, with the fault suite at its full sizes (~5.5 minutes of the
# run), after gofmt and go vet (lint); a plain `go test ./...` runs the fault
# suite's fast subset.
test: lint
	FERRY_FAULTS=full $(GO) test -count=1 -timeout 30m ./...

test-faults:
	FERRY_FAULTS=full $(GO) test -count=1 -timeout 60m -run 'Fault' -v ./bench/faults/...

# Every fuzz target of the decoders (format/..., receiver/store, receiver/api), FUZZTIME
# each (seeds also run in `make test`). Targets with the same name in two
# packages both run.
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./format/... ./receiver/store ./receiver/api); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: build
	$(BIN) demo

clean:
	rm -rf bin
