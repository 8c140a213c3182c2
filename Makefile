# MoE Lab: `make demo` and `make test` are the whole set-up on a fresh machine.
# Both are idempotent and install what is missing (.venv/ for the engine, node_modules/ for the extension).

SHELL := /bin/bash
PYTHON ?= python3
# Unset: scripts/install-torch.sh takes the CPU build of TORCH_VERSION where an index serves it (small,
# no CUDA libraries), else plain torch, and says which. Set it to install exactly that spec, e.g.
# TORCH=torch for the CUDA build on a GPU machine.
TORCH ?=
export TORCH_VERSION ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
# An index that cannot be reached (offline, or a mirror-only machine) fails fast instead of being retried.
export PIP_RETRIES ?= 0
export PIP_TIMEOUT ?= 5
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# No OMP_NUM_THREADS here: the engine chooses torch's threads from the model and the machine's idle CPUs
# (engine/moelab/launch/threads.py); set it, or `threads` in a config, to override.

.PHONY: demo test setup lint test-engine test-ext test-e2e build package clean chromium

setup: $(VENV)/.stamp node_modules/.stamp

$(VENV)/.stamp: engine/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	bash scripts/install-torch.sh $(PY) "$(TORCH)"
	$(PY) -m pip install -q -e "engine[test]"
	$(PY) -m pip install -q --no-deps "lm-eval>=0.4.5"  # its deps that matter are in engine[test]
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

build: node_modules/.stamp
	npm run -s build

# One platform's .vsix (each carries only its own onnxruntime-node binary): this machine's by default
# (`host`: node's platform-arch, e.g. linux-x64, darwin-arm64, win32-x64), or VSIX_TARGET=linux-arm64 etc.
VSIX_TARGET ?= host

package: build
	npm run -s package -- --target $(VSIX_TARGET)

demo: setup
	$(VENV)/bin/moelab demo --out runs
	$(MAKE) -s package
	@bash scripts/open-demo.sh

lint: setup
	$(VENV)/bin/ruff check engine bench
	$(VENV)/bin/ruff format --check engine bench
	@# Type-checks engine/moelab ([tool.mypy] in engine/pyproject.toml).
	cd engine && $(abspath $(VENV))/bin/mypy
	@# The engine's layer order and import circles, and its functions' length (docs/ARCHITECTURE.md §5).
	$(PY) -m pytest -q -p no:cacheprovider engine/tests/test_layers.py engine/tests/test_function_size.py
	npm run -s lint

test-engine: $(VENV)/.stamp
	$(VENV)/bin/ruff check engine bench
	$(VENV)/bin/ruff format --check engine bench
	cd engine && $(abspath $(VENV))/bin/mypy
	@# The Slurm tests need a one-node Slurm on localhost (apt packages, daemons, /etc/slurm): started only
	@# under CI (CI=true) or when asked (MOELAB_SLURM=1); elsewhere those tests skip and say how to run them.
	@# slurm-local.sh prints SKIP (and the tests skip) where it cannot start one.
	@case "$${CI:-}:$${MOELAB_SLURM:-}" in true:* | 1:* | *:1) bash scripts/slurm-local.sh start ;; \
	  *) echo "slurm-local: not started (MOELAB_SLURM=1 or CI=true starts it); the Slurm tests skip unless one runs" ;; esac
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
