# compactsim: every target sets itself up (virtual environment, install) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compactsim simulate --scenario churn --duration 20s --out out/demo
	@echo; echo "kernel-format files:"; ls out/demo/proc; echo; cat out/demo/proc/buddyinfo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

# Regenerate compactsim_proto/ (messages, gRPC stubs, .pyi stubs) from proto/compactsim/v1.
proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
