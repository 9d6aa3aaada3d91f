# The two set-up commands: `make demo` (main job on the offline default models)
# and `make test` (lint, type check, tests). Both install what they need first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	$(BIN)/whisperlens demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/hooks.py
	$(BIN)/python bench/executors.py
