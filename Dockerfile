# syntax=docker/dockerfile:1
#
# One image for the Rust binaries (gateway, engine, loadgen); docker-compose.yaml picks the command.
#
# Dependency layers are cached with the "empty crates" trick: the manifests and Cargo.lock are copied
# first, with stub sources, and every dependency is compiled in that layer. It is rebuilt only when a
# manifest or the lock file changes; editing the code recompiles only the workspace's own crates.
# Nothing but crates is downloaded. system-tests/tests/deploy.rs checks that every workspace member's
# manifest is copied here.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never

# 1. Dependencies only.
COPY Cargo.toml Cargo.lock ./
COPY contract/Cargo.toml contract/Cargo.toml
COPY runtime/Cargo.toml runtime/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
COPY rows/Cargo.toml rows/Cargo.toml
COPY ledger/Cargo.toml ledger/Cargo.toml
COPY gateway/Cargo.toml gateway/Cargo.toml
COPY engine/Cargo.toml engine/Cargo.toml
COPY loadgen/Cargo.toml loadgen/Cargo.toml
COPY system-tests/Cargo.toml system-tests/Cargo.toml
RUN set -eux; \
    for crate in contract runtime testkit rows ledger gateway engine loadgen system-tests; do \
        mkdir -p "$crate/src"; \
        echo '// stub: dependency layer' > "$crate/src/lib.rs"; \
    done; \
    for bin in gateway engine loadgen; do \
        echo 'fn main() {}' > "$bin/src/main.rs"; \
    done; \
    mkdir -p system-tests/src/bin; \
    echo 'fn main() {}' > system-tests/src/bin/system-engine.rs; \
    cargo fetch --locked; \
    cargo build --release --locked --bins; \
    rm -rf contract/src runtime/src testkit/src rows/src ledger/src gateway/src engine/src loadgen/src system-tests/src

# 2. The workspace itself. Fresh timestamps, so cargo never mistakes a stub build for the real one.
COPY db db
COPY datasets datasets
COPY contract contract
COPY runtime runtime
COPY testkit testkit
COPY rows rows
COPY ledger ledger
COPY gateway gateway
COPY engine engine
COPY loadgen loadgen
COPY system-tests system-tests
RUN set -eux; \
    find contract runtime testkit rows ledger gateway engine loadgen system-tests -name '*.rs' -exec touch {} +; \
    cargo build --release --locked --offline --bins; \
    mkdir -p /out; \
    cp target/release/gateway target/release/engine target/release/loadgen /out/

FROM debian:bookworm-slim AS runtime
# An unprivileged user; the upload directory exists in the image so a fresh named volume mounted
# there inherits its owner.
RUN set -eux; \
    useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin ingest; \
    mkdir -p /data/uploads; \
    chown ingest:ingest /data/uploads
COPY --from=build /out/ /usr/local/bin/
# The shipped dataset definitions; mount your own folder over it (or point INGEST_DATASETS_DIR
# elsewhere) to add datasets.
COPY datasets /etc/ingest/datasets
USER ingest
WORKDIR /data
ENV INGEST_UPLOAD_DIR=/data/uploads \
    INGEST_DATASETS_DIR=/etc/ingest/datasets \
    INGEST_LOG_FORMAT=json
EXPOSE 8000 9000
CMD ["gateway"]
