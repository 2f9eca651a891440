# syntax=docker/dockerfile:1
#
# rategate container image.
#
#   docker build -t rategate .
#   docker run --rm -e RATEGATE_ADMIN_TOKEN=change-me -p 8080:8080 -p 9100:9100 rategate
#
# Ports (from the config file, these are the defaults used throughout deploy/):
#   8080  proxy listener     (server.listen)
#   9100  admin side port    (admin.listen): /metrics /healthz /readyz /admin/* and the dashboard
# Config: /etc/rategate/rategate.toml. The image ships deploy/docker/rategate.toml there (a demo
# that needs no other service); mount your own file over it. Secrets are read from the
# environment through ${NAME} references in the file (RATEGATE_ADMIN_TOKEN, REDIS_PASSWORD).
# Signals: SIGTERM drains (server.shutdown_grace), SIGHUP reloads the config
# (`docker kill -s HUP <container>`).

ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm

# ---- build -------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary is copied out of
# the cached target directory because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin rategate \
    && install -D -m 0755 target/release/rategate /out/rategate

# ---- runtime -----------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# ca-certificates: system roots for rediss:// (TLS to Redis).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rategate \
    && useradd --system --uid 10001 --gid rategate --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin rategate

COPY --from=build /out/rategate /usr/local/bin/rategate
COPY deploy/docker/rategate.toml /etc/rategate/rategate.toml

LABEL org.opencontainers.image.title="rategate" \
      org.opencontainers.image.description="Reverse-proxy rate-limiting gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

# Runs as an unprivileged user; the root filesystem can be mounted read-only (nothing is written).
USER 10001:10001
ENV RUST_LOG=info
EXPOSE 8080 9100
STOPSIGNAL SIGTERM

# Liveness of the admin side port without curl in the image: bash's /dev/tcp sends one request
# to /healthz and the check passes on a 200 status line. Set RATEGATE_HEALTH_PORT if your
# admin.listen is not on 9100.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${RATEGATE_HEALTH_PORT:-9100} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 status <&3 && [[ $status == *' 200 '* ]]"]

ENTRYPOINT ["/usr/local/bin/rategate"]
CMD ["run", "--config", "/etc/rategate/rategate.toml", "--log-format", "json"]
