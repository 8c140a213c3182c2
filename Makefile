# MoE Lab: `make demo` and `make test` are the whole set-up on a fresh machine.
# Both are idempotent and install what is missing (.venv/ for the engine, node_modules/ for the extension).

SHELL := /bin/bash
PYTHON ?= python3
# The CPU wheel is small; set TORCH=torch on a GPU machine to take the CUDA build.
TORCH ?= torch==2.13.0+cpu
VENV := .venv
PY := $(VENV)/bin/python
# The default index is unreachable here: fail fast instead of retrying it.
export PIP_RETRIES := 0
export PIP_TIMEOUT := 5
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Tests and the demo run on a 2-core machine: no thread oversubscription.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test setup lint test-engine test-ext test-e2e build package clean chromium

setup: $(VENV)/.stamp node_modules/.stamp

$(VENV)/.stamp: engine/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e "engine[test]"
	$(PY) -m pip install -q --no-deps "lm-eval>=0.4.5"  # its deps that matter are in engine[test]
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

build: node_modules/.stamp
	npm run -s build

# One platform's .vsix (each carries only its own onnxruntime-node binary).
VSIX_TARGET ?= linux-x64

package: build
	npm run -s package -- --target $(VSIX_TARGET)

demo: setup
	$(VENV)/bin/moelab demo --out runs
	$(MAKE) -s package
	@bash scripts/open-demo.sh

lint: setup
	$(VENV)/bin/ruff check engine bench
	$(VENV)/bin/ruff format --check engine bench
	@# The engine's layer order and import circles (docs/ARCHITECTURE.md §5).
	$(PY) -m pytest -q -p no:cacheprovider engine/tests/test_layers.py
	npm run -s lint

test-engine: $(VENV)/.stamp
	$(VENV)/bin/ruff check engine bench
	$(VENV)/bin/ruff format --check engine bench
	@# A one-node Slurm on localhost for the Slurm tests; it prints SKIP (and the tests skip) where it cannot start.
	bash scripts/slurm-local.sh start
	$(PY) -m pytest -q --durations=15 engine/tests

# The webview tests drive Debian's Chromium (never a downloaded browser); a fresh machine lacks it.
chromium:
	@[ -x /usr/bin/chromium ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test-ext: node_modules/.stamp chromium
	npm run -s lint
	npm run -s build
	npm test
	npm run -s test:webview

test-e2e: setup
	npm run -s test:e2e

test: setup
	$(MAKE) -s test-engine
	$(MAKE) -s test-ext
	$(MAKE) -s test-e2e

clean:
	rm -rf $(VENV) node_modules dist out
