# The two set-up commands: `make reproduce` (the main job: the three seed studies on the
# offline default models, one report) and `make test` (lint, type check, tests). Both
# install what they need first. `make demo` is a one-minute tour of the library.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo reproduce test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	$(BIN)/whisperlens demo

# The main job: the three seed studies at quick scale, one report (REPRODUCE_SCALE=full for
# the seeds' sizes; a rerun resumes).
REPRODUCE_OUT ?= $(or $(WHISPERLENS_CACHE),$(HOME)/.cache/whisperlens)/runs/reproduce
REPRODUCE_SCALE ?= quick
reproduce: setup
	$(BIN)/whisperlens reproduce --scale $(REPRODUCE_SCALE) --out $(REPRODUCE_OUT)

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/hooks.py
	$(BIN)/python bench/executors.py
	$(BIN)/python bench/patching.py --sample-sources 6
	$(BIN)/python bench/steering.py
	$(BIN)/python bench/sae_extract.py
	$(BIN)/python bench/sae_train.py
