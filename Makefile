# The README's commands, plus lint, smoke and bench.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install quickstart test lint smoke bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'

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
