# syntax=docker/dockerfile:1.7
#
# One image holding every bxb binary (gateway, consumer-clickhouse, consumer-postgres, bxbctl);
# the container's command picks the binary. docker-compose.yml and k8s/ use it.
#
#   docker build -t bxb:local .
#   docker run --rm bxb:local gateway --help
#
# Build caching (BuildKit): the `planner` stage reduces the workspace to its manifests
# (cargo-chef's recipe.json), `cook` compiles only the dependencies from that recipe, so the
# dependency layer is reused until Cargo.toml or Cargo.lock change; a code change recompiles only
# our crates. Cache mounts keep the crates.io downloads between builds.
#
# To ship another binary, add its package to PACKAGES and its binary to BINS.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# rdkafka builds librdkafka from source (CMake, C++) and links OpenSSL, Cyrus SASL and libcurl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake g++ make perl pkg-config libssl-dev libsasl2-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG PACKAGES="bxb-gateway bxb-consumer-clickhouse bxb-consumer-postgres bxb-ctl"
ARG BINS="gateway consumer-clickhouse consumer-postgres bxbctl"
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
      $(for p in $PACKAGES; do printf -- '--package %s ' "$p"; done)
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked $(for p in $PACKAGES; do printf -- '--package %s ' "$p"; done) \
 && mkdir -p /out \
 && for b in $BINS; do cp "target/release/$b" /out/; done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Only the shared libraries the binaries link (librdkafka itself is static); no compiler, no
# package manager cache.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 libcurl4 \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it. /var/lib/bxb is the only
# writable place (the API key file of a local setup); everything else can be read-only.
RUN groupadd --system --gid 10001 bxb \
 && useradd --system --uid 10001 --gid bxb --home-dir /var/lib/bxb --no-create-home \
      --shell /usr/sbin/nologin bxb \
 && install -d -o bxb -g bxb -m 0750 /var/lib/bxb
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/bxb
# In a container the listener must face the container network, not its loopback.
ENV BXB_LISTEN_ADDR=0.0.0.0:8080 \
    BXB_LOG_FORMAT=json
EXPOSE 8080
CMD ["gateway"]
