# The README's two commands: `make demo` and `make test`.
# A venv is created once; a stamp file records the install so a second run does not reinstall.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned. Where pip's own settings do not already offer its CPU wheel (plain PyPI
# on Linux serves the multi-GB CUDA build), pass the PyTorch CPU index:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH := torch==2.13.0
TORCH_INDEX ?=

.PHONY: test test-fast lint typecheck pytest demo install install-local clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) $(TORCH)
	touch $@

# `make test` runs the linters and mypy too: the test extra plus the dev tools.
$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@

$(VENV)/.installed-local: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

install: $(VENV)/.installed-test
install-local: $(VENV)/.installed-local

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The fast tier: pure code (settings declarations and their skins, the CLI's contract, TOC
# parsing, dump filtering, classification rules, backup sinks), no database, seconds.
test-fast: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: $(VENV)/.installed-local
	$(BIN)/qckstrt-migrate demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
