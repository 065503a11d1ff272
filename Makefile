# compactsim: every target sets itself up (virtual environment, install) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo serve test test-fast lint typecheck golden spec bench loadtest validate clean proto

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)
	touch $(VENV)/.compiled    # the editable install has just compiled every module

# The compiled sim/ modules (setup.py) rebuilt in place after their .py files changed: only
# the changed ones are translated and compiled again. Every target below depends on it;
# importing compactsim.sim from a checkout whose compiled modules are stale is an error.
BUILT := $(VENV)/.compiled
$(BUILT): $(STAMP) setup.py $(wildcard sim/*.py sim/*.pxd)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $(BUILT)

# The whole user flow: a server on loopback, the seed experiment (four designs x seeds),
# its table with intervals and its HTML report.
demo: $(BUILT)
	BIN=$(BIN) bash deploy/demo.sh

# A server in the foreground (Ctrl-C or SIGTERM to stop); data in $(DATA_DIR).
DATA_DIR ?= data
serve: $(BUILT)
	$(BIN)/compactsim-server --data-dir $(DATA_DIR)

# The whole suite (what CI runs), and the fast tier for the edit-test loop: everything but
# the tests marked slow (multi-second end-to-end, fuzzing, fault and load tests).
test: $(BUILT)
	$(BIN)/python -m pytest -q

test-fast: $(BUILT)
	$(BIN)/python -m pytest -q -m "not slow"

# ruff, the import contracts and mypy (CI runs this).
lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# mypy over the installed names (compactsim.*): the folders are linked under those names in
# $(VENV)/typecheck, and the messages are shown with the repository's paths. 10-25 s
# from scratch on two cores, about a second with its cache (.mypy_cache).
TYPECHECK := $(VENV)/typecheck/compactsim
typecheck: $(BUILT)
	mkdir -p $(TYPECHECK)
	for p in sim codec client server; do ln -sfn ../../../$$p $(TYPECHECK)/$$p; done
	ln -sfn ../../../compactsim_proto $(TYPECHECK)/proto
	$(BIN)/mypy > $(VENV)/mypy.out; rc=$$?; \
	    sed -e 's|^$(TYPECHECK)/proto/|compactsim_proto/|' -e 's|^$(TYPECHECK)/||' $(VENV)/mypy.out; \
	    exit $$rc

# Rewrite tests/golden/*.json, each preset's summary at a fixed seed, after a change that
# is meant to change the model's results (review the diff before committing it).
golden: $(BUILT)
	$(BIN)/python -m pytest -q tests/golden --update-golden

# Rewrite docs/spec.md, the spec reference, from the config's field metadata.
spec: $(BUILT)
	$(BIN)/compactsim spec > docs/spec.md

bench: $(BUILT)
	$(BIN)/python -m bench

# Checks against published kernel measurements and real captures (minutes; not part of
# `test`): writes docs/validation.md, prints the summary; exit status 1 only when a run fails.
validate: $(BUILT)
	$(BIN)/python -m validation

# A bounded load test of a real server on loopback (a few minutes; not part of `test`):
# 200 watch streams, 1,000 CreateRun calls and a GetRun loop while simulations run.
# Table on stdout, figures in out/loadtest.json; exit status 1 when a goal is missed.
loadtest: $(BUILT)
	$(BIN)/python -m bench.loadtest

# Regenerate compactsim_proto/ (messages, gRPC stubs, .pyi stubs) from proto/compactsim/v1.
proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis build sim/*.c sim/*.so
