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
COPY . .
# The CUDA backend loads libcuda/NVRTC at run time (cudarc dynamic loading), so the same build
# serves CPU and GPU images; only the runtime base image differs.
RUN cargo build --release --locked -p polylith \
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
