# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean-lake

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: setup
	$(BIN)/meterbill demo

# two pytest workers (pytest-xdist), a file's tests on one worker: 6 min instead of 9 on 2 cores
test: setup
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: setup
	$(BIN)/python bench/run.py

clean-lake:
	rm -rf data/raw data/warehouse data/reports
