# One command per task; CI runs the same commands (.ci/run -> make test).
# `make demo` and `make test` work on a fresh clone: every target that needs
# tools depends on the install stamp, which builds $(VENV) from pyproject.toml.

VENV ?= .venv
PYTHON ?= python3

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The folders ruff looks at; one that does not exist yet is left out.
SOURCES := $(wildcard src tests examples scripts bench)

.DEFAULT_GOAL := test
# Checks run one after another, in the order given, even under make -j.
.NOTPARALLEL:

.PHONY: install demo lint format typecheck pytest docs test test-versions bench clean generate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# This project was installed as "messagebus" before it took its PyPI name.
	$(BIN)/python -m pip uninstall --quiet --yes messagebus 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

# The quickstart, then the allocation service end to end: a web server process
# over SQLite in a temporary folder, driven over HTTP (examples/allocation/demo.py).
demo: install
	$(BIN)/python examples/quickstart.py
	@echo
	$(BIN)/python examples/allocation/demo.py

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

format: install
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

# Files and options come from [tool.mypy]; tests/typing is checked by a test.
typecheck: install
	$(BIN)/mypy

# coverage starts before pytest, so that the modules its messagebus plugin
# imports (an entry point, loaded early) are measured too.
pytest: install
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report

# The sync attempts module is generated from the async one (a test checks it).
generate: install
	$(BIN)/python scripts/generate_sync.py

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: install
	$(MAKE) lint typecheck pytest docs

# The unit, typing and stress tests on the oldest and the newest supported Pythons found
# on this machine (pyenv's 3.10 and 3.13 here; 3.11 is the default), each in a
# virtual environment of its own. `make test-versions OTHER_PYTHONS=...` for others.
OTHER_PYTHONS ?= $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python $(HOME)/.pyenv/versions/3.13*/bin/python)

test-versions:
	@set -e; for py in $(OTHER_PYTHONS); do \
		version=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
		venv=.venv-$$version; \
		if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
			$$py -m venv $$venv; \
			$$venv/bin/python -m pip install --quiet --upgrade pip; \
			$$venv/bin/python -m pip install --quiet -e '.[dev]'; \
			touch $$venv/.installed; \
		fi; \
		echo "== Python $$version"; \
		$$venv/bin/pytest -q -p no:cacheprovider tests/unit tests/typing tests/stress; \
	done

# Benchmarks, not tests: nothing here asserts a time. The full run takes
# about 9 minutes and writes bench/results/latest.json; pass options through
# BENCH_ARGS, e.g. `make bench BENCH_ARGS=--quick` (a minute or two).
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-3.* site htmlcov dist build .coverage .coverage.* \
		.mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.git -prune -o \( -name __pycache__ -o -name "*.egg-info" \) -prune -exec rm -rf {} +
