# Two entry points that work on a fresh machine: `make demo` and `make test`. Both install through the lock
# (requirements/lock.txt): the versions the suite was tested with, never whatever the registry serves today.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
# --no-build-isolation: the project builds with the locked setuptools instead of the newest one
PIP_INSTALL := $(BIN)/python -m pip install --quiet --no-build-isolation -c $(LOCK)

.PHONY: demo test test-cluster lint lock claims venv venv-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip setuptools

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(LOCK)
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]' uv
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

demo: venv
	@test -d data_shards/toy/models || { echo "data_shards/toy is not built: run '$(BIN)/lit-sllm toy build --out data_shards/toy' (needs espeak-ng; 45 min measured on a busy 2-core machine)"; exit 1; }
	$(BIN)/lit-sllm fit --config experiments/toy/mtbi.yaml

claims: venv  # the papers' claims on the toy world (README)
	LIT_SLLM=$(BIN)/lit-sllm PYTHON=$(BIN)/python bash experiments/toy/claims.sh

test: venv-dev
	$(BIN)/python requirements/lock.py check
	$(BIN)/ruff check lit_sllm tests requirements
	$(BIN)/pytest

# only the tests on servers started on 127.0.0.1 (part of `make test` too): a local SLURM cluster (needs root and
# Debian's slurm-wlm and munge, which .ci/run installs), moto's S3 and HTTP shard servers
test-cluster: venv-dev
	$(BIN)/pytest -m cluster

lint: venv-dev
	$(BIN)/ruff check lit_sllm tests requirements
	$(BIN)/ruff format --check lit_sllm tests requirements

# A deliberate upgrade: `make lock` keeps every pin that still fits setup.cfg, `make lock UPGRADE=1` moves all to the
# newest releases. Then run `make test` and commit setup.cfg and the lock together.
lock: venv-dev
	$(BIN)/python requirements/lock.py compile $(if $(UPGRADE),--upgrade,)

clean:
	rm -rf $(VENV) runs wandb lightning_logs
