# syntax=docker/dockerfile:1
# Images of the hub (default target) and of a fablab's job agent (--target agent).
#   docker build -t dgml .                       the API, workers and migrations (compose.yaml)
#   docker build -t dgml-agent --target agent .  the agent, with PrusaSlicer for FDM jobs
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: dgml and its dependencies in a virtual environment -----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dgml
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dgml ./dgml
COPY registry ./registry
COPY router ./router
COPY workers ./workers
RUN /opt/dgml/bin/pip install . \
    && /opt/dgml/bin/dgml --help >/dev/null

# --- runtime: what every image shares -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# Shared libraries that the geometry kernel (OpenCASCADE) and VTK load.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libgl1 libglu1-mesa libgomp1 libx11-6 libxext6 libxrender1 libxcursor1 libxft2 \
        libxinerama1 \
    && rm -rf /var/lib/apt/lists/*
# A user of its own, never root; the folders that compose.yaml mounts volumes on belong to it,
# so that new named volumes start out writable by it.
RUN groupadd --system --gid 10001 dgml \
    && useradd --system --uid 10001 --gid dgml --home-dir /var/lib/dgml \
        --shell /usr/sbin/nologin dgml \
    && install -d -o dgml -g dgml -m 0750 /var/lib/dgml /var/lib/dgml/blobs /var/lib/dgml-agent \
    && install -d -o dgml -g dgml -m 0700 /run/dgml-metrics
COPY --from=build /opt/dgml /opt/dgml
ENV PATH=/opt/dgml/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DGML_DATA_DIR=/var/lib/dgml \
    DGML_LOG_FORMAT=json

# --- agent: the job agent of a fablab, slicing with PrusaSlicer ------------------------------
FROM runtime AS agent
RUN apt-get update \
    && apt-get install -y --no-install-recommends prusa-slicer \
    && rm -rf /var/lib/apt/lists/*
USER dgml
WORKDIR /var/lib/dgml-agent
CMD ["dgml", "agent", "--config", "/etc/dgml/fablab.toml"]

# --- hub (the default target): API, workers and migrations -----------------------------------
FROM runtime AS hub
USER dgml
WORKDIR /var/lib/dgml
EXPOSE 8000
CMD ["dgml", "serve", "--host", "0.0.0.0", "--port", "8000"]
