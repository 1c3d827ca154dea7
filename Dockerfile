# rnn-tuner images, one stage per docker-compose.yml service (see docs/team.md):
#   worker (the default, last stage)  rnn-tuner itself: `rnn-tuner run studies/quickstart.yaml`
#   mlflow                            the MLflow tracking server, with logins and PostgreSQL support
#   dashboard                         optuna-dashboard, with PostgreSQL support
#
#   docker compose build                                   # all three, as compose uses them
#   docker build -t rnn-tuner .                            # the worker alone
#
# Versions are pinned to the ones the tests run (tests/test_compose.py checks they match), so the
# dashboard reads the study database with the same Optuna that wrote it.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# One unprivileged user for every stage (USER by number: Kubernetes' runAsNonRoot needs it); /app and /mlartifacts belong to it so that a named
# volume mounted there starts out writable (Docker copies the owner into a new volume).
RUN useradd --create-home --uid 10001 tuner \
    && mkdir /app /mlartifacts \
    && chown tuner:tuner /app /mlartifacts
WORKDIR /app


FROM base AS mlflow
# [auth]: the basic-auth app (`mlflow server --app-name basic-auth`) the stack runs;
# psycopg: the driver behind postgresql:// and postgresql+psycopg:// backend store URLs
RUN pip install "mlflow[auth]==3.17.2" "psycopg[binary]==3.3.9"
USER 10001
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1"]


FROM base AS dashboard
RUN pip install optuna==5.1.0 optuna-dashboard==0.21.0 "psycopg[binary]==3.3.9"
USER 10001
EXPOSE 8080
CMD ["optuna-dashboard", "--host", "0.0.0.0", "--port", "8080", "sqlite:///optuna.db"]


FROM base AS worker
# The pinned CPU build first: resolved from PyPI, torch would pull a CUDA build of several GB.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY models ./models
COPY tuner ./tuner
RUN pip install optuna==5.1.0 .
COPY studies ./studies
USER 10001
CMD ["rnn-tuner", "run", "studies/quickstart.yaml"]
