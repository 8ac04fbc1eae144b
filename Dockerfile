# The `polylith` binary (every role: miner, validator, key, local, ...), built from source.
#
#   docker build -t polylith:local .
#   docker build -t polylith:cuda --build-arg BASE_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04 .
#
# No keys, metagraph or data are baked in: compose mounts them from the host (deploy/).
# To package a binary you already built (no Rust toolchain in docker), use Dockerfile.prebuilt.

ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# 1. Dependencies, in their own layer: only the manifests and Cargo.lock, with empty sources,
#    so this (slow) layer is rebuilt only when a manifest or the lock file changes, not on a
#    source change. Keep the list in step with `members` in Cargo.toml (deploy/check-compose.sh
#    checks it). Crates with explicit [[bench]] targets get empty bench files, because cargo
#    refuses a manifest whose declared targets are missing.
COPY Cargo.toml Cargo.lock ./
COPY protocol/Cargo.toml protocol/
COPY scoring/Cargo.toml scoring/
COPY model/Cargo.toml model/
COPY cuda/Cargo.toml cuda/
COPY miner/Cargo.toml miner/
COPY validator/Cargo.toml validator/
COPY localnet/Cargo.toml localnet/
COPY net/Cargo.toml net/
COPY polylith/Cargo.toml polylith/
ENV WORKSPACE_CRATES="protocol scoring model cuda miner validator localnet net polylith"
RUN set -eu; \
    for c in $WORKSPACE_CRATES; do \
      mkdir -p "$c/src"; \
      [ "$c" = polylith ] && echo 'fn main() {}' >"$c/src/main.rs" || : >"$c/src/lib.rs"; \
      for b in $(sed -n '/^\[\[bench\]\]/,/^$/s/^name *= *"\(.*\)"/\1/p' "$c/Cargo.toml"); do \
        mkdir -p "$c/benches" && echo 'fn main() {}' >"$c/benches/$b.rs"; \
      done; \
    done; \
    cargo build --release --locked -p polylith
# 2. The sources. COPY keeps the files' old modification times, which can be older than the
#    empty crates built above; touching them makes cargo rebuild every workspace crate (and
#    nothing else). The CUDA backend loads libcuda/NVRTC at run time (cudarc dynamic
#    loading), so the same build serves CPU and GPU images; only the runtime base differs.
COPY . .
RUN find $WORKSPACE_CRATES -type f -exec touch {} + \
 && cargo build --release --locked -p polylith \
 && install -D -m 0755 target/release/polylith /out/polylith

FROM ${BASE_IMAGE} AS runtime
ARG POLYLITH_UID=10001
# A fixed non-root user; compose may override it (`user:`) to match the owner of the host keys.
RUN (getent group polylith || groupadd --system --gid ${POLYLITH_UID} polylith) \
 && (getent passwd polylith || useradd --system --uid ${POLYLITH_UID} --gid polylith \
       --home-dir /data --no-create-home --shell /usr/sbin/nologin polylith) \
 && mkdir -p /data /keys /etc/polylith \
 && chown polylith:polylith /data
COPY --from=builder /out/polylith /usr/local/bin/polylith
USER polylith
WORKDIR /data
ENV POLYLITH_KEYS_DIR=/keys
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/polylith"]
CMD ["--help"]
