# One run-anywhere entry per thing. See README.md.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install up down status test test-fast bench contracts lint clean

$(BIN)/python:
	$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Lotse needs Python 3.11"'
	$(PY) -m venv $(VENV)

install: $(BIN)/python ## Python environment with pinned dependencies and the lotse CLI
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .

up: install ## Kafka + PostgreSQL + every service, with the demo network
	deploy/local/stack.sh up
	$(BIN)/lotse topics ensure
	deploy/local/services.sh up

down: ## Stop the services and the stack
	-deploy/local/services.sh down
	deploy/local/stack.sh down

status:
	deploy/local/stack.sh status; deploy/local/services.sh status

test: install ## All tests, against a real Kafka broker and PostgreSQL server
	$(BIN)/python -m contracts.export --check
	$(BIN)/python -m pytest

contracts: ## Regenerate contracts/schemas and contracts/asyncapi from the models
	$(BIN)/python -m contracts.export

bench: install ## Benchmarks (see bench/README.md)
	deploy/local/stack.sh up
	$(BIN)/python -m bench

clean:
	rm -rf .run $(VENV)
