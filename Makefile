# Every target sets up what it needs in its own virtualenv (.venv), from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: test lint bench clean

$(DEV_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# PyTorch is a test/benchmark oracle only, never a dependency. Install it only where its
	@# CPU wheel is available locally (--no-index), so no multi-GB download ever starts.
	@if $(BIN)/python -m pip install --quiet --no-index --no-deps torch==2.13.0 2>/dev/null; then \
		$(BIN)/python -m pip install --quiet torch==2.13.0; \
	else \
		echo "note: no local torch==2.13.0 wheel; the PyTorch cross-checks will be skipped"; \
	fi
	touch $@

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run.py --output docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
