# Two entry points that work on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint claims venv venv-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

demo: venv
	@test -d data_shards/toy/models || { echo "data_shards/toy is not built: run '$(BIN)/lit-sllm toy build --out data_shards/toy' (needs espeak-ng, about 21 min)"; exit 1; }
	$(BIN)/lit-sllm fit --config experiments/toy/mtbi.yaml

claims: venv  # the papers' claims on the toy world (README), about an hour on 2 cores
	LIT_SLLM=$(BIN)/lit-sllm PYTHON=$(BIN)/python bash experiments/toy/claims.sh

test: venv-dev
	$(BIN)/ruff check lit_sllm tests
	$(BIN)/pytest

lint: venv-dev
	$(BIN)/ruff check lit_sllm tests
	$(BIN)/ruff format --check lit_sllm tests

clean:
	rm -rf $(VENV) runs wandb lightning_logs
