# The README's two commands: `make demo` and `make test`.
# A venv is created once; a stamp file records the install so a second run does not reinstall.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: this is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: test lint typecheck pytest demo install install-local clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e '.[test]'
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

demo: $(VENV)/.installed-local
	$(BIN)/qckstrt-migrate demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
