# The two commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/motia-py dev --project .

# The tests run in two processes (most of them wait on subprocesses), a file's tests together in one
# (`--dist loadfile`); then those marked `serial` (latency measurements) run alone.
# One test: .venv/bin/python -m pytest tests/FILE.py::NAME (under the two scripts for a server test).
test: $(STAMP)
	$(VENV)/bin/ruff check framework tests bench steps
	$(VENV)/bin/mypy
	bash scripts/with-redis.sh bash scripts/with-postgres.sh sh -c \
	  '$(PY) -m pytest -q -n 2 --dist loadfile -m "not serial" && $(PY) -m pytest -q -m serial'

lint: $(STAMP)
	$(VENV)/bin/ruff check framework tests bench steps
	$(VENV)/bin/mypy

bench: $(STAMP)
	bash scripts/with-redis.sh bash scripts/with-postgres.sh $(PY) -m bench

clean:
	rm -rf $(VENV) .motia .pytest_cache .mypy_cache .ruff_cache
