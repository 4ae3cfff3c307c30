# Trinity in a container: `make docker-build`, then `make docker-run` (docker-compose.yml).
# Two stages: the first compiles the wheels (llama-cpp-python needs a C++ toolchain), the
# second is a slim runtime with only the installed wheels, run as a non-root user.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trinity ./trinity
# The wheel of Trinity itself, and of every dependency, the embedded model included.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[local]"

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_PROFILE=production
# llama.cpp's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 --user-group trinity
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "trinity[local]" \
    && rm -rf /wheels
WORKDIR /site
# The example project, so `docker run trinity` builds something; mount your own over it.
COPY --chown=trinity:trinity trinity/example/config ./config
COPY --chown=trinity:trinity trinity/example/content ./content
# The build stages its output beside output/, so the user needs the folder itself too.
RUN mkdir -p output logs .cache && chown trinity:trinity . output logs .cache
USER trinity
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["trinity", "--version"]
ENTRYPOINT ["trinity"]
CMD ["build"]
