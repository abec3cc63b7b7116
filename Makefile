# agentgraph: `make dev` runs the whole system, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GRAPHIQL_DIR := app/static/graphiql
GRAPHIQL_STAMP := $(GRAPHIQL_DIR)/.fetched
# Azurite (Azure Blob Storage emulator) for the upload tests and bench, pinned.
AZURITE_VERSION := 3.37.0
NPM_TOOLS := .npm-tools
AZURITE_STAMP := $(NPM_TOOLS)/.azurite-$(AZURITE_VERSION)
# Real GraphQL clients the tests drive from Node (exact versions in its package.json).
CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.installed

.PHONY: dev test lint format schema bench install assets clean

install: $(STAMP) $(GRAPHIQL_STAMP) $(AZURITE_STAMP) $(CLIENTS_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# GraphiQL's browser files come from the npm registry (exact versions) and are
# served by the app itself, so the explorer works with no internet.
$(GRAPHIQL_STAMP):
	@set -euo pipefail; tmp=$$(mktemp -d); \
	(cd $$tmp && npm pack --silent graphiql@3.8.3 react@18.2.0 react-dom@18.2.0 \
	    @graphiql/plugin-explorer@1.0.2 >/dev/null); \
	for f in $$tmp/*.tgz; do mkdir -p $$f.d && tar xzf $$f -C $$f.d; done; \
	mkdir -p $(GRAPHIQL_DIR); \
	cp $$tmp/graphiql-3.8.3.tgz.d/package/graphiql.min.js $$tmp/graphiql-3.8.3.tgz.d/package/graphiql.min.css $(GRAPHIQL_DIR)/; \
	cp $$tmp/react-18.2.0.tgz.d/package/umd/react.production.min.js $(GRAPHIQL_DIR)/; \
	cp $$tmp/react-dom-18.2.0.tgz.d/package/umd/react-dom.production.min.js $(GRAPHIQL_DIR)/; \
	cp $$tmp/graphiql-plugin-explorer-1.0.2.tgz.d/package/dist/index.umd.js $(GRAPHIQL_DIR)/plugin-explorer.umd.js; \
	cp $$tmp/graphiql-plugin-explorer-1.0.2.tgz.d/package/dist/style.css $(GRAPHIQL_DIR)/plugin-explorer.css; \
	rm -rf $$tmp; touch $(GRAPHIQL_STAMP)

$(AZURITE_STAMP):
	npm install --prefix $(NPM_TOOLS) --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)
	touch $(AZURITE_STAMP)

$(CLIENTS_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	npm ci --prefix $(CLIENTS) --no-audit --no-fund --silent
	touch $(CLIENTS_STAMP)

assets: $(GRAPHIQL_STAMP)

dev: install
	$(BIN)/agentgraph dev

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerates the committed SDL and client cache hints; tests fail when stale.
schema: install
	$(BIN)/agentgraph export-schema > schema.graphql
	$(BIN)/agentgraph export-schema --possible-types > possible-types.json

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(GRAPHIQL_DIR) $(NPM_TOOLS) $(CLIENTS)/node_modules $(CLIENTS)/.generated .pytest_cache .ruff_cache
