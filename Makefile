# `make demo` and `make test` set up .venv on first use (pip install -r requirements.txt).
PY := .venv/bin/python

.venv/.installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

.PHONY: demo test lint bench
demo: .venv/.installed
	$(PY) study.py --demo

test: .venv/.installed
	.venv/bin/ruff check .
	$(PY) -m pytest

lint: .venv/.installed
	.venv/bin/ruff check .

bench: .venv/.installed
	$(PY) bench.py
