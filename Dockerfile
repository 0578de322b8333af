# One image for every Python service of docker-compose.yml: the Dagster code server, webserver
# and daemon, the MLflow server and the serving API (each service picks its command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CINE_DATA_DIR=/opt/cine/data

RUN python -m pip install "uv==0.13.9"

WORKDIR /opt/cine/app

# The locked dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN uv pip install --system --no-cache -r requirements.lock

# Then the project itself, without resolving anything again.
COPY pyproject.toml README.md ./
COPY recommender_lib ./recommender_lib
COPY orchestration ./orchestration
COPY serving ./serving
RUN uv pip install --system --no-cache --no-deps . \
    && rm -rf build ./*.egg-info

# Dagster instance on Postgres, and the workspace that points the webserver/daemon at the
# code server. Data, Dagster storage and MLflow artifacts live on named volumes mounted on
# these folders, which a non-root user owns.
COPY docker/workspace.docker.yaml ./workspace.docker.yaml
COPY docker/dagster.postgres.yaml ${DAGSTER_HOME}/dagster.yaml
RUN useradd --create-home --uid 10001 --user-group cine \
    && mkdir -p "${DAGSTER_HOME}/storage" "${CINE_DATA_DIR}" /mlartifacts \
    && chown -R cine:cine "${DAGSTER_HOME}" "${CINE_DATA_DIR}" /mlartifacts

USER cine

EXPOSE 3000 4000 5000 8000

CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "orchestration.definitions"]
