# The Makefile, the pre-stop hook and CI run the same commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WS ?= workspace
export TASTEMAKER_WORKSPACE ?= $(WS)

.PHONY: install demo pipeline serve test test-fast lint bench clean check-java

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
	@$(MAKE) -s check-java || echo "note: without Java the Spark tests skip (fail under .ci/run)" >&2
	$(BIN)/pytest -q

## the Spark feature engine (tastemaker features --engine spark) and its tests need Java 17;
## the local engine and `make demo` do not
check-java:
	@command -v java >/dev/null 2>&1 || { echo "Java not found: the Spark feature engine needs Java 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@java -version 2>&1 | head -1

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
