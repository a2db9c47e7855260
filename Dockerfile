# authz in a container: multi-stage, non-root, read-only root filesystem.
#
#   docker build -t authz .
#   docker run --read-only --tmpfs /tmp -v $PWD/policy.yaml:/etc/authz/policy.yaml:ro \
#     -p 127.0.0.1:9191:9191 authz
#
# The process writes nothing outside /tmp (the supervisor's metrics directory
# with --workers; mount a tmpfs) and /var/log/authz (the decision log when
# --decision-log points there; mount a volume). Configuration is read-only:
# the policy and the files it reads under /etc/authz, TLS files under
# /etc/authz/tls (a mounted Secret: authz reloads them when they change).

ARG PYTHON=python:3.12-slim

FROM ${PYTHON} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY protos ./protos
COPY authz ./authz
# one venv, at the path it keeps in the final image; the otel extra for --otel
RUN python -m venv /opt/authz \
 && /opt/authz/bin/pip install --upgrade pip \
 && /opt/authz/bin/pip install '.[otel]' \
 && /opt/authz/bin/python -m compileall -q /opt/authz

FROM ${PYTHON}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/authz/bin:$PATH
COPY --from=build /opt/authz /opt/authz
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin authz \
 && install -d -o authz -g authz -m 0750 /var/log/authz \
 && install -d -m 0755 /etc/authz
USER 10001:10001
VOLUME ["/var/log/authz"]
# gRPC ext_authz, the HTTP door, metrics
EXPOSE 9191 9190 9193
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9190/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["authz", "serve"]
# inside a container the listeners face the container's network: publish only what callers need
CMD ["--config", "/etc/authz/policy.yaml", "--grpc-listen", "0.0.0.0:9191", "--http-listen", "0.0.0.0:9190", \
     "--metrics-listen", "0.0.0.0:9193", "--log-format", "json"]
