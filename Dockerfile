# Colink's images, in three stages:
#   docker build --target colink -t colink:0.1.0 .      the node (`colink serve`)
#   docker build --target edge -t colink-edge:0.1.0 .   Envoy for k8s/distributed
# No base image can be pulled where Colink is developed, so these stages are
# not built by its CI; what they copy is (the release binary, the generated
# Envoy configuration and descriptor set), and k8s/ is validated against the
# Kubernetes schemas.

# The release binary. The web client is already built (web/dist, committed)
# and embedded, so no Node.js is needed here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p colink \
    && install -D target/release/colink /out/colink

# The node: the binary alone, as an unprivileged user (the UID the
# Kubernetes manifests run it as), its data in /var/lib/colink.
FROM debian:bookworm-slim AS colink
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 colink \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/colink --create-home colink
COPY --from=build /out/colink /usr/local/bin/colink
USER 10001:10001
WORKDIR /var/lib/colink
EXPOSE 7700
ENTRYPOINT ["colink"]
CMD ["serve", "--listen", "0.0.0.0:7700", "--data-dir", "/var/lib/colink"]

# Envoy at the edge, with the configuration `just gen` derives for
# Kubernetes and the descriptor set its transcoder reads.
FROM envoyproxy/envoy:v1.40-latest AS edge
COPY envoy/envoy-kubernetes.yaml /etc/envoy/envoy.yaml
COPY gen/colink.binpb /etc/envoy/colink.binpb
USER 10101:10101
EXPOSE 8080
ENTRYPOINT ["envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"]
