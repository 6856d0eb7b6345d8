# cowrite — the two commands that matter are `make serve` and `make test`.
# Everything they need is installed here, on a fresh machine, by these rules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
NODE_DIR := tests/js
WEB_DIR := web
WEB_DIST := src/cowrite/web_dist

.PHONY: serve test lint typecheck pytest install node-deps web bench clean

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

# The browser demo: npm installs the pinned libraries, esbuild bundles them
# into a gitignored folder that `cowrite serve` serves.
$(WEB_DIR)/node_modules/.stamp: $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	scripts/ensure-system-deps.sh
	cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(WEB_DIST)/.stamp: $(WEB_DIR)/node_modules/.stamp $(WEB_DIR)/build.mjs $(WEB_DIR)/index.html $(WEB_DIR)/style.css $(wildcard $(WEB_DIR)/src/*.js)
	cd $(WEB_DIR) && node build.mjs
	touch $@

web: $(WEB_DIST)/.stamp

# make serve PORT=3100: another port (default 3000, or COWRITE_PORT).
PORT ?=

serve: install web
	$(VENV)/bin/cowrite serve --dev $(if $(PORT),--port $(PORT))

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

pytest: install node-deps web
	scripts/ensure-services.sh
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: install
	bench/run.sh

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules $(WEB_DIR)/node_modules $(WEB_DIST) .mypy_cache .ruff_cache .pytest_cache
