# syntax=docker/dockerfile:1
# monoq's container image: one image for every role (api, worker, scheduler, or all of them).
#
#   docker build -t monoq:0.1.0 .
#   docker run --rm -p 8080:8080 -e MONOQ_API_TOKENS='[{"name":"ci","scope":"admin","sha256":"…"}]' monoq:0.1.0
#
# Stage 1 builds the monoq wheel and the wheels of its dependencies; stage 2 installs them
# from that folder alone (no index), so the final image holds no compiler, no build tool and
# no source tree. Tests, CI and the deployment files check this file: tests/deploy.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
# monoq/backends and monoq/plugins are symlinks to ../backends and ../plugins.
COPY pyproject.toml README.md ./
COPY backends ./backends
COPY plugins ./plugins
COPY monoq ./monoq
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG MONOQ_UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    MONOQ_CONFIG=/etc/monoq/config.toml
# git: the git job kinds run the real binary. tini: PID 1 that forwards SIGTERM to monoq (which
# drains) and reaps the processes git leaves behind.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "${MONOQ_UID}" monoq \
    && useradd --system --uid "${MONOQ_UID}" --gid monoq --home-dir /var/lib/monoq \
       --shell /usr/sbin/nologin monoq \
    && install -d -o monoq -g monoq -m 0750 /var/lib/monoq
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/monoq-*.whl
# The default configuration: SQLite in /var/lib/monoq, the API on 0.0.0.0:8080, which monoq
# refuses to serve without tokens. Mount your own file over it, or point MONOQ_CONFIG elsewhere.
COPY deploy/docker/config.toml /etc/monoq/config.toml
COPY deploy/docker/healthcheck.py /usr/local/lib/monoq/healthcheck.py
# Relative paths in the config (the SQLite file, processed.log, git-repos) land here.
WORKDIR /var/lib/monoq
USER ${MONOQ_UID}:${MONOQ_UID}
EXPOSE 8080
# GET /healthz of the api role; a process without the api role (MONOQ_MONOQ_ROLES=worker)
# probes /healthz of its health listener when MONOQ_MONOQ_HEALTH_PORT is set, and otherwise
# runs `monoq doctor` (the backend answers; says nothing of this process's roles).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/lib/monoq/healthcheck.py"]
ENTRYPOINT ["/usr/bin/tini", "--", "monoq"]
CMD ["run"]
