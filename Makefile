# Every target sets up what it needs in its own virtualenv (.venv), from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: test test-slow test-oracles lint bench demo data clean docs dist platforms

# Where `make demo` keeps its checkpoints and TensorBoard logs; run it again to resume.
DEMO_WORKDIR ?= runs/mnist

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
	$(BIN)/mypy

# The quick tier: every test not marked slow (the contributor's edit-test loop), on every core.
test: lint
	$(BIN)/python -m pytest -m "not slow" -n auto

# The complete tier that CI runs after `make test`: the end-to-end tests marked slow (kill
# campaigns, real data, platform resolution) and, of each oracle's campaign of generated cases,
# the slice the commit chooses (FLAX_CYCLIC_ORACLE_SEED=<key> chooses another; the run's summary
# names the key it used).
test-slow: $(DEV_STAMP)
	$(BIN)/python -m pytest -m slow --durations=10 $(addprefix --ignore=,$(ORACLES))
	$(BIN)/python -m pytest -m slow -n auto --durations=10 $(ORACLES)

# Every case of every oracle's campaign (the quick tier's, and all the slices): about 25 minutes
# on two cores. Run it after a change to the loop, or to what an oracle generates.
test-oracles: $(DEV_STAMP)
	FLAX_CYCLIC_ORACLE_CAMPAIGN=full $(BIN)/python -m pytest -n auto $(ORACLES)

# The generative oracles: independent generated cases, run in parallel. A third joins the list
# when its file exists.
ORACLES := tests/test_oracle_resume.py tests/test_oracle_applied.py \
	$(wildcard tests/test_oracle_hooks.py)

# The MNIST example on Fashion-MNIST: a few minutes on two CPU cores. The data come from
# examples/mnist's search (data_dir, cache, download); offline, as root on Debian or Ubuntu,
# `make data` installs Debian's dataset-fashion-mnist package.
demo: $(DEV_STAMP)
	@$(BIN)/python examples/mnist/input_pipeline.py fashion_mnist || $(MAKE) --no-print-directory data
	TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 $(BIN)/python examples/mnist/main.py \
		--workdir=$(DEMO_WORKDIR) --config=examples/mnist/configs/default.py --verbosity=-1

data:
	@if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
		echo "Fashion-MNIST: Debian's dataset-fashion-mnist is installed."; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist with apt-get."; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null \
		|| (apt-get update -q >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	else \
		echo "Fashion-MNIST: not found, and no apt-get to install Debian's package here. The"; \
		echo "example downloads the four files itself where a network exists (into"; \
		echo "\$$FLAX_CYCLIC_DATA or ~/.cache/flax_cyclic/datasets/fashion_mnist, each checked"; \
		echo "against its SHA-256): run 'make demo' online, or put the IDX files in a directory"; \
		echo "and pass --config.data_dir=DIR to examples/mnist/main.py."; \
		exit 1; \
	fi

# The documentation site (mkdocs-material + mkdocstrings), built strictly into site/.
docs: $(DEV_STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

# Redraws the figures of the docs that the code draws (docs/images: the scheduler curves and the
# LR range test) with the installed matplotlib. tests/test_docs_plots.py fails when the committed
# ones no longer look like what the code draws; the site build draws its own, outside docs/.
.PHONY: figures
figures: $(DEV_STAMP)
	$(BIN)/python docs/tools/plot_schedules.py --output docs/images
	$(BIN)/python docs/tools/plot_lr_find.py --output docs/images

# A wheel and an sdist in dist/, checked by twine.
dist: $(DEV_STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# Every extra resolves to wheels on macOS arm64, Linux aarch64 and Linux x86_64 (needs the
# package index; reads metadata only, installs nothing).
platforms: $(DEV_STAMP)
	$(BIN)/python .ci/check_platforms.py

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run.py --output docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache runs dist build
