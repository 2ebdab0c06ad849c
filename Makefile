VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup bench

setup:
	@bash scripts/setup.sh

# Generate sample videos (some deliberately broken), run the local Beam pipeline on them, print a summary.
demo: setup
	$(PY) -m avcurate.demo --workdir demo-output

# The whole test suite, on media the tests generate (one test runs the pipeline on Beam's Prism runner too).
test:
	@bash scripts/setup.sh --prism
	$(PY) -m pytest -n 2 -q

bench: setup
	$(PY) benchmarks/bench_pipeline.py
