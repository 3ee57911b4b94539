# syntax=docker/dockerfile:1.7
# Multi-stage: build the locked environment with uv, run it on slim Debian as a non-root user.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/skillroute
RUN pip install uv==0.13.9
WORKDIR /src
# Dependencies first (cached while only the code or the docs change), then the project itself
# (README.md is its package description, so it comes with the code).
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY routing_rules ./routing_rules
COPY sla ./sla
COPY simulator ./simulator
COPY service ./service
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/skillroute/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKILLROUTE_HOST=0.0.0.0 \
    SKILLROUTE_PORT=8000
RUN groupadd --system skillroute && useradd --system --gid skillroute --home /var/lib/skillroute \
        --create-home skillroute
COPY --from=build /opt/skillroute /opt/skillroute
USER skillroute
WORKDIR /var/lib/skillroute
EXPOSE 8000
# Liveness (/healthz): the process answers. Readiness (/readyz: database, Redis and the shared
# state usable) is for load balancers and start order; compose.yaml checks it instead. Python,
# because the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["skillroute", "serve"]
