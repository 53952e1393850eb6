# The Makefile, the pre-stop hook and CI run the same commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WS ?= workspace
export TASTEMAKER_WORKSPACE ?= $(WS)

.PHONY: install demo pipeline serve test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	# torch in the same pip command as the project: pip alone would pull a multi-GB CUDA build.
	# Keep the interpreter's own pip: newer pips resolve torch==2.13.0 to the CUDA wheel.
	$(BIN)/pip install --quiet torch==2.13.0 -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## the whole pipeline on the embedded default world, then the API
demo: install
	TASTEMAKER_DEMO=1 $(BIN)/tastemaker demo

pipeline: install
	TASTEMAKER_DEMO=1 $(BIN)/tastemaker demo --no-serve

serve: install
	TASTEMAKER_DEMO=1 $(BIN)/tastemaker serve

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint deploy/Containerfile

bench: install
	TASTEMAKER_DEMO=1 $(BIN)/python -m benchmarks.run

clean:
	rm -rf $(WS)
