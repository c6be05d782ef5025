# Two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test test-all lint typecheck pytest bench clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: $(VENV)/bin/activate pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/activate pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The frameworks tests/test_frameworks.py runs the examples under (Django, Flask, gunicorn, ...).
$(VENV)/.installed-frameworks: $(VENV)/.installed-test pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,frameworks]'
	touch $@

demo: $(VENV)/.installed-runtime
	$(PY) examples/quickstart.py

lint: $(VENV)/.installed-test
	$(PY) -m ruff check ex_loghandlers tests examples hatch_build.py

typecheck: $(VENV)/.installed-test
	$(PY) -m mypy --strict ex_loghandlers

pytest: $(VENV)/.installed-frameworks
	$(PY) -m pytest -q

test: lint typecheck pytest

# nox runs the suite on each Python 3.9-3.13 on PATH (noxfile.py) and skips those missing.
$(VENV)/.installed-nox: $(VENV)/bin/activate
	$(PY) -m pip install --quiet 'nox>=2025.5.1'
	touch $@

# pyenv's shims are on PATH but answer only for the versions selected: select every installed one.
PYENV_VERSIONS = $(shell pyenv versions --bare 2>/dev/null | paste -sd: -)

# NOX_ARGS: e.g. "-p 3.9" for one interpreter, "-- tests/test_cli.py" for some tests.
test-all: $(VENV)/.installed-nox
	PYENV_VERSION="$(PYENV_VERSIONS)$${PYENV_VERSION:+:$$PYENV_VERSION}" $(PY) -m nox $(NOX_ARGS)

bench: $(VENV)/.installed-test
	$(PY) tests/benchmarks/run.py

clean:
	rm -rf $(VENV) .nox build dist .mypy_cache .pytest_cache .ruff_cache
