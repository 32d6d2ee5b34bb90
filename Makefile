# `make demo` and `make test` set up .venv on first use (pip install -r requirements.txt).
PY := .venv/bin/python

.venv/.installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

.PHONY: demo test lint bench
demo: .venv/.installed
	$(PY) train_autoencoder.py --demo
	$(PY) train_fusion.py --demo
	$(PY) train_end_to_end.py --demo
	$(PY) compare_training_approaches.py --demo

test: .venv/.installed
	.venv/bin/ruff check .
	$(PY) -m pytest

lint: .venv/.installed
	.venv/bin/ruff check .

bench: .venv/.installed
	$(PY) bench.py
