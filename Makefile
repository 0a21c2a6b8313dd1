# The two commands a newcomer needs (see README):
#   make run    install into .venv and start Mailgate on the embedded defaults
#   make test   install into .venv and run lint, types and the whole suite
# Everything else here is a step those two use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test install lint bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/mailgate run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python tests/run_suite.py

bench: install
	$(BIN)/python bench/run_all.py
