# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs memprof, profiles the bundled example
#   make test   creates .venv, installs memprof with its dev tools, runs lint, types and the fast tier
# `make test-slow` runs the slow tier (whole scripts, benchmark smoke runs, the C++ op hook's build);
# CI (.ci/run) runs both.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_INTEGRATIONS := $(VENV)/.installed-integrations

.PHONY: demo test test-slow lint typecheck pytest cases readme-sample clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/memprof run --budget 40MiB --json demo-report.json --html demo-report.html examples/train_mlp.py

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# The frameworks the integrations' tests drive (IPython, TensorBoard, Lightning, transformers, Ray)
# are installed for the slow tier only: the fast tier skips those tests where they are missing.
$(STAMP_INTEGRATIONS): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,integrations]'
	touch $(STAMP_INTEGRATIONS)

test-slow: $(STAMP_INTEGRATIONS)
	$(BIN)/python -m pytest -q -m slow

cases: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python ../shared/tools/score_cases.py ../shared/cases

# The README's sample output, rewritten from a real run of its command (run it after changing the summary).
readme-sample: $(STAMP)
	$(BIN)/python benchmarks/readme_sample.py

clean:
	rm -rf $(VENV) build *.egg-info demo-report.json demo-report.html
