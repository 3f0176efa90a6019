# Set-up and the two README commands. `make run` trains the paper's main job on the offline default data;
# `make test` installs everything and runs the test suite. Both create ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all test-simd run bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

# The DCI classifier's exactness tests at every SIMD level numpy dispatches to on this CPU.
test-simd: install
	tests/simd_levels.sh $(BIN)/python

run: install
	$(BIN)/python -m experiments.dsprites --prior=anisotropic $(ARGS)

bench: install
	$(BIN)/python -m benchmarks.train_speed
