# facexplain: `make demo` and `make test` set everything up (idempotent), then run.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded Triton lives in its own environment: nvidia-pytriton pins numpy<2.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
TRITON_PKGS := nvidia-pytriton==0.7.0 onnxruntime>=1.17
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: setup venv triton-env model demo test test-fast bench clean

setup: venv triton-env model

venv: $(STAMP)

triton-env: $(TRITON_STAMP)

$(TRITON_STAMP): Makefile
	@test -x $(TRITON_VENV)/bin/python || $(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install -q $(foreach p,$(TRITON_PKGS),'$(p)')
	@touch $(TRITON_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[torch,test]'
	@touch $(STAMP)

# Converts dlib's network to ONNX once (cached by the source file's SHA-256).
model: $(STAMP)
	$(BIN)/facexplain setup

demo: setup
	$(BIN)/python -m explainer_service.demo --out $(DEMO_OUT)

test: setup
	$(BIN)/ruff check explainer_service tests bench tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/bench_explain.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(DEMO_OUT) build *.egg-info
