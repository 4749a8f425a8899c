# syntax=docker/dockerfile:1
# The egress-sentinel image: the release binary (stripped, LTO: ~8 MB) on
# distroless/cc (glibc, libgcc, the CA bundle that tls.roots = "native"
# reads; no shell), running as user 65532.
#
#   docker build -t egress-sentinel .      (or: buildah bud / podman build)
#
# Base images are pinned by digest. The digests below are placeholders until
# you run, once and after each base update:
#   k8s/image/pin-digests.sh
# (skopeo looks up each tag's current multi-arch digest and writes it here).
FROM docker.io/library/rust:1-bookworm@sha256:UNPINNED AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin egress-sentinel

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:UNPINNED
COPY --from=build /src/target/release/egress-sentinel /usr/local/bin/egress-sentinel
USER 65532:65532
EXPOSE 9464
# SIGTERM is handled, so the process may be PID 1.
ENTRYPOINT ["/usr/local/bin/egress-sentinel"]
CMD ["run", "--config", "/etc/egress-sentinel/egress-sentinel.toml"]
