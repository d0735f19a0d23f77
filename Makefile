# One run-anywhere entry per thing. See README.md.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install up up-cluster down-cluster down status test chaos bench bench-e2e contracts lint validate-deploy i18n-extract i18n-update i18n-compile clean

$(BIN)/python:
	$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Lotse needs Python 3.11"'
	$(PY) -m venv $(VENV)

install: $(BIN)/python ## Python environment with pinned dependencies and the lotse CLI
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .

up: install ## Kafka (TLS + SCRAM) + PostgreSQL + Keycloak + every service, with the demo network
	deploy/local/stack.sh up
	$(BIN)/lotse admin provision
	deploy/local/services.sh up

up-cluster: install ## A three-node Kafka cluster on loopback (RF 3, min ISR 2) for the fault suite; the single node stays the default
	deploy/local/cluster.sh up
	LOTSE_KAFKA_CREDENTIALS_FILE=$(CURDIR)/.run/cluster/credentials/lotse-admin.properties \
	  $(BIN)/lotse admin provision --replication-factor 3 --credentials-dir $(CURDIR)/.run/cluster/credentials

down-cluster: ## Stop the three-node cluster
	deploy/local/cluster.sh down

down: ## Stop the services and the stack
	-deploy/local/services.sh down
	deploy/local/stack.sh down

status:
	deploy/local/stack.sh status; deploy/local/services.sh status

test: install ## All tests, against a real Kafka broker and PostgreSQL server
	$(BIN)/python -m contracts.export --check
	$(BIN)/python -m contracts.catalogue --check
	$(BIN)/python -m pytest

# The fault suite (issue 15) on the three-node cluster: short profile by default (< 20 min on 2 cores);
# the full one by hand: make chaos CHAOS_ARGS="--profile full". Results in bench/results/chaos-*.json.
chaos: up-cluster ## Faults under load on the 3-node cluster, then what was sent vs what landed (docs/operations.md)
	deploy/local/stack.sh up
	$(BIN)/python -m pytest -q tests/chaos/test_netfault.py
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# Lint: ruff (rules and ignores in pyproject.toml) over the whole repository, and the formatter's check.
# Types: mypy --strict for contracts/, lotse_kit/ and lotse_partner/ (the `files` and `strict` settings in pyproject.toml),
# the libraries every service builds on. services/, tests/, bench/ and lotse_cli/ are not type-checked yet.
lint: install ## ruff check, ruff format --check, mypy (strict for contracts/ and lotse_kit/)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

contracts: ## Regenerate contracts/schemas, contracts/asyncapi and docs/events.md from the models and the services' declarations
	$(BIN)/python -m contracts.export
	$(BIN)/python -m contracts.catalogue --write

validate-deploy: install ## Deployment files: generated up to date, kustomize, Kubernetes/Strimzi/KEDA schemas, compose config
	deploy/validate.sh

bench: install ## Benchmarks (see bench/README.md)
	deploy/local/stack.sh up
	$(BIN)/python -m bench

# End to end on the running network (after `make up`): referrals stepped in rate, against a floor pipeline; ~10 min on 2 cores.
# Arguments for bench/e2e.py: make bench-e2e E2E_ARGS="--quick"
bench-e2e: install ## End-to-end referral throughput vs the floor (needs `make up`; see bench/README.md)
	$(BIN)/python -m bench.e2e $(E2E_ARGS)

# Translations: gettext catalogues per service (services/<name>/locale/, see lotse_kit/i18n.py), managed with Babel.
# babel.cfg maps services/**.py and services/**/templates/**.j2. Python code calls catalogue.gettext(lang, "text"),
# so the message is the 2nd argument there (gettext:2, pgettext:2c,3, ngettext:2,3); the Jinja i18n extension's
# {% trans %} blocks become gettext("text"), pgettext("ctx", "text") and ngettext("s", "p", n), matched by arity (…t).
I18N_SERVICES := $(patsubst services/%/locale,%,$(wildcard services/*/locale))
BABEL_KEYWORDS := --no-default-keywords -k _ -k gettext:2 -k pgettext:2c,3 -k ngettext:2,3 \
	-k gettext:1,1t -k pgettext:1c,2,2t -k ngettext:1,2,3t
BABEL_WIDTH := --width 120

i18n-extract: ## services/<name>/locale/messages.pot from each service's code and templates (tests excluded)
	@set -e; for s in $(I18N_SERVICES); do \
	  $(BIN)/pybabel -q extract -F babel.cfg $(BABEL_KEYWORDS) $(BABEL_WIDTH) --sort-by-file \
	    --project "Lotse $$s" --version 1.0 --copyright-holder Lotse -o services/$$s/locale/messages.pot \
	    $$(find services/$$s -name '*.py' -not -path '*/tests/*' | sort) $$(find services/$$s -path '*/templates/*.j2' | sort); \
	  echo "services/$$s/locale/messages.pot"; \
	done

i18n-update: i18n-extract ## New and changed messages into every language's messages.po (then translate them)
	@set -e; for s in $(I18N_SERVICES); do \
	  $(BIN)/pybabel -q update -D messages -i services/$$s/locale/messages.pot -d services/$$s/locale $(BABEL_WIDTH); \
	done

i18n-compile: ## Compile every catalogue as a check, with statistics (nothing is written: services read the .po files)
	@set -e; for po in services/*/locale/*/LC_MESSAGES/messages.po; do \
	  lang=$$(basename $$(dirname $$(dirname $$po))); \
	  $(BIN)/pybabel compile --statistics -D messages -l $$lang -i $$po -o /dev/null; \
	done

clean:
	rm -rf .run $(VENV) .mypy_cache .ruff_cache
