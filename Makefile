# Two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test lint typecheck pytest bench clean

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
	$(PY) -m ruff check ex_loghandlers tests examples

typecheck: $(VENV)/.installed-test
	$(PY) -m mypy --strict ex_loghandlers

pytest: $(VENV)/.installed-frameworks
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(VENV)/.installed-test
	$(PY) tests/benchmarks/run.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
