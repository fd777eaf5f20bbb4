# syntax=docker/dockerfile:1
# The tocsin worker image: `docker build -t tocsin .` then `docker run tocsin` runs `tocsin worker`.
# Configure it with the same environment variables as any tocsin process (tocsin/settings.py):
# TOCSIN_DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TOCSIN_TASK_QUEUE, TOCSIN_METRICS_BIND, ...
# Temporal Cloud or a TLS cluster: the SDK's TEMPORAL_API_KEY, TEMPORAL_TLS_CLIENT_CERT_PATH/_KEY_PATH,
# TEMPORAL_TLS_SERVER_CA_CERT_PATH (or their *_DATA twins), or TEMPORAL_CONFIG_FILE + TEMPORAL_PROFILE (README).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install tocsin and its runtime dependencies into a virtualenv (no dev extras) ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tocsin
WORKDIR /src
# .dockerignore lets in only what the package is built from.
COPY . .
# "otel" adds OpenTelemetry tracing (off unless TOCSIN_OTEL_TRACING=true); build with
# --build-arg TOCSIN_EXTRAS= for the bare package.
ARG TOCSIN_EXTRAS=otel
RUN /opt/tocsin/bin/pip install ".${TOCSIN_EXTRAS:+[$TOCSIN_EXTRAS]}" \
    && /opt/tocsin/bin/tocsin --help > /dev/null

# --- runtime: the virtualenv only, run by an unprivileged user ---------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/tocsin/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOCSIN_METRICS_BIND=0.0.0.0:9464
RUN groupadd --system --gid 10001 tocsin \
    && useradd --system --uid 10001 --gid tocsin --create-home --home-dir /home/tocsin tocsin
COPY --from=build /opt/tocsin /opt/tocsin
USER tocsin:tocsin
WORKDIR /home/tocsin
# The Temporal SDK's Prometheus metrics (GET /metrics).
EXPOSE 9464
# Healthy while the metrics endpoint answers (always healthy when TOCSIN_METRICS_BIND is unset).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; bind = os.environ.get('TOCSIN_METRICS_BIND'); bind or sys.exit(0); urllib.request.urlopen('http://127.0.0.1:%s/metrics' % bind.rpartition(':')[2], timeout=4)"]
# SIGTERM (docker stop) shuts the worker down gracefully: in-flight activities finish first.
STOPSIGNAL SIGTERM
CMD ["tocsin", "worker"]
