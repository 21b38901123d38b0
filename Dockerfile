# syntax=docker/dockerfile:1
# Build: docker build -t gemini-phone .
# Run:   docker run --env-file .env -p 8000:8000 -v gemini-phone-data:/app/data gemini-phone

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gemini-phone \
    && cp target/release/gemini-phone /usr/local/bin/gemini-phone

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown app /app/data
WORKDIR /app
COPY --from=build /usr/local/bin/gemini-phone /usr/local/bin/gemini-phone
COPY prompts ./prompts
USER app
ENV HOST=0.0.0.0 PORT=8000 PROMPTS_DIR=/app/prompts DATABASE_URL=sqlite:///app/data/gemini-phone.db RUST_LOG=info
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/gemini-phone", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gemini-phone"]
