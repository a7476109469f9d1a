# Two entry points for a fresh machine with only Python 3.11:
#   make quickstart   -> creates .venv, installs qfactory, runs the quickstart pipeline
#   make test         -> creates .venv, installs qfactory + test deps + the ray extra (its tests start a
#                        local Ray instance), runs the test suite
PYTHON ?= python3
VENV   ?= .venv
# CPU torch by default. GPU users: `make TORCH_SPEC='torch' ...` after pointing pip at their CUDA
# index, or install torch into .venv first — an installed torch>=2.2 is kept as it is.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup quickstart lint test clean

$(BIN)/qfactory: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# The test suite also runs --backend ray for real: the extra goes into the same venv.
$(BIN)/.ray-extra: $(BIN)/qfactory
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	@touch $@

setup: $(BIN)/qfactory

quickstart: setup
	$(BIN)/qfactory run --recipe recipes/quickstart.toml

# Lint first (seconds): the formatter and linter configured in pyproject.toml's [tool.ruff].
lint: setup
	$(BIN)/ruff check quant_cli tests benchmarks
	$(BIN)/ruff format --check quant_cli tests benchmarks

test: setup $(BIN)/.ray-extra lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
