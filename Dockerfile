# egress-sentinel as a sidecar image. Not built in CI: the project's machines
# have no Docker engine. Build with: docker build -t egress-sentinel .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin egress-sentinel

# distroless/cc carries the CA bundle that tls.roots = "native" reads.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/egress-sentinel /usr/local/bin/egress-sentinel
USER 65532:65532
EXPOSE 9464 3128
# SIGTERM is handled, so the process may be PID 1.
ENTRYPOINT ["/usr/local/bin/egress-sentinel"]
CMD ["run", "--config", "/etc/egress-sentinel/egress-sentinel.toml"]
