# `make repro` and `make test` work on a fresh clone: each creates the virtual
# environment first when it is missing or out of date.
VENV ?= .venv
PYTHON ?= python3
BIN := $(CURDIR)/$(VENV)/bin
# DVC stages call `python`: put the venv first so they find its packages.
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: setup repro test lint format bench tune clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-tune.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r requirements-tune.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# check_params.py first: DVC itself reads `datasets:` and, on an empty or broken
# params.yaml, fails with a message about dvc.yaml instead.
repro: setup
	$(BIN)/python pipeline/check_params.py
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/run.py

# The hyperparameter sweep on Ray Tune: its own DVC pipeline, not part of `repro`.
tune: setup
	$(BIN)/dvc repro tune/dvc.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
