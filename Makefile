# The two commands of the README: `make run` and `make test`.
.PHONY: run test install-nats build bench fmt

CARGO ?= cargo

# Runs the engine with an embedded nats-server and demo traffic, printing a
# status line every second. Ctrl-C stops everything.
run: install-nats
	$(CARGO) run --release --bin cashback -- serve --status --demo

# Every test: unit, rules, actors and end-to-end against real nats-servers,
# after the formatting and lint checks (a warning is an error).
test: install-nats
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --all-targets

install-nats:
	@scripts/install-nats-server.sh

build:
	$(CARGO) build --release --workspace

# The benchmark suite (issue 6): every benchmark against an embedded
# nats-server, appended to BENCHMARKS.md under one header with the machine and
# the date. The engine and the rank example are built first because the bench
# runs them as child processes from the same target directory. About 10-15
# minutes on 2 cores; run it on a quiet machine.
bench: install-nats
	$(CARGO) build --release --bins
	$(CARGO) build --release -p cashback-engine --example rank_bench
	$(CARGO) run --release --bin cashback-bench -- all --append BENCHMARKS.md

fmt:
	$(CARGO) fmt --all
