# nftpolicy: the enforcer and the CNI plugin installer.
# Debian's libnftables and its Python binding, the package in a venv that sees them.
# BASE_IMAGE: any Debian bookworm image (scripts/build-images passes its own,
# built with mmdebstrap, as no registry is reachable there).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-nftables libnftables1 iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY rules /src/rules
COPY enforcer /src/enforcer
COPY cni /src/cni
RUN python3 -m venv --system-site-packages /opt/nftpolicy \
 && /opt/nftpolicy/bin/pip install --no-cache-dir /src \
 && rm -rf /src
ENV PATH=/opt/nftpolicy/bin:$PATH
# Root, with every capability dropped but NET_ADMIN and NET_RAW (see the
# DaemonSet): a non-root user would not get them in its effective set.
USER 0
ENTRYPOINT []
CMD ["nftpolicy", "--help"]
