# certctl — the two commands a new machine needs are `make run` (or `make loadtest`) and `make test`.
# Every target installs what it needs (PostgreSQL server binaries) when they are missing.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test lint fmt deps build clean

## Install PostgreSQL's server binaries when none are on the machine (Debian/Ubuntu, needs root).
deps:
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-actionlint.sh

## Main job: certctl-server against a throw-away PostgreSQL with the demo seed (Ctrl-C stops it).
run: deps
	$(CARGO) build --workspace --locked
	./target/debug/certctl-dev

## All tests: unit + integration against a real throw-away PostgreSQL.
test: deps
	$(CARGO) test --workspace --locked

## fmt + clippy, as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --locked

clean:
	$(CARGO) clean
