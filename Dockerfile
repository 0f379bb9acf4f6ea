# syntax=docker/dockerfile:1
# Builds both images from one workspace build:
#   docker build --target storaged -t storaged:0.1.0 .
#   docker build --target operator -t storaged-operator:0.1.0 .
# Runtime images are distroless (glibc, CA certificates, no shell) and run as a
# non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p storaged -p operator \
 && mkdir -p /out \
 && cp target/release/storaged target/release/operator target/release/crdgen /out/

# storaged: UID/GID 1000 matches the operator's pod securityContext (runAsUser/fsGroup
# 1000), so the data and metadata volumes are writable.
FROM gcr.io/distroless/cc-debian12 AS storaged
COPY --from=build /out/storaged /usr/local/bin/storaged
USER 1000:1000
EXPOSE 3900/tcp 3901/udp 3902/tcp 3903/tcp
ENTRYPOINT ["/usr/local/bin/storaged"]
CMD ["server", "-c", "/etc/storaged/storaged.toml"]

# operator: distroless "nonroot" user (65532), as in the chart's securityContext.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/operator /usr/local/bin/operator
COPY --from=build /out/crdgen /usr/local/bin/crdgen
USER 65532:65532
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/local/bin/operator"]
CMD ["run"]
