# make test | make demo | make bench — each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test demo bench venv clean

venv: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/ledgeradmin demo

# make bench BENCH_ARGS="--quick" (≤ 2 min) | "--only oltp" | see bench/run.py --help
bench: $(STAMP)
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis
