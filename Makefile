# compactsim: every target sets itself up (virtual environment, install) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo serve test bench loadtest clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The whole user flow: a server on loopback, the seed experiment (four designs x seeds),
# its table with intervals and its HTML report.
demo: $(STAMP)
	BIN=$(BIN) bash deploy/demo.sh

# A server in the foreground (Ctrl-C or SIGTERM to stop); data in $(DATA_DIR).
DATA_DIR ?= data
serve: $(STAMP)
	$(BIN)/compactsim-server --data-dir $(DATA_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

# A bounded load test of a real server on loopback (a few minutes; not part of `test`):
# 200 watch streams, 1,000 CreateRun calls and a GetRun loop while simulations run.
# Table on stdout, figures in out/loadtest.json; exit status 1 when a goal is missed.
loadtest: $(STAMP)
	$(BIN)/python -m bench.loadtest

# Regenerate compactsim_proto/ (messages, gRPC stubs, .pyi stubs) from proto/compactsim/v1.
proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
