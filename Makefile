# AI Studio Export — the two commands from the README, plus helpers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8501
export AISTUDIO_WORKSPACE ?= $(CURDIR)/workspace

.PHONY: run test test-other-demo demo lint bench matrix docs docs-serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files re-install only when a requirements file changes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	-$(BIN)/opt_in_out --opt_out >/dev/null 2>&1
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

demo: $(VENV)/.runtime
	@if [ ! -d "$(AISTUDIO_WORKSPACE)/projects" ]; then $(BIN)/python -m exporter demo; fi

run: demo
	$(BIN)/streamlit run streamlit_app.py --server.address $(HOST) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# Two pytest workers, one test file each at a time (module fixtures stay on one worker): much of the suite waits
# on servers, browsers, worker processes and a Ray cluster, so two keep both cores busy. Files start in the order
# tests/conftest.py's FILE_ORDER gives (longest first), not xdist's (most tests first).
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The tests that read a trained demo model, against a demo trained with another seed on two threads (`make test`
# trains on a worker's share of the cores: one of two) — as another CPU trains it (oneDNN's kernels, hence the
# weights, differ): they must pass wherever `make test` runs.
DEMO_SEED ?= 1
DEMO_THREADS ?= 2
test-other-demo: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m demo --demo-seed $(DEMO_SEED) --demo-threads $(DEMO_THREADS)

bench: $(VENV)/.dev
	$(BIN)/python -m bench.run

matrix: $(VENV)/.dev
	$(BIN)/python -m bench.matrix

# The documentation site (docs/, mkdocs.yml): references generated from the code at build time (docs/hooks.py).
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache site
