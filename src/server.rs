//! HTTP routes: health, the providers' answer webhooks and their media-stream WebSockets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{AgentKind, Config, ConfigError};
use crate::telephony;

/// Largest message accepted on a phone stream; real ones are a few hundred bytes.
const MAX_PHONE_MESSAGE_BYTES: usize = 64 * 1024;

/// Counts live calls; each call holds an [`ActiveCall`] for its whole life.
#[derive(Debug, Default)]
pub struct ActiveCalls(AtomicUsize);

/// Proof that a call is counted; uncounts it when dropped, however the call ends.
#[derive(Debug)]
pub struct ActiveCall<'a>(&'a ActiveCalls);

impl ActiveCalls {
    /// Counts one more call until the returned guard drops.
    pub fn enter(&self) -> ActiveCall<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        ActiveCall(self)
    }

    /// Calls in progress.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State shared by every route and call.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The system prompt for inbound calls (`prompts/inbound.md`).
    pub inbound_prompt: String,
    /// Live calls.
    pub active_calls: ActiveCalls,
    started: Instant,
}

impl App {
    /// Builds the shared state, reading the inbound prompt from `PROMPTS_DIR`.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let path = config.prompts_dir.join("inbound.md");
        let inbound_prompt = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => text,
            _ if config.agent == AgentKind::Echo => String::new(),
            Ok(_) => {
                return Err(ConfigError {
                    var: "PROMPTS_DIR",
                    problem: format!(
                        "{} is empty; write the inbound agent's prompt there",
                        path.display()
                    ),
                });
            }
            Err(e) => {
                return Err(ConfigError {
                    var: "PROMPTS_DIR",
                    problem: format!(
                        "cannot read {} ({e}); point PROMPTS_DIR at the folder holding inbound.md",
                        path.display()
                    ),
                });
            }
        };
        Ok(Self {
            config,
            inbound_prompt,
            active_calls: ActiveCalls::default(),
            started: Instant::now(),
        })
    }
}

/// The application's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/{provider}/answer", get(answer).post(answer))
        .route("/{provider}/stream", get(stream))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "active_calls": app.active_calls.count(),
        "agent": app.config.agent.as_str(),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

fn no_such_provider() -> Response {
    (StatusCode::NOT_FOUND, "no such provider").into_response()
}

/// The answer webhook: connect the call to our media stream.
async fn answer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(provider) = telephony::provider_by_name(&name) else {
        return no_such_provider();
    };
    let mut params = query;
    match parse_webhook_body(&headers, &body) {
        Ok(body_params) => params.extend(body_params),
        Err(problem) => return (StatusCode::BAD_REQUEST, problem).into_response(),
    }
    let Some(info) = provider.call_info(&params) else {
        tracing::warn!(provider = name, "answer webhook without a call id");
        return (StatusCode::BAD_REQUEST, "missing call id parameter").into_response();
    };
    tracing::info!(
        provider = name,
        call_id = %info.provider_call_id,
        from = %info.from,
        to = %info.to,
        direction = info.direction.as_str(),
        "answering call"
    );
    let stream_url = format!("{}/{}/stream", app.config.public_ws_url(), provider.name());
    let xml = provider.answer_xml(
        &stream_url,
        &[
            ("from", info.from.as_str()),
            ("to", info.to.as_str()),
            ("direction", info.direction.as_str()),
        ],
    );
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

/// Webhooks come form-encoded; Plivo may post JSON.
fn parse_webhook_body(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, String> {
    if body.is_empty() {
        return Ok(HashMap::new());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        Ok(value
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect())
    } else {
        serde_urlencoded::from_bytes(body).map_err(|e| format!("invalid form body: {e}"))
    }
}

/// The media-stream WebSocket: one call per connection.
async fn stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(provider) = telephony::provider_by_name(&name) else {
        return no_such_provider();
    };
    ws.max_message_size(MAX_PHONE_MESSAGE_BYTES)
        .max_frame_size(MAX_PHONE_MESSAGE_BYTES)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "media stream upgrade failed"))
        .on_upgrade(move |socket| crate::bridge::run_call(socket, provider, app))
}
