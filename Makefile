# authz: two commands set everything up on a fresh machine: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# reinstall when the packaging or the protos change
STAMP  := $(VENV)/.installed
DEPS   := pyproject.toml setup.py $(wildcard protos/authz/admin/v1/*.proto)

POLICY ?= examples/policy.yaml
PYTEST_ARGS ?=

.PHONY: run install protos test bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python $(DEPS)
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

install: $(STAMP)

## protos: compile protos/ into authz/admin/v1/ (the install does it too)
protos: $(BIN)/python
	$(BIN)/python -c 'from setup import compile_protos; compile_protos()'

## run: start authz on the in-memory store with the example policy
run: $(STAMP)
	$(BIN)/authz serve --config $(POLICY)

## test: everything CI runs (unit, real Envoy, real redis-server, security)
test: $(STAMP)
	scripts/system-deps redis-server nginx
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: load through real Envoy with wrk, and direct gRPC load (not a test)
bench: $(STAMP)
	scripts/system-deps wrk
	$(BIN)/python -m bench

## demo: real Envoy in front of an echo upstream, with authz; prints curl lines
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info authz/admin/v1/*_pb2*.py*
