# Common tasks. `make install` first on a fresh machine (CPU torch from local disk, then the project).
PY ?= python

.PHONY: install test test-full train lint format bench clean

install:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"

# Fast tests plus real-data smoke tests; what CI runs.
test:
	$(PY) -m pytest -q

# Everything, including tests marked slow (real weights, minutes of CPU).
test-full:
	$(PY) -m pytest -q -m ""

# The main job on the embedded default (WNUT-17, all-MiniLM-L6-v2). Extra overrides: make train ARGS="..."
train:
	$(PY) -m experiments task=ner $(ARGS)

lint:
	$(PY) -m ruff check src tests

format:
	$(PY) -m ruff format src tests

clean:
	rm -rf build dist outputs multirun .pytest_cache
