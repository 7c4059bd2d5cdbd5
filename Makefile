# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean-lake

setup: $(VENV)/.installed

# The venv's bundled pip (any version) installs only the pinned, hash-checked installer
# (requirements-bootstrap.lock); that pip installs the lock; the project itself is built
# without build isolation, with the pinned setuptools, so nothing unpinned is ever fetched.
$(VENV)/.installed: requirements-bootstrap.lock requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-bootstrap.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
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
