# `make demo` and `make test` work on a fresh clone: they create .venv/ and install the project.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The local CPU build; a bare `torch` requirement would pull several GB of CUDA packages.
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install browser demo lint test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/digit-search run --space cnn --trials 6 --epochs 3
	$(BIN)/digit-search run --space vit --trials 6 --epochs 3

# Headless Chromium for the report/dashboard browser tests (they skip, saying why, without it).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || echo "could not install chromium: browser tests will be skipped"

# ruff's lint and format rules are in pyproject.toml; `ruff format .` fixes what `lint` finds unformatted.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) browser lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
