# Two commands on a fresh machine: `make demo` and `make test`. Each installs what is missing.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test check system-deps venv bench clean fixtures

system-deps:
	bash scripts/install-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The static checks make test runs first: layer contracts, types, lint.
check: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --strict ocipush
	$(VENV)/bin/ruff check ocipush tests bench scripts

test: system-deps venv check
	$(VENV)/bin/pytest -q

demo: system-deps venv
	$(PY) scripts/demo.py

bench: system-deps venv
	$(PY) bench/push_bench.py

fixtures:
	bash fixtures/make-fixtures.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
