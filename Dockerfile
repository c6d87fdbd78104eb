# nftpolicy: the enforcer and the CNI plugin installer.
# Debian's libnftables and its Python binding, the package in a venv that sees them,
# and the CNI shim (cni/shim, static Go) that `nftpolicy cni install` puts on nodes.
# BASE_IMAGE: any Debian bookworm image (scripts/build-images passes its own,
# built with mmdebstrap, as no registry is reachable there).
ARG BASE_IMAGE=debian:bookworm-slim

# The shim, with Debian's Go (bookworm: 1.19): stdlib only, so nothing is downloaded.
FROM ${BASE_IMAGE} AS shim
RUN apt-get update \
 && apt-get install -y --no-install-recommends golang-go \
 && rm -rf /var/lib/apt/lists/*
COPY cni/shim /src/shim
RUN cd /src/shim \
 && CGO_ENABLED=0 GOPROXY=off GOFLAGS= GOCACHE=/tmp/go-cache go build -trimpath -ldflags='-s -w' -o /out/nftpolicy . \
 && CNI_COMMAND=VERSION /out/nftpolicy </dev/null

# netbase: /etc/protocols and /etc/services, so that `nft list ruleset` in the
# enforcer's container says udp, not 17.
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-nftables libnftables1 iproute2 netbase \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY rules /src/rules
COPY enforcer /src/enforcer
COPY cni /src/cni
RUN python3 -m venv --system-site-packages /opt/nftpolicy \
 && /opt/nftpolicy/bin/pip install --no-cache-dir /src \
 && rm -rf /src
# `nftpolicy cni install` installs this by default (enforcer/node/cni_install.py SHIM).
COPY --from=shim /out/nftpolicy /opt/nftpolicy/cni/nftpolicy
ENV PATH=/opt/nftpolicy/bin:$PATH
# Root, with every capability dropped but NET_ADMIN and NET_RAW (see the
# DaemonSet): a non-root user would not get them in its effective set.
USER 0
ENTRYPOINT []
CMD ["nftpolicy", "--help"]
