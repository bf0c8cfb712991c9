# Common tasks. `make install` first on a fresh machine (CPU torch from local disk, then the project).
PY ?= python

.PHONY: install test test-full train lint format bench bench-fewshot clean baselines sweep results

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

# A pinned paper baseline over its seeds, then the table against the paper (outputs/baselines/<name>/).
# make baselines BASELINE=ner_conll2003_minilm [ARGS="--seeds 1 2 -- trainer.max_epochs=1"]
baselines:
	$(PY) -m experiments.baselines $(BASELINE) $(ARGS)

# A W&B sweep file run here, without the W&B server (outputs/sweeps/<name>/; rerun to resume).
# make sweep SWEEP=sweeps/ner_bayes.yaml COUNT=20 [ARGS="-- dataset=conll2003"]
sweep:
	$(PY) -m experiments.sweep $(SWEEP) $(if $(COUNT),--count $(COUNT)) $(ARGS)

# Speed against Hugging Face's Trainer (default and tuned) and a bare loop, in one run (docs/performance.md).
bench:
	$(PY) benchmarks/bench.py $(ARGS)
	$(PY) benchmarks/levers.py

# Few-shot: the setfit library against finetune=setfit / full / full+EDA on the same K-shot draws (docs/results.md).
# make bench-fewshot [ARGS="--datasets phrasebank --k 8 --seeds 1 2 3"]
bench-fewshot:
	$(PY) benchmarks/fewshot.py $(ARGS)

# The evidence tables of docs/results.md (benchmarks/results.yaml), one run at a time, resumable.
# make results [ARGS="--only strategies_phrasebank" | ARGS="--plan" | ARGS="--tables-only"]
results:
	$(PY) benchmarks/results.py $(ARGS)

lint:
	$(PY) -m ruff check src tests

format:
	$(PY) -m ruff format src tests

clean:
	rm -rf build dist outputs multirun .pytest_cache
