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
COPY scripts ./scripts
COPY trinity ./trinity
# llama-cpp-python compiled portable (no native CPU tuning, an explicit instruction-set
# baseline), so an image built on one CPU runs on another; `--build-arg
# TRINITY_LLAMA_NATIVE=1` tunes it for the build machine instead, for that machine only.
ARG TRINITY_LLAMA_NATIVE=0
RUN mkdir -p /wheels \
    && wheel="$(TRINITY_WHEELHOUSE=/tmp/llama TRINITY_LLAMA_NATIVE=${TRINITY_LLAMA_NATIVE} \
        scripts/llama-wheel build)" \
    && cp "$wheel" /wheels/
# The wheel of Trinity itself, and of every other dependency; pip may not compile
# llama-cpp-python again with its own (native) defaults.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels \
    --only-binary llama-cpp-python ".[local]"

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
