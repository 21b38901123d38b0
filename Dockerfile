# Needs BuildKit (the default builder since Docker 23; `docker buildx build` elsewhere) for
# the cache mounts below. No `# syntax=` line: the built-in frontend is enough, so a build
# never has to pull a frontend image (offline, or behind a registry mirror).
#
# Build: docker build -t gemini-phone .
# Run:   docker run --env-file .env -p 8000:8000 -v gemini-phone-data:/app/data gemini-phone

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds. The shipped binary is
# stripped: the release profile keeps debug info for local profiling, which would more than
# double the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gemini-phone \
    && cp target/release/gemini-phone /usr/local/bin/gemini-phone \
    && strip /usr/local/bin/gemini-phone

FROM debian:bookworm-slim AS runtime
# A numeric user and group, so Kubernetes' runAsNonRoot can verify them. /app/data belongs
# to group 0 and is group-writable, for platforms that run containers under a random uid
# with gid 0 (OpenShift). A bind mount must be writable by uid 10001 (or gid 0).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin --no-create-home app \
    && mkdir -p /app/data \
    && chown 10001:0 /app/data \
    && chmod 2775 /app/data
WORKDIR /app
COPY --from=build /usr/local/bin/gemini-phone /usr/local/bin/gemini-phone
COPY prompts ./prompts
USER 10001:10001
ENV HOST=0.0.0.0 PORT=8000 PROMPTS_DIR=/app/prompts DATABASE_URL=sqlite:///app/data/gemini-phone.db RUST_LOG=info
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/gemini-phone", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gemini-phone"]
