# A small image of tapline: the binary on Debian's slim base, run as a user without rights.
#
#   docker build -t tapline .
#   docker run --rm -v "$PWD/pipelines:/pipelines:ro" -v tapline-state:/state \
#     -e CLEVERTAP_ACCOUNT_ID -e CLEVERTAP_PASSCODE tapline run /pipelines/vip_profiles.yaml --json
#
# The state store (SQLite, checkpoints, rejects files) is written to /state: mount a volume
# there so that a killed run resumes and a delivered file is not sent twice.
# CI does not build this image; `docker build .` on a machine with Docker does.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin tapline

FROM debian:bookworm-slim
# CA certificates for https to CleverTap and TLS to PostgreSQL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /state --create-home tapline
COPY --from=build /src/target/release/tapline /usr/local/bin/tapline
USER 10001
ENV STATE_DIRECTORY=/state
VOLUME ["/state"]
ENTRYPOINT ["tapline"]
CMD ["--help"]
