# The two set-up commands of README.md: `make demo` (the main job end to end) and
# `make test` (the test suite, which .ci/run calls). Each builds .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/pip check
	touch $(STAMP)

# Local ParameterServerStrategy cluster on real MNIST, export, serve, predict over gRPC.
demo: $(STAMP)
	$(BIN)/python demo.py

# One line per test, written when it starts, so that a slow multi-process test
# shows its name while it runs; the slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest -v -o console_output_style=count --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
