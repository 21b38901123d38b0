//! Shared state and the HTTP routes: health, the providers' webhooks and media streams, and
//! the user's `/calls` API.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::audio::{Downlink, Uplink};
use crate::calls::recorder::Recorder;
use crate::calls::{CallStore, StoreError, api};
use crate::config::{AgentKind, Config, ConfigError, Secret};
use crate::prompts::Prompts;
use crate::signature::StreamTokens;
use crate::telephony::plivo::PlivoClient;
use crate::telephony::rest::{CallControl, http_client};
use crate::telephony::twilio::TwilioClient;
use crate::telephony::{self};
use crate::tools::ToolBox;
use crate::webhooks;

/// Largest message accepted on a phone stream; real ones are a few hundred bytes.
const MAX_PHONE_MESSAGE_BYTES: usize = 64 * 1024;
/// Read buffer of a phone stream.
const PHONE_READ_BUFFER_BYTES: usize = 4 * 1024;

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

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A variable is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The call-record database could not be opened.
    #[error("DATABASE_URL: {0}")]
    Store(#[from] StoreError),
}

/// State shared by every route and call.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The system prompt for inbound calls (`prompts/inbound.md`).
    pub inbound_prompt: String,
    /// Prompt templates.
    pub prompts: Prompts,
    /// Call records.
    pub store: CallStore,
    /// Background writer for records updated during calls.
    pub recorder: Recorder,
    /// REST control of each configured provider, by name.
    pub controls: HashMap<&'static str, Arc<dyn CallControl>>,
    /// The agent's tools.
    pub tools: ToolBox,
    /// HTTP client for the user's tools.
    pub http: reqwest::Client,
    /// Binds media streams to the answer webhooks that opened them.
    pub stream_tokens: StreamTokens,
    /// Live calls.
    pub active_calls: ActiveCalls,
    started: Instant,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("active_calls", &self.active_calls.count())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the shared state: reads the inbound prompt and opens the record store.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let prompts = Prompts::new(config.prompts_dir.clone());
        let inbound_prompt = read_inbound_prompt(&config)?;
        let store = CallStore::connect(&config.database_url).await?;
        let (recorder, _writer) = Recorder::spawn(store.clone());
        let tools = ToolBox::load(&config.tools)?;
        // Designs the audio filters now rather than during the first call.
        let _ = (Uplink::new(), Downlink::new());
        let http = http_client(config.provider_timeout);
        // Instances behind one load balancer share the Gemini key, so they accept each
        // other's streams; echo mode has no key and makes one up.
        let stream_secret = match &config.gemini {
            Some(gemini) => gemini.api_key.expose().as_bytes().to_vec(),
            None => uuid::Uuid::new_v4().as_bytes().to_vec(),
        };
        let stream_tokens = StreamTokens::new(&stream_secret);
        let unverified: Vec<&str> = [
            ("twilio", config.twilio.is_some()),
            ("plivo", config.plivo.is_some()),
        ]
        .into_iter()
        .filter(|(_, configured)| !configured || !config.verify_webhooks)
        .map(|(name, _)| name)
        .collect();
        if !unverified.is_empty() {
            tracing::warn!(
                providers = ?unverified,
                "these providers' webhooks are not signature-checked (no auth token, or VERIFY_WEBHOOKS=false); streams are still bound to answer webhooks"
            );
        }
        let mut controls: HashMap<&'static str, Arc<dyn CallControl>> = HashMap::new();
        if let Some(twilio) = &config.twilio {
            controls.insert(
                "twilio",
                Arc::new(TwilioClient::new(twilio.clone(), http.clone())),
            );
        }
        if let Some(plivo) = &config.plivo {
            controls.insert(
                "plivo",
                Arc::new(PlivoClient::new(plivo.clone(), http.clone())),
            );
        }
        Ok(Self {
            config,
            inbound_prompt,
            prompts,
            store,
            recorder,
            controls,
            tools,
            http,
            stream_tokens,
            active_calls: ActiveCalls::default(),
            started: Instant::now(),
        })
    }

    /// REST control of the named provider, if configured.
    pub fn control(&self, provider: &str) -> Option<Arc<dyn CallControl>> {
        self.controls.get(provider).cloned()
    }

    /// The auth token webhooks from `provider` must be signed with, when they are checked.
    pub fn webhook_secret(&self, provider: &str) -> Option<&Secret> {
        if !self.config.verify_webhooks {
            return None;
        }
        match provider {
            "twilio" => self.config.twilio.as_ref().map(|t| &t.auth_token),
            "plivo" => self.config.plivo.as_ref().map(|p| &p.auth_token),
            _ => None,
        }
    }

    /// The provider to use when a request names none: the only configured one.
    pub fn only_control(&self) -> Option<Arc<dyn CallControl>> {
        match self.controls.len() {
            1 => self.controls.values().next().cloned(),
            _ => None,
        }
    }
}

fn read_inbound_prompt(config: &Config) -> Result<String, ConfigError> {
    let path = config.prompts_dir.join("inbound.md");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text),
        _ if config.agent == AgentKind::Echo => Ok(String::new()),
        Ok(_) => Err(ConfigError {
            var: "PROMPTS_DIR",
            problem: format!(
                "{} is empty; write the inbound agent's prompt there",
                path.display()
            ),
        }),
        Err(e) => Err(ConfigError {
            var: "PROMPTS_DIR",
            problem: format!(
                "cannot read {} ({e}); point PROMPTS_DIR at the folder holding inbound.md",
                path.display()
            ),
        }),
    }
}

/// The application's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/calls", post(api::create).get(api::list))
        .route("/calls/{id}", get(api::get))
        .route("/calls/{id}/hangup", post(api::hang_up))
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
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Frames are sent as soon as they are ready; Nagle would hold each one back until the
    // provider's next packet acknowledges the last, adding up to a frame of delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let mut providers: Vec<&str> = app.controls.keys().copied().collect();
    providers.sort_unstable();
    Json(json!({
        "status": "ok",
        "active_calls": app.active_calls.count(),
        "agent": app.config.agent.as_str(),
        "providers": providers,
        "records": app.store.backend(),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
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
        .on_upgrade(move |socket| crate::bridge::run_call(socket, provider, app))
}
