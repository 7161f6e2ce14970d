# The load harness image (certctl-loadtest), built from the workspace:
#   docker build -t certctl-loadtest .
# Used by deploy/k8s/loadtest-shards.yaml; runs in external mode (--target), so it carries no
# PostgreSQL or server. Scenario and seed files are in /opt/certctl (the working directory),
# where the harness looks for ./scenarios and ./seeds.
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p certctl-loadtest \
 && cp target/release/certctl-loadtest /usr/local/bin/certctl-loadtest

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/certctl-loadtest /usr/local/bin/certctl-loadtest
COPY scenarios /opt/certctl/scenarios
COPY seeds /opt/certctl/seeds
WORKDIR /opt/certctl
ENTRYPOINT ["certctl-loadtest"]
CMD ["--help"]
