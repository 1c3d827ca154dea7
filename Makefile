# The README's commands, plus lint, smoke, bench and docs.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install quickstart test lint smoke bench docs

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ray]'

quickstart: install
	$(VENV)/bin/rnn-tuner run studies/quickstart.yaml

test: install
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check models tuner tests benchmarks
	$(VENV)/bin/ruff format --check models tuner tests benchmarks

smoke:
	$(PY) -m pytest -m "not slow" -x -q

bench:
	$(PY) -m benchmarks

# The generated parts of the docs: key tables and JSON Schema from the code, benchmark tables from
# benchmarks/results/latest.json (tests/test_docs.py fails until these are rerun and committed).
docs:
	$(VENV)/bin/rnn-tuner schema --write-docs docs
	$(PY) -m benchmarks --table --write-docs
