# The two commands of the README: `make run` and `make test`.
.PHONY: run test install-nats build bench fmt

CARGO ?= cargo

# Runs the engine with an embedded nats-server and demo traffic, printing a
# status line every second. Ctrl-C stops everything.
run: install-nats
	$(CARGO) run --release --bin cashback -- serve --status --demo

# Every test: unit, rules, actors and end-to-end against real nats-servers.
test: install-nats
	$(CARGO) test --workspace --all-targets

install-nats:
	@scripts/install-nats-server.sh

build:
	$(CARGO) build --release --workspace

bench: install-nats
	$(CARGO) run --release --bin cashback-bench

fmt:
	$(CARGO) fmt --all
