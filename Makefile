# `make demo` and `make test` work on a fresh machine: each creates .venv and installs first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install docs bench clean

$(BIN)/segflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/segflow

demo: install
	$(BIN)/segflow demo --out demo_results

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

# The speed suite: segflow against plain MONAI / PyTorch on this machine (bench/README.md).
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS=--quick
bench: install
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

docs: install
	$(BIN)/segflow reference > docs/config-reference.md

clean:
	rm -rf $(VENV) demo_results .pytest_cache
