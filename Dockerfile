# syntax=docker/dockerfile:1
#
# p1logger container image: `docker build -t p1logger .`
#
# Two stages: the first builds wheels for p1logger and its dependencies (with a
# compiler, for crcmod's C extension); the second installs only those wheels
# into a clean slim image, so no compiler, pip cache or source tree ships.

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install --yes --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY p1logger ./p1logger
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    P1_SPOOL_DIR=/var/lib/p1logger \
    P1_TIMEZONE=Europe/Brussels
# A fixed uid, so a spool directory on the host can be given to it; dialout
# is the group that owns serial devices on Debian and Raspberry Pi OS.
RUN useradd --system --uid 10001 --user-group --groups dialout \
        --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin p1logger \
 && install --directory --owner=p1logger --group=p1logger --mode=0750 /var/lib/p1logger
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels p1logger
USER p1logger
WORKDIR /var/lib/p1logger
# The spool: readings wait here while the database is unreachable.
VOLUME ["/var/lib/p1logger"]
# Healthy while valid telegrams arrive and are written (or safely spooled).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["p1logger", "health"]
ENTRYPOINT ["p1logger"]
CMD ["run"]
