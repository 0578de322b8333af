# The README's commands. Everything runs from a project-local virtualenv in .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
SAMPLE_PROFILE ?= demo
MIRROR := $(DATA_DIR)/mirror/$(SAMPLE_PROFILE)
DAGSTER_PORT ?= 3000

export DAGSTER_HOME ?= $(DATA_DIR)/dagster_home
export CINE_DATA_DIR ?= $(DATA_DIR)

.PHONY: install test lint demo sample ingest ui clean

# Create the virtualenv and install the locked dependencies (re-runs only when the lock changes).
install: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $@

# Run the test suite (what CI runs).
test: install
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $@

# Generate the sample mirror (IMDb dumps + MovieLens zip in the official formats).
sample: install
	test -f $(MIRROR)/movielens/ml-latest-small.zip.md5 || \
		$(BIN)/python -m recommender_lib.sample_data --profile $(SAMPLE_PROFILE) --out $(MIRROR)

# Materialize raw + warehouse assets (with their checks) from the sample mirror.
ingest: sample $(DAGSTER_HOME)/dagster.yaml
	CINE_IMDB_BASE_URL=file://$(MIRROR)/imdb \
	CINE_MOVIELENS_URL=file://$(MIRROR)/movielens/ml-latest-small.zip \
		$(BIN)/dagster job execute -m orchestration.definitions -j ingest

# The main command: sample data, ingest, then the Dagster UI on http://127.0.0.1:$(DAGSTER_PORT).
demo: ingest
	@echo "Dagster UI: http://127.0.0.1:$(DAGSTER_PORT)  (DAGSTER_HOME=$(DAGSTER_HOME))"
	CINE_IMDB_BASE_URL=file://$(MIRROR)/imdb \
	CINE_MOVIELENS_URL=file://$(MIRROR)/movielens/ml-latest-small.zip \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

clean:
	rm -rf $(DATA_DIR)
