# erpflow build and test entry points. `make test` is what CI runs.
GO      ?= go
PKGS    ?= ./...
BENCH   ?= .
# PARALLEL: how many parallel tests of one package run at once. Most of
# their time waits (for children, receivers, retries, disks), so more than
# the default (GOMAXPROCS, 2 on CI) lets a package's tests finish sooner.
PARALLEL ?= 4
# PACKAGES: how many packages' tests run at once. One more than the two
# cores: some packages mostly wait (the PostgreSQL store's, with its
# restarts and cut connections; the plugins', on child processes) and
# would hold a core's turn while they do.
PACKAGES ?= 3
# BENCHPKGS: where `make bench` looks for benchmarks.
BENCHPKGS ?= ./...

.PHONY: all test test-short build generate bench bench-engine vet fmt-check

all: build

# Full suite against a throwaway PostgreSQL 15 started from the machine's
# initdb/pg_ctl (as the user postgres when run as root); fails when
# PostgreSQL cannot start, and the console's browser tests fail (instead of
# skipping) when no Chromium is installed (apt-get install -y chromium).
test:
	ERPFLOW_REQUIRE_CHROMIUM=1 ./scripts/with-postgres.sh $(GO) test -race -p $(PACKAGES) -parallel $(PARALLEL) -timeout 20m $(PKGS)

# Quick suite without PostgreSQL (its tests skip).
test-short:
	env -u TEST_DATABASE_URL -u TEST_PG_RESTART -u TEST_PG_RESTART_URL $(GO) test -short -race $(PKGS)

build:
	$(GO) build ./...
	$(GO) build -buildvcs=auto -o bin/erpflow ./cmd/erpflow

# Regenerates committed generated code (protobuf for plugins).
generate:
	$(GO) generate ./...

# Go benchmarks against SQLite and a throwaway PostgreSQL (fsync on, like a
# real server).
bench:
	PG_FSYNC=on ./scripts/with-postgres.sh $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -timeout 30m $(BENCHPKGS)

# PostgreSQL as a production server would run it: fsync on, and the
# settings docs/storage.md recommends for a write-heavy database.
define PG_BENCH_CONF
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 15min
endef
export PG_BENCH_CONF

# `erpflow bench` on the embedded SQLite default, then on a throwaway
# PostgreSQL configured like production (fsync on). BENCH_FLAGS passes
# flags, e.g. BENCH_FLAGS='--rules 1'.
bench-engine: build
	./bin/erpflow bench $(BENCH_FLAGS)
	PG_FSYNC=on PG_CONF="$$PG_BENCH_CONF" ./scripts/with-postgres.sh sh -c './bin/erpflow bench --database "$$TEST_DATABASE_URL" $(BENCH_FLAGS)'

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
