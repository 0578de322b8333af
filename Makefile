# The README's commands. Everything runs from a project-local virtualenv in .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
SAMPLE_PROFILE ?= demo
MIRROR := $(DATA_DIR)/mirror/$(SAMPLE_PROFILE)
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
API_PORT ?= 8000
API_WORKERS ?= 1

export DAGSTER_HOME ?= $(DATA_DIR)/dagster_home
export CINE_DATA_DIR ?= $(DATA_DIR)

export MLFLOW_TRACKING_URI ?= sqlite:///$(DATA_DIR)/mlflow/mlflow.db
SAMPLE_URLS := CINE_IMDB_BASE_URL=file://$(MIRROR)/imdb \
	CINE_MOVIELENS_URL=file://$(MIRROR)/movielens/ml-latest-small.zip

.PHONY: install test lint demo sample ingest platform serve models clean rebuild-warehouse screenshots

# Create the virtualenv and install the locked dependencies (re-runs only when the lock changes).
install: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $@

# Run the test suite (what CI runs).
test: install
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

# Style and types: ruff, and mypy on recommender_lib and serving (what CI runs first).
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $@

# Generate the sample mirror (IMDb dumps + MovieLens zip in the official formats).
sample: install
	test -f $(MIRROR)/movielens/ml-latest-small.zip.md5 || \
		$(BIN)/python -m recommender_lib.sources.sample_data --profile $(SAMPLE_PROFILE) --out $(MIRROR)

# Materialize raw + warehouse assets (with their checks) from the sample mirror.
ingest: sample $(DAGSTER_HOME)/dagster.yaml
	$(SAMPLE_URLS) $(BIN)/dagster job execute -m orchestration.definitions -j ingest

# Rebuild the warehouse tables and features from the raw versions already fetched (no download).
# An unreadable warehouse file is moved aside as <file>.broken-<UTC time> first; FORCE=1 moves a
# readable one aside too. Nothing is deleted.
WAREHOUSE_PATH ?= $(or $(CINE_WAREHOUSE_PATH),$(DATA_DIR)/warehouse/cine_reco.duckdb)
rebuild-warehouse: install $(DAGSTER_HOME)/dagster.yaml
	$(if $(FORCE),$(BIN)/python -m recommender_lib.warehouse.storage set-aside $(WAREHOUSE_PATH))
	$(BIN)/dagster job execute -m orchestration.definitions -j rebuild_warehouse

# Every asset: ingest, features, the model and its evaluation, the serving bundle registered in
# MLflow, and the `champion` alias moved to it when the promotion checks pass.
platform: sample $(DAGSTER_HOME)/dagster.yaml
	$(SAMPLE_URLS) $(BIN)/dagster job execute -m orchestration.definitions -j full_refresh

# The serving API alone: follows `models:/cine-reco@champion` in the MLflow store.
serve: install
	OPENBLAS_NUM_THREADS=1 $(BIN)/uvicorn serving.app:app --host 127.0.0.1 --port $(API_PORT) --workers $(API_WORKERS) --no-access-log

# Registered model versions, the champion and the promotion log (see README for promote/rollback).
models: install
	$(BIN)/python -m recommender_lib.registry list
	$(BIN)/python -m recommender_lib.registry log

# The main command: sample data, a full run, then the Dagster UI, the MLflow UI and the API.
demo: platform
	@echo "Dagster UI: http://127.0.0.1:$(DAGSTER_PORT)   MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)   API + page: http://127.0.0.1:$(API_PORT)  (docs: /docs)"
	$(BIN)/mlflow server --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 \
		--port $(MLFLOW_PORT) > $(DATA_DIR)/mlflow/server.log 2>&1 & mlflow_pid=$$!; \
	OPENBLAS_NUM_THREADS=1 $(BIN)/uvicorn serving.app:app --host 127.0.0.1 --port $(API_PORT) \
		--workers $(API_WORKERS) --no-access-log > $(DATA_DIR)/api.log 2>&1 & api_pid=$$!; \
	trap 'kill $$mlflow_pid $$api_pid' EXIT; \
	$(SAMPLE_URLS) CINE_SENSOR_INTERVAL_S=60 \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

# PNGs of the try-it page's scripted demo (English, French, German on a narrow window) in
# docs/screenshots, from a tiny bundle trained on the sample data (BUNDLE=<bundle dir> to show
# another); needs Chromium on PATH.
screenshots: install
	$(BIN)/python scripts/page_screenshots.py --out docs/screenshots $(if $(BUNDLE),--bundle $(BUNDLE))

clean:
	rm -rf $(DATA_DIR)
