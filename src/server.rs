//! The HTTP routes: health, the providers' webhooks and media streams, and the user's `/calls`
//! API. The state they share lives in [`crate::app`]; how connections are accepted, timed and
//! closed lives in [`connections`].

mod body_deadline;
mod connections;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::App;
use crate::calls::api;
use crate::telephony;
use crate::webhooks;

pub use body_deadline::{BodyTimedOut, body_timeout_in};

/// Largest message accepted on a phone stream; real ones are a few hundred bytes.
pub(crate) const MAX_PHONE_MESSAGE_BYTES: usize = 64 * 1024;
/// Read buffer of a phone stream.
pub(crate) const PHONE_READ_BUFFER_BYTES: usize = 4 * 1024;

/// The application's routes.
pub fn router(app: Arc<App>) -> Router {
    let body_timeout = app.config.limits.http_body_timeout;
    // One request budget for the API token, whichever of its routes it calls.
    let api_rate = api::ApiRateLimit::per_minute(app.config.limits.api_rate_per_minute);
    Router::new()
        .route("/health", get(health))
        .merge(api::routes(api_rate.clone()))
        .merge(crate::campaigns::api::routes(api_rate.clone()))
        // The web console and browser calls; `/web/stream` outranks `/{provider}/stream`.
        .merge(crate::web::routes(api_rate))
        .route(
            "/{provider}/answer",
            get(webhooks::answer).post(webhooks::answer),
        )
        .route("/{provider}/status", post(webhooks::status))
        .route("/{provider}/hangup", post(webhooks::status))
        .route(
            "/{provider}/transfer",
            get(webhooks::transfer).post(webhooks::transfer),
        )
        .route("/{provider}/stream", get(stream))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::map_request(move |request: Request| async move {
            body_deadline::limit_body_time(request, body_timeout)
        }))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// and cuts any connection still open after `SHUTDOWN_DRAIN_SECS`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = connection_limits(&app.config.limits);
    // Listening already, so the first call a newly pointed number sends finds the server.
    crate::numbers::configure_in_background(&app);
    crate::campaigns::dialer::start(&app);
    connections::serve_connections(listener, router(app), limits, shutdown).await
}

/// hyper 1.x times the wait for the next request on a kept-alive connection with the same
/// timer as a slow request head: it starts when the connection is ready for a request and
/// stops when the head is complete. So the shorter of the two settings bounds both.
fn connection_limits(limits: &crate::config::Limits) -> connections::ConnectionLimits {
    connections::ConnectionLimits {
        head_timeout: limits.http_header_timeout.min(limits.http_idle_timeout),
        drain_timeout: limits.drain_timeout,
    }
}

async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let saturated = app.admission.is_saturated(std::time::Instant::now());
    Json(json!({
        // Load balancers read `degraded` as "send new calls elsewhere".
        "status": if saturated { "degraded" } else { "ok" },
        "active_calls": app.admission.live(),
        "max_concurrent_calls": app.admission.limit(),
        "instance": app.instance_id,
        "agent": app.config.agent.as_str(),
        "providers": app.providers.names(),
        "records": app.store.backend(),
        "uptime_seconds": app.uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Why a `/metrics` request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricsRefusal {
    /// `METRICS_TOKEN` is set and the request did not carry it.
    NoToken,
    /// No `METRICS_TOKEN`, and the server listens beyond loopback.
    Off,
}

impl IntoResponse for MetricsRefusal {
    fn into_response(self) -> Response {
        match self {
            MetricsRefusal::NoToken => {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    "GET /metrics needs the METRICS_TOKEN bearer token (Authorization: Bearer <token>)",
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            MetricsRefusal::Off => (
                StatusCode::FORBIDDEN,
                "GET /metrics is off: this server listens beyond loopback and METRICS_TOKEN is unset; set METRICS_TOKEN and scrape with it as a bearer token, or bind HOST to 127.0.0.1",
            )
                .into_response(),
        }
    }
}

/// Who may read `/metrics`: with `METRICS_TOKEN` set, holders of it; without, anyone who
/// can reach a server bound to a loopback address, and nobody otherwise (the counts say how
/// busy the line is and which tools run, not for the open internet).
fn metrics_access(
    config: &crate::config::Config,
    headers: &HeaderMap,
) -> Result<(), MetricsRefusal> {
    match &config.metrics_token {
        Some(token) => api::bearer_token(headers)
            .filter(|presented| api::same_secret(presented, token.expose()))
            .map(|_| ())
            .ok_or(MetricsRefusal::NoToken),
        None if config.host.is_loopback() => Ok(()),
        None => Err(MetricsRefusal::Off),
    }
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text), behind [`metrics_access`].
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = metrics_access(&app.config, &headers) {
        return refusal.into_response();
    }
    app.metrics
        .sample(app.admission.live(), app.recorder.queue_depth());
    match app.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics",
            )
                .into_response()
        }
    }
}

/// The media-stream WebSocket: one call per connection.
async fn stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(provider) = telephony::provider_by_name(&name) else {
        return (StatusCode::NOT_FOUND, "no such provider").into_response();
    };
    ws.max_message_size(MAX_PHONE_MESSAGE_BYTES)
        .max_frame_size(MAX_PHONE_MESSAGE_BYTES)
        // Provider messages are a few hundred bytes; the 128 KiB default buffer is zeroed
        // before every read and held for the whole call.
        .read_buffer_size(PHONE_READ_BUFFER_BYTES)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "media stream upgrade failed"))
        .on_upgrade(move |socket| async move {
            // Tracked, so that shutdown waits for the call to end itself.
            let shutdown = app.shutdown.clone();
            shutdown.spawn_call(crate::bridge::run_call(socket, provider, app));
        })
}
