# facexplain: `make demo` and `make test` set everything up (idempotent), then run.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every install goes through a constraints file: the whole resolved set, pinned (`make lock` rewrites them).
CONSTRAINTS := constraints.txt
# The embedded Triton lives in its own environment: nvidia-pytriton pins numpy<2.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
TRITON_PKGS := nvidia-pytriton==0.7.0 onnxruntime>=1.17
TRITON_CONSTRAINTS := constraints-triton.txt
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=
# `make test` leaves out the heavy fault/load/fuzz tests of tests/reliability (`make test-reliability`)
# and the dashboard in a real browser (`make test-browser`: it needs Debian's chromium).
TEST_MARKERS ?= not reliability and not browser
LINT_PATHS := explainer_service dashboard tests bench tools

.PHONY: setup detector-weights venv api-stubs triton-env model demo test test-reliability test-browser test-fast lint typecheck lock bench clean

setup: venv detector-weights api-stubs triton-env model

venv: $(STAMP)

triton-env: $(TRITON_STAMP)

$(TRITON_STAMP): Makefile $(TRITON_CONSTRAINTS)
	@test -x $(TRITON_VENV)/bin/python || $(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -c $(TRITON_CONSTRAINTS) --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install -q -c $(TRITON_CONSTRAINTS) $(foreach p,$(TRITON_PKGS),'$(p)')
	@touch $(TRITON_STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[torch,test]'
	@touch $(STAMP)

# MTCNN's weights ship inside the facenet-pytorch wheel; installing it would pin an old torch, so the
# wheel alone is downloaded (no dependencies) and explainer_service/alignment/mtcnn.py reads the weights
# out of it, checking its SHA-256. Nothing is downloaded at run time.
MTCNN_WHEEL := $(VENV)/share/facexplain/facenet_pytorch-2.6.0-py3-none-any.whl
detector-weights: $(MTCNN_WHEEL)

$(MTCNN_WHEEL): $(STAMP)
	$(BIN)/python -m pip download -q --no-deps facenet-pytorch==2.6.0 -d $(dir $(MTCNN_WHEEL))
	@touch $(MTCNN_WHEEL)

# Rewrites both constraints files from the installed environments (after changing a dependency).
lock:
	@{ sed -n '/^#/p' $(CONSTRAINTS); \
	   $(BIN)/python -m pip freeze --all --exclude-editable --disable-pip-version-check \
	     | sed -E 's/^torch==([^+]*)\+.*/torch==\1/'; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@{ sed -n '/^#/p' $(TRITON_CONSTRAINTS); \
	   $(TRITON_VENV)/bin/python -m pip freeze --all --disable-pip-version-check; } \
	   > $(TRITON_CONSTRAINTS).new && mv $(TRITON_CONSTRAINTS).new $(TRITON_CONSTRAINTS)

# The API's Python stubs from protos/facexplain/v1/*.proto (explainer_service/api/_gen/, not committed),
# rebuilt when a .proto or the environment (grpcio-tools) changes; __init__.py is written last.
API_PROTOS := $(wildcard protos/facexplain/v1/*.proto)
API_STUBS := explainer_service/api/_gen/__init__.py

api-stubs: $(API_STUBS)

$(API_STUBS): $(API_PROTOS) $(STAMP)
	$(BIN)/python -m explainer_service.api.generate

# Converts dlib's network to ONNX once (cached by the source file's SHA-256).
model: $(STAMP)
	$(BIN)/facexplain setup

demo: setup
	$(BIN)/python -m explainer_service.demo --out $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)

typecheck: venv api-stubs
	$(BIN)/mypy

# Lint and the type checker gate the tests.
test: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "$(TEST_MARKERS)" $(PYTEST_ARGS)

# What the service survives (docs/reliability.md): faults, load, bad input; real processes, ~10 min.
test-reliability: setup
	$(BIN)/python -m pytest -m reliability tests/reliability $(PYTEST_ARGS)

# The dashboard in a real headless Chromium (tests/browser; ~2 min): the stack up, a pair explained,
# an audit run, screenshots into docs/screenshots/. Chromium is Debian's package (installed here when
# we are root; never a browser download); FACEXPLAIN_REQUIRE_BROWSER makes its absence a failure.
test-browser: setup
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make test-browser: the chromium browser is missing; install Debian's package as root" \
	         "(sudo apt-get install -y chromium), then run make test-browser again" >&2; exit 2; \
	  fi; }
	FACEXPLAIN_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m browser tests/browser $(PYTEST_ARGS)

# Everything not marked slow or integration (no server starts); about a minute.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/bench_explain.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(DEMO_OUT) build *.egg-info explainer_service/api/_gen
