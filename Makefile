# corehop: two commands on a fresh machine (as root): `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release/corehop

.PHONY: setup build demo test lint clean

# Idempotent: Debian packages, CRIU built from Debian's source, sysctls.
setup:
	bash scripts/setup.sh

build:
	$(CARGO) build --release --bin corehop

# The main job, then the quick experiment plan (resumable: results/quick is reused) and its
# report; the lab is removed at the end.
demo: setup build
	$(BIN) demo
	$(BIN) lab up
	$(BIN) experiment plans/quick.toml --out results/quick; status=$$?; $(BIN) lab down; exit $$status

# Every test: unit, wire-format (tshark), lab integration (root), then a short pass of
# every fuzz target from its committed corpus.
test: setup
	$(CARGO) test --workspace --no-fail-fast
	bash scripts/fuzz-short.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	-$(BIN) lab down
	$(CARGO) clean
