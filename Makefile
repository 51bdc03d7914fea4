# salesmart — the two commands are `make up` and `make test`.
# Every environment is created here; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8
DBT_VENV := .venv-dbt
BQEMU_VENV := .venv-bqemu
AIRFLOW_VENV := .venv-airflow
SERVE_VENV := .venv-serve
AIRFLOW_PORT ?= 8090
# Options of `salesmart up`, e.g. make up UP_ARGS="--port-base 9080 --rows 100000"
UP_ARGS ?=
export UV_LINK_MODE := copy
export DO_NOT_TRACK := 1

.PHONY: up test lint typecheck bench wrk install envs browser clean help airflow airflow-cli lock
help:
	@echo "make up     - start the whole local stack (Ctrl-C stops it)"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make bench  - benchmarks (writes bench/results/ and bench/RESULTS.md)"
	@echo "make airflow - a local Airflow UI for the DAG, against a running make up"
	@echo "make airflow-cli ARGS=... - Airflow's CLI on that instance (e.g. ARGS='dags list')"
	@echo "make envs   - only create the environments (.venv, .venv-dbt, .venv-bqemu, .venv-airflow)"
	@echo "make lint / make typecheck - ruff / mypy --strict alone"
	@echo "make lock   - recompile requirements/*.txt from pyproject.toml and requirements/*.in"
	@echo "make clean  - remove the environments and caches (not .salesmart/)"

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# Every environment installs from a lock file with hashes (requirements/*.txt), compiled by
# `make lock` from pyproject.toml and requirements/*.in: reproducible, tamper-evident installs.
LOCK := $(UV) pip compile -q --universal --python-version 3.11 --generate-hashes
# What the pyproject.toml environments leave out of their dependencies' asks (see the file).
OVERRIDES := --override requirements/overrides.txt

# The serving + CLI + test environment; the project itself goes in editable, without deps.
# --no-deps: the lock is complete and already resolved (with requirements/overrides.txt).
$(VENV)/.installed: pyproject.toml requirements/dev.txt | $(UV)
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python --require-hashes --no-deps -r requirements/dev.txt
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

# dbt in its own environment: dbt-bigquery pulls ~650 MB that serving never needs.
$(DBT_VENV)/.installed: requirements/dbt.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) $(DBT_VENV)
	$(UV) pip install -q --compile-bytecode --python $(DBT_VENV)/bin/python --require-hashes -r requirements/dbt.txt
	touch $@

# The local BigQuery stand-in (DuckDB-backed), also on its own.
$(BQEMU_VENV)/.installed: requirements/bqemu.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) $(BQEMU_VENV)
	$(UV) pip install -q --compile-bytecode --python $(BQEMU_VENV)/bin/python --require-hashes -r requirements/bqemu.txt
	$(BQEMU_VENV)/bin/python -c "from duckdb_extensions import import_extension; import_extension('spatial')"
	touch $@

# Airflow 3 on its own too (dags/README.md). Every version is pinned in requirements/airflow.txt
# (Airflow's constraint files are unreachable offline). Byte-compiled at install: each task
# process imports Airflow, which takes seconds more from source.
$(AIRFLOW_VENV)/.installed: requirements/airflow.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) $(AIRFLOW_VENV)
	$(UV) pip install -q --compile-bytecode --python $(AIRFLOW_VENV)/bin/python --require-hashes -r requirements/airflow.txt
	touch $@

# Re-pin every environment (after changing pyproject.toml or a requirements/*.in file).
lock: | $(UV)
	$(LOCK) $(OVERRIDES) pyproject.toml -o requirements/serve.txt
	$(LOCK) $(OVERRIDES) pyproject.toml --extra cli -o requirements/cli.txt
	$(LOCK) $(OVERRIDES) pyproject.toml --extra cli --extra dev -o requirements/dev.txt
	$(LOCK) requirements/dbt.in -o requirements/dbt.txt
	$(LOCK) requirements/bqemu.in -o requirements/bqemu.txt
	$(LOCK) requirements/airflow.in -o requirements/airflow.txt

install envs: $(VENV)/.installed $(DBT_VENV)/.installed $(BQEMU_VENV)/.installed $(AIRFLOW_VENV)/.installed

# Headless Chromium for the dashboard's browser tests (Debian package; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium'" >&2; exit 1; fi; }

# What `salesmart up` runs: serving + CLI, dbt and the BigQuery stand-in (not Airflow's 300 MB).
UP_ENVS := $(VENV)/.installed $(DBT_VENV)/.installed $(BQEMU_VENV)/.installed
up: $(UP_ENVS)
	SALESMART_MAKE_UP=1 $(BIN)/salesmart up $(UP_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

test: envs browser lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile

# A local standalone Airflow (UI on http://127.0.0.1:$(AIRFLOW_PORT)) whose tasks use the stack
# of a running `make up` in this folder (.salesmart/endpoints.json). Its state, and the login
# it prints, stay in .salesmart/airflow, readable by this user only (umask 077: `up` leaves
# .salesmart traversable for the embedded server's user when run as root).
# `make airflow-cli ARGS="tasks list transform_sales_mart"`: Airflow's CLI on that instance.
AIRFLOW_ENV = AIRFLOW_HOME=$(CURDIR)/.salesmart/airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=120 \
	AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT=150 \
	AIRFLOW__COSMOS__CACHE_DIR=$(CURDIR)/.salesmart/airflow/cosmos \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__API__BASE_URL=http://127.0.0.1:$(AIRFLOW_PORT) \
	AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$$(($(AIRFLOW_PORT) + 1)) \
	AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$$(($(AIRFLOW_PORT) + 2)) \
	SALESMART_HOME=$(CURDIR) SALESMART_STATE_DIR=$(CURDIR)/.salesmart \
	PATH=$(CURDIR)/$(AIRFLOW_VENV)/bin:$$PATH
airflow: envs
	umask 077 && mkdir -p .salesmart/airflow && chmod 700 .salesmart/airflow && \
	$(AIRFLOW_ENV) $(AIRFLOW_VENV)/bin/airflow standalone

airflow-cli: envs
	umask 077 && $(AIRFLOW_ENV) $(AIRFLOW_VENV)/bin/airflow $(ARGS)

# Load generator of the benchmarks (Debian's wrk; needs root, like `browser`).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk is missing: run 'sudo apt-get install wrk'" >&2; exit 1; fi; }

# The benchmark's function instances run from the image's packages (requirements/serve.txt,
# synced: nothing the lock dropped stays) and the checkout's code, not from .venv, whose
# test tools some libraries import if present.
$(SERVE_VENV)/.installed: pyproject.toml requirements/serve.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) $(SERVE_VENV)
	$(UV) pip sync -q --compile-bytecode --python $(SERVE_VENV)/bin/python --require-hashes requirements/serve.txt
	$(UV) pip install -q --python $(SERVE_VENV)/bin/python --no-deps -e .
	touch $@

# Not part of `make test`: minutes of load; run it on a quiet machine. BENCH_ARGS=--help.
bench: envs wrk $(SERVE_VENV)/.installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DBT_VENV) $(BQEMU_VENV) $(AIRFLOW_VENV) $(SERVE_VENV) .mypy_cache .ruff_cache .pytest_cache dbt/target dbt/logs
