# cowrite — the two commands that matter are `make serve` and `make test`.
# Everything they need is installed here, on a fresh machine, by these rules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
NODE_DIR := tests/js

.PHONY: serve test lint typecheck pytest install node-deps bench clean

$(VENV)/.stamp-install: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.stamp-install

$(NODE_DIR)/node_modules/.stamp: $(NODE_DIR)/package.json
	scripts/ensure-system-deps.sh
	cd $(NODE_DIR) && npm install --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_DIR)/node_modules/.stamp

serve: install
	$(VENV)/bin/cowrite serve --dev

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

pytest: install node-deps
	scripts/ensure-services.sh
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: install
	bench/run.sh

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
