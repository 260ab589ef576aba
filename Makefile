# Two entry points for a newcomer: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
DEMO_VENV := .venv-demo
DEMO_DIR := build/demo

.PHONY: demo test lint typecheck bench identifiers clean

# The demo's environment holds only what the job needs (no test tools).
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q --upgrade pip
	$(DEMO_VENV)/bin/pip install -q -e '.[onnxruntime]'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python -m tools.demo $(DEMO_DIR)
	mkdir -p $(DEMO_DIR)/run
	@echo "== first boot: every engine is compiled =="
	$(DEMO_VENV)/bin/engine-init --config config/demo.yaml --log-format text run
	@echo "== second boot: every engine is verified and reused =="
	$(DEMO_VENV)/bin/engine-init --config config/demo.yaml --log-format text run
	$(DEMO_VENV)/bin/engine-init --config config/demo.yaml status
	@echo "== readiness marker =="
	cat $(DEMO_DIR)/run/ready.json

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check app tests tools bench entrypoint.py

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

# Regenerate the TensorRT identifier lists from the real binding wheels (needs PyPI).
identifiers: $(VENV)/.installed
	$(VENV)/bin/python tools/trt_identifiers.py tests/backends/tensorrt/identifiers

clean:
	rm -rf build $(VENV) $(DEMO_VENV)
