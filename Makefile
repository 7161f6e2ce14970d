# certctl — the two commands a new machine needs are `make run` (or `make loadtest`) and `make test`.
# Every target installs what it needs (PostgreSQL server binaries) when they are missing.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test lint fmt deps build clean acme-e2e bench-hotpath bench-generator loadtest loadtest-release loadtest-scale loadtest-scale-bulk loadtest-scale-acme loadtest-scale-agent loadtest-ceiling loadtest-faults
.PHONY: run test lint fmt deps build clean acme-e2e bench-hotpath bench-generator loadtest loadtest-release loadtest-scale loadtest-scale-bulk loadtest-scale-acme loadtest-scale-agent loadtest-ceiling loadtest-ab
.PHONY: run test lint fmt deps build clean acme-e2e schemathesis loadtest loadtest-release loadtest-scale loadtest-scale-bulk loadtest-scale-acme loadtest-scale-agent
.PHONY: run test lint fmt deps build clean acme-e2e bench-hotpath bench-generator loadtest loadtest-release loadtest-scale loadtest-scale-bulk loadtest-scale-acme loadtest-scale-agent loadtest-ceiling
.PHONY: run test lint fmt deps build clean acme-e2e schemathesis probe loadtest loadtest-release loadtest-scale loadtest-scale-bulk loadtest-scale-acme loadtest-scale-agent

## Install PostgreSQL's server binaries when none are on the machine (Debian/Ubuntu, needs root),
## the workflow linter, and the pinned Python test tools (scripts/py-tools.txt, a virtualenv).
# Where cargo puts binaries (honours CARGO_TARGET_DIR, as cargo does).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

deps:
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-actionlint.sh
	@bash scripts/ensure-py-tools.sh >/dev/null
	@bash scripts/ensure-kubernetes-validate.sh
	@bash scripts/ensure-haproxy.sh

## Main job: certctl-server against a throw-away PostgreSQL with the demo seed (Ctrl-C stops it).
run: deps
	$(CARGO) build --workspace --all-targets --locked
	$(TARGET_DIR)/debug/certctl-dev

## All tests: unit + integration against a real throw-away PostgreSQL. Release profile, the
## one `make loadtest` builds (with every test target), so after it nothing compiles again.
test: deps
	$(CARGO) test --workspace --release --locked

## ACME interoperability end to end: lego (Debian package) obtains and revokes certificates
## (http-01 on loopback) against certctl-dev. Installs lego when missing (root + apt).
acme-e2e: deps
	$(CARGO) build --workspace --release --all-targets --locked
	CERTCTL_DEV=$(TARGET_DIR)/release/certctl-dev bash scripts/acme-e2e.sh

## Hot-path benchmark: release build, throw-away PostgreSQL + certctl-server with the fleet
## seeded, then wrk (HTTP) against pgbench (the same SQL) per hot endpoint at 16 and 64
## connections, in one run (~5 min). Installs wrk when missing (root + apt). Options:
## make bench-hotpath BENCH_ARGS="--duration 10 --endpoints heartbeat,list"
BENCH_ARGS ?=
bench-hotpath: deps
	@bash scripts/ensure-wrk.sh
	$(CARGO) build --workspace --release --all-targets --locked
	python3 scripts/bench-hotpath.py --target-dir $(TARGET_DIR) $(BENCH_ARGS)
## Property-based API checks: schemathesis (pinned, in a virtualenv) over the OpenAPI document
## certctl-dev serves, with an admin and a non-admin key, fixed seed, bounded time (~4 min).
schemathesis: deps
	$(CARGO) build --workspace --all-targets --locked
	bash scripts/schemathesis.sh

## Black-box security probe (issue 14's repeat, ~40 s): release build, then scripts/probe.py starts
## certctl-dev itself and probes it over real HTTP (docs/operator/probe.md). Exit 0 when every
## check holds. Options: make probe PROBE_ARGS="--out /tmp/probe"
PROBE_ARGS ?=
probe:
	@bash scripts/ensure-postgres.sh
	@python3 -c 'import cryptography' 2>/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-cryptography >/dev/null; } || { echo "make probe needs python3-cryptography (apt-get install python3-cryptography)" >&2; exit 1; }
	$(CARGO) build --workspace --release --all-targets --locked
	python3 scripts/probe.py --bin $(TARGET_DIR)/release/certctl-dev $(PROBE_ARGS)

## fmt + clippy, as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --all-targets --locked

clean:
	$(CARGO) clean

## Load harness (certctl-loadtest): release build, throw-away PostgreSQL + server, run dir under
## artifacts/runs/. Extra options: make loadtest LOADTEST_ARGS="--baseline artifacts/baselines/<dir>"
LOADTEST ?= $(TARGET_DIR)/release/certctl-loadtest
LOADTEST_ARGS ?=

## Every target (tests too): `make test` then reuses this build instead of compiling the
## dependencies again in another profile or with other features.
loadtest-release: deps
	$(CARGO) build --workspace --release --all-targets --locked

## Smoke profile (~15 s per scenario), all scenarios.
loadtest: loadtest-release
	$(LOADTEST) run --profile smoke $(LOADTEST_ARGS)

## Scale profile (5 min per scenario), one scenario each.
loadtest-scale-bulk: loadtest-release
	$(LOADTEST) run --profile scale --scenario bulk_renewal $(LOADTEST_ARGS)

loadtest-scale-acme: loadtest-release
	$(LOADTEST) run --profile scale --scenario acme_burst $(LOADTEST_ARGS)

loadtest-scale-agent: loadtest-release
	$(LOADTEST) run --profile scale --scenario agent_storm $(LOADTEST_ARGS)

## Capacity ceiling of one scenario (default agent_storm): the highest open-model rate at which
## a steady trial meets every criterion. make loadtest-ceiling SCENARIO=api LOADTEST_ARGS="--label list"
SCENARIO ?= agent_storm
loadtest-ceiling: loadtest-release
	$(LOADTEST) ceiling --scenario $(SCENARIO) $(LOADTEST_ARGS)

## Faults under load (smoke profile, ~1.5 min): agent_storm through a PostgreSQL fast restart
## and through a 3-s SIGSTOP stall (one server), then a fleet renewal across 3 replicas with one
## SIGKILLed mid-wave. Two run directories under artifacts/runs/ (-faults-db, -faults-replica).
FAULTS_RUN ?= artifacts/runs/$(shell date -u +%Y%m%dT%H%M%SZ)
## Both runs always run; the target exits with the worse of their exit codes.
loadtest-faults: loadtest-release
	@$(LOADTEST) run --profile smoke --scenario faults_db_restart --scenario faults_db_stall \
	    --out $(FAULTS_RUN)-faults-db $(LOADTEST_ARGS); a=$$?; \
	$(LOADTEST) run --profile smoke --replicas 3 --scenario faults_replica_kill \
	    --out $(FAULTS_RUN)-faults-replica $(LOADTEST_ARGS); b=$$?; \
	exit $$(( a > b ? a : b ))
## A/B regression gate: two server builds in one job, paired rounds in random order. By default
## both sides are this tree's release server (an A/A check of the machine); compare an older
## build with make loadtest-ab A_BIN=/path/to/old/certctl-server SCENARIO=fleet_renewal
A_BIN ?= $(TARGET_DIR)/release/certctl-server
B_BIN ?= $(TARGET_DIR)/release/certctl-server
loadtest-ab: loadtest-release
	$(LOADTEST) ab --scenario $(SCENARIO) --a-bin $(A_BIN) --b-bin $(B_BIN) $(LOADTEST_ARGS)

## The generator's own ceiling: certctl-loadtest's closed-loop maximum on GET /health next to
## wrk -t2 -c64 in one run (BEFORE_LOADTEST=PATH adds an older harness binary to the run).
bench-generator: deps
	bash scripts/bench-generator.sh

## Scale profile, the three fleet scenarios in one run directory.
loadtest-scale: loadtest-release
	$(LOADTEST) run --profile scale --scenario bulk_renewal --scenario acme_burst --scenario agent_storm $(LOADTEST_ARGS)
