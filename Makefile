# `make demo` and `make test` set up .venv on first use (pip install -r requirements.txt).
PY := .venv/bin/python

.venv/.installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

# The GPU check needs no .venv: a GPU machine's own python with torch runs it (PYTHON=... to choose).
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: demo test lint bench gpu-check
demo: .venv/.installed
	$(PY) study.py --demo

test: .venv/.installed
	.venv/bin/ruff check .
	$(PY) -m pytest --durations=15

lint: .venv/.installed
	.venv/bin/ruff check .

bench: .venv/.installed
	$(PY) bench.py

# make gpu-check [DRY=1] [DATA=DIR]: validates a GPU machine in under 8 minutes (docs/gpu.md)
gpu-check:
	$(PYTHON) -m checks.gpu_check $(if $(DRY),--dry-run) $(if $(DATA),--data=$(DATA))
