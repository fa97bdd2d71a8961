# Phoenix's container image: `phoenix serve` as an unprivileged user on a read-only root
# filesystem, everything it writes under PHOENIX_DATA_DIR=/var/lib/phoenix (mount a volume or
# an emptyDir there) and /tmp (a tmpfs). docs/kubernetes.md#running-phoenix-in-a-cluster.
#
# Nothing can be pulled here, so both bases are made locally from Debian packages
# (deploy/image/make-base.sh; about a minute), and the build stage reaches PyPI over the
# host's network:
#
#   deploy/image/make-base.sh
#   docker build --network host -t phoenix:0.1.0 .
#
# Any Python 3.11+ image with python3 on PATH at /usr/bin/python3 serves as well: a
# python3-venv one as BUILD_BASE, a plain one as BASE (--build-arg BASE=…).

ARG BASE=phoenix-base/python:bookworm
ARG BUILD_BASE=phoenix-base/python-build:bookworm

# --- build: a wheel of phoenix-server, installed with its dependencies into /opt/phoenix ----
FROM ${BUILD_BASE} AS build

# Where the packages come from (a mirror of PyPI's simple API will do), and — behind a
# TLS-intercepting proxy — the PEM text of CA certificates pip must trust besides Debian's:
#   --build-arg BUILD_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"
# Both stay in this stage: the final image neither trusts those CAs nor records the values.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG BUILD_CA_CERTS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/opt/ca.pem

# Two venvs: /opt/build holds the tools (a current pip), /opt/phoenix — created without pip,
# at the path it runs from in the final image — only Phoenix and what it imports.
RUN cat /etc/ssl/certs/ca-certificates.crt > /opt/ca.pem \
 && printf '%s\n' "$BUILD_CA_CERTS" >> /opt/ca.pem \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet pip==26.3 \
 && python3 -m venv --without-pip /opt/phoenix

# Dependencies first, from pyproject.toml alone, so that a change under src/ reuses this
# layer. Wheels only (--only-binary): nothing is compiled, so no compiler is needed anywhere.
COPY pyproject.toml /src/pyproject.toml
RUN /opt/build/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && /opt/build/bin/pip --python /opt/phoenix/bin/python install --quiet --only-binary=:all: \
        --requirement /tmp/requirements.txt

COPY README.md /src/README.md
COPY src /src/src
RUN /opt/build/bin/pip wheel --quiet --no-deps --wheel-dir /wheels /src \
 && /opt/build/bin/pip --python /opt/phoenix/bin/python install --quiet --no-deps \
        --only-binary=:all: /wheels/phoenix_server-*.whl \
 && /opt/build/bin/pip --python /opt/phoenix/bin/python check \
 && /opt/phoenix/bin/phoenix version

# --- runtime: the Python base and the venv; no pip, compiler or build tool ------------------
FROM ${BASE}

LABEL org.opencontainers.image.title="phoenix" \
      org.opencontainers.image.description="Phoenix: an open auto-recovery service" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric user (Kubernetes' runAsNonRoot can check a number, not a name) whose home is the
# data directory. The directory exists for a plain `docker run -v …`; in a pod it is an emptyDir.
RUN groupadd --gid 10001 phoenix \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/phoenix --no-create-home \
        --no-log-init --shell /usr/sbin/nologin phoenix \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/phoenix \
 && rm -rf /var/log/* /var/cache/debconf/*-old

COPY --from=build /opt/phoenix /opt/phoenix

# Bytecode was compiled at install time: nothing writes .pyc files on a read-only root.
# The data directory holds the SQLite database (with its WAL), logs/, run/ and the
# installation id; HOME points there too, and the working directory is root's (no .env).
ENV PATH=/opt/phoenix/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PHOENIX_DATA_DIR=/var/lib/phoenix \
    HOME=/var/lib/phoenix \
    TMPDIR=/tmp
WORKDIR /opt/phoenix
USER 10001:10001
EXPOSE 3051

# No HEALTHCHECK: Kubernetes ignores it (the Deployment probes /health), and the address to
# probe depends on PHOENIX_HOST. Phoenix binds 127.0.0.1 unless PHOENIX_HOST says otherwise
# (any other address needs PHOENIX_API_TOKENS): see docs/configuration.md.
ENTRYPOINT ["phoenix"]
CMD ["serve"]
