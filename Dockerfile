# syntax=docker/dockerfile:1
# One image serves any of the four functions; FUNCTION_TARGET picks which.
#
#   docker build -t salesmart .                              # the functions (default target)
#   docker run --rm -p 8080:8080 -e FUNCTION_TARGET=trends_pg -e SALESMART_DATABASE_URL=... salesmart
#   docker build --target cli -t salesmart-cli .             # + the `salesmart` command (migration Job)
#   docker build --target airflow -t salesmart-airflow .     # Airflow with the DAGs, dbt project and dbt
#
# The serving image installs only [project].dependencies (no dbt, no Airflow, no embedded
# PostgreSQL). The `cli` target adds the `cli` extra on top of the same code, so the migration
# Job runs exactly the release's migrations while the functions stay lean.

ARG PYTHON_VERSION=3.11
ARG AIRFLOW_VERSION=3.3.2

# ---- wheels of the project and its dependencies; build tools never reach a runtime image
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/serve.txt requirements/cli.txt ./requirements/
# Dependencies come from the hash-pinned lock files (make lock): reproducible, tamper-evident.
# Each lock is complete and already resolved (with requirements/overrides.txt, which pip
# cannot read), so nothing is resolved again here or at install: --no-deps.
RUN pip wheel --no-deps --require-hashes --wheel-dir /wheels/serve -r requirements/serve.txt \
 && pip wheel --no-deps --require-hashes --wheel-dir /wheels/cli -r requirements/cli.txt
COPY pyproject.toml README.md ./
COPY common ./common
COPY pipeline ./pipeline
RUN pip wheel --no-deps --wheel-dir /wheels/serve . \
 && pip wheel --no-deps --wheel-dir /wheels/cli .

# ---- shared runtime: non-root user, function sources, default pipeline configuration
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 salesmart \
 && useradd --system --uid 10001 --gid salesmart --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin salesmart
WORKDIR /app
COPY --chmod=0755 deploy/entrypoint.sh deploy/entrypoint.sh
COPY functions functions
COPY data/pipeline_config.yaml data/pipeline_config.yaml
# The chart mounts its ConfigMap elsewhere and overrides this.
ENV SALESMART_CONFIG=/app/data/pipeline_config.yaml

# ---- the migration Job's image: the serving code plus the `salesmart` command
FROM runtime AS cli
RUN --mount=type=bind,from=build,source=/wheels/cli,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl
USER 10001:10001
ENTRYPOINT ["salesmart"]
CMD ["--help"]

# ---- Airflow (official image) running this project's DAGs and dbt project
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow
ARG AIRFLOW_VERSION
ENV DO_NOT_TRACK=1
# One environment per tool, as in a checkout (.venv, .venv-dbt, .venv-airflow; dags/README.md):
# dbt's and the warehouse clients' pins conflict with Airflow's, and the DAG runs both as
# commands. dbt from its lock; salesmart from the same wheels as the `cli` image.
COPY requirements/dbt.txt /opt/airflow/salesmart/requirements-dbt.txt
RUN python -m venv /opt/airflow/dbt-venv \
 && /opt/airflow/dbt-venv/bin/pip install --no-cache-dir --require-hashes \
        -r /opt/airflow/salesmart/requirements-dbt.txt
RUN --mount=type=bind,from=build,source=/wheels/cli,target=/wheels \
    python -m venv /opt/airflow/salesmart-venv \
 && /opt/airflow/salesmart-venv/bin/pip install --no-cache-dir --no-index --no-deps /wheels/*.whl
# Airflow and cosmos from the hash-pinned lock of .venv-airflow (make lock), which pins
# apache-airflow==${AIRFLOW_VERSION} (a test checks): the base image's Airflow stays, and what
# cosmos brings is the version the tests ran with.
COPY requirements/airflow.txt /opt/airflow/salesmart/requirements-airflow.txt
RUN pip install --no-cache-dir --require-hashes -r /opt/airflow/salesmart/requirements-airflow.txt
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 dbt /opt/airflow/salesmart/dbt
COPY --chown=airflow:0 data/pipeline_config.yaml /opt/airflow/salesmart/data/pipeline_config.yaml
# What the DAG and `salesmart` read to find them (dags/README.md, "in an image with another
# layout"); state (dbt's target folders, the GCS download cache) in a writable place.
ENV SALESMART_HOME=/opt/airflow/salesmart \
    SALESMART_BIN_DIR=/opt/airflow/salesmart-venv/bin \
    SALESMART_DBT=/opt/airflow/dbt-venv/bin/dbt \
    SALESMART_CONFIG=/opt/airflow/salesmart/data/pipeline_config.yaml \
    SALESMART_STATE_DIR=/tmp/salesmart

# ---- the functions (default target; keep it last)
FROM runtime AS serve
RUN --mount=type=bind,from=build,source=/wheels/serve,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl \
 && python -c "from common.dashboard import compile_templates; compile_templates()"
# ^ the dashboard's compiled templates, like pip's .pyc files: not redone at each cold start.
# gunicorn under functions-framework: WORKERS x THREADS requests at once. THREADS is the
# chart's default containerConcurrency (8) plus one, so health probes never wait behind
# requests; the chart sets all three per function.
ENV PORT=8080 \
    WORKERS=1 \
    THREADS=9 \
    CLOUD_RUN_TIMEOUT_SECONDS=300
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
