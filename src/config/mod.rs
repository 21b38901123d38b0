//! Configuration read from the environment (and `.env`), validated once at start-up.
//!
//! Every variable is named in `../shared/contract.md`; a missing or malformed value is a
//! [`ConfigError`] whose message names the variable and says what to put there.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

mod conversation;
mod read;
mod turns;
mod vars;

pub use conversation::{
    ConversationConfig, DtmfMode, IdleLimits, LiveOptions, ProactiveAudio, Sensitivity,
    TurnDetection, V1ALPHA_GEMINI_LIVE_URL,
};
pub use turns::{GreetingPolicy, OnMachine, TurnsConfig};

use vars::Vars;

/// The default Live model (GA native-audio model, September 2026).
pub const DEFAULT_GEMINI_MODEL: &str = "gemini-3.8-live";
/// The AI Studio v1beta BidiGenerateContent endpoint.
pub const DEFAULT_GEMINI_LIVE_URL: &str = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
/// The Vertex AI location used when `GOOGLE_CLOUD_LOCATION` is unset.
pub const DEFAULT_VERTEX_LOCATION: &str = "us-central1";
/// Path of the Vertex AI Live endpoint on its host (v1beta1, what Google's SDK dials).
const VERTEX_LIVE_PATH: &str =
    "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent";

/// A start-up configuration problem, phrased for the person editing `.env`.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong and what to put there instead.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that has to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who answers the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// A Gemini Live session.
    Gemini,
    /// Plays the caller's own audio back: checks a phone setup without a Google key.
    Echo,
}

impl AgentKind {
    /// The name used in `AGENT` and in `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Gemini => "gemini",
            AgentKind::Echo => "echo",
        }
    }
}

/// Which Google service runs the Live sessions (`GEMINI_BACKEND`).
#[derive(Debug, Clone, Default)]
pub enum GeminiBackend {
    /// Google AI Studio (the Gemini Developer API), authorised by `GEMINI_API_KEY`.
    #[default]
    AiStudio,
    /// Vertex AI in a Google Cloud project.
    Vertex(VertexConfig),
}

/// Where on Vertex AI sessions run and how they are authorised.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// `GOOGLE_CLOUD_LOCATION`: a region such as `us-central1`, or `global`.
    pub location: String,
    /// API key (express mode) or Google Cloud credentials.
    pub access: VertexAccess,
}

/// How Vertex AI requests are authorised.
#[derive(Debug, Clone)]
pub enum VertexAccess {
    /// Express mode: `GEMINI_API_KEY` holds a Vertex API key; no project is named.
    ApiKey,
    /// Application Default Credentials for `GOOGLE_CLOUD_PROJECT`.
    Credentials {
        /// `GOOGLE_CLOUD_PROJECT`.
        project: String,
        /// Where Application Default Credentials are looked for (`GOOGLE_APPLICATION_CREDENTIALS`,
        /// gcloud's ADC file, `GCE_METADATA_HOST`).
        sources: crate::gemini::auth::CredentialSources,
        /// The process's shared token source, loaded at start-up.
        tokens: crate::gemini::auth::SharedCredentials,
    },
}

impl VertexConfig {
    /// The Live endpoint for this location: `{location}-aiplatform.googleapis.com`, or
    /// `aiplatform.googleapis.com` for `global` and for express mode.
    pub fn live_url(&self) -> String {
        let host = match (&self.access, self.location.as_str()) {
            (VertexAccess::ApiKey, _) | (_, "global") => "aiplatform.googleapis.com".to_owned(),
            (_, region) => format!("{region}-aiplatform.googleapis.com"),
        };
        format!("wss://{host}{VERTEX_LIVE_PATH}")
    }

    /// The model's full resource name, as Vertex wants it in `setup.model`.
    pub fn model_resource(&self, model: &str) -> String {
        let id = model.strip_prefix("models/").unwrap_or(model);
        if id.contains('/') {
            // Already a resource name (`publishers/…` or `projects/…`): sent as given.
            return id.to_owned();
        }
        match &self.access {
            VertexAccess::ApiKey => format!("publishers/google/models/{id}"),
            VertexAccess::Credentials { project, .. } => format!(
                "projects/{project}/locations/{}/publishers/google/models/{id}",
                self.location
            ),
        }
    }
}

/// How to reach Gemini Live and what to ask of it.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    /// API key, sent in the `x-goog-api-key` header only; empty on Vertex with Google Cloud
    /// credentials, which need none.
    pub api_key: Secret,
    /// Model id, without or with the `models/` prefix.
    pub model: String,
    /// Prebuilt voice name.
    pub voice: String,
    /// Optional BCP-47 speech language.
    pub language: Option<String>,
    /// WebSocket endpoint (`ws://` or `wss://`).
    pub live_url: String,
    /// How long to wait for the WebSocket handshake and `setupComplete` together.
    pub setup_timeout: Duration,
    /// AI Studio or Vertex AI.
    pub backend: GeminiBackend,
}

impl GeminiConfig {
    /// The model as `setup.model` names it: `models/<id>` on AI Studio, the full
    /// publisher resource on Vertex.
    pub fn model_resource(&self) -> String {
        match &self.backend {
            GeminiBackend::AiStudio => crate::gemini::protocol::model_resource(&self.model),
            GeminiBackend::Vertex(vertex) => vertex.model_resource(&self.model),
        }
    }

    /// The Vertex settings, when sessions run there.
    pub fn vertex(&self) -> Option<&VertexConfig> {
        match &self.backend {
            GeminiBackend::Vertex(vertex) => Some(vertex),
            GeminiBackend::AiStudio => None,
        }
    }
}

/// A Twilio account, present when its credentials are set.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// Account SID (`AC…`).
    pub account_sid: String,
    /// Auth token.
    pub auth_token: Secret,
    /// The number calls come from.
    pub phone_number: Option<String>,
    /// Base of the REST API.
    pub api_url: String,
}

/// A Plivo account, present when its credentials are set.
#[derive(Debug, Clone)]
pub struct PlivoConfig {
    /// Auth id (`MA…` / `SA…`).
    pub auth_id: String,
    /// Auth token.
    pub auth_token: Secret,
    /// The number calls come from.
    pub phone_number: Option<String>,
    /// Base of the REST API.
    pub api_url: String,
}

/// The whole server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gemini or echo.
    pub agent: AgentKind,
    /// Gemini settings; `None` only in echo mode without a key.
    pub gemini: Option<GeminiConfig>,
    /// Public https base URL the providers reach, without a trailing slash.
    pub public_url: String,
    /// Listen address.
    pub host: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Twilio account, if configured.
    pub twilio: Option<TwilioConfig>,
    /// Plivo account, if configured.
    pub plivo: Option<PlivoConfig>,
    /// Bearer token for the `/calls` API.
    pub api_token: Option<Secret>,
    /// Where call records live.
    pub database_url: String,
    /// Folder of system-prompt templates.
    pub prompts_dir: PathBuf,
    /// Longest a call may last before the bridge ends it.
    pub max_call_duration: Duration,
    /// What the agent may do besides talking.
    pub tools: ToolsConfig,
    /// Refuse provider webhooks without a valid signature (when the provider's token is set).
    pub verify_webhooks: bool,
    /// How long a provider REST request may take before it counts as failed.
    pub provider_timeout: Duration,
    /// Admission, time-outs and rate limits that protect the server.
    pub limits: Limits,
    /// Bearer token for `GET /metrics` (`METRICS_TOKEN`); without one, metrics are served
    /// only when `host` is a loopback address.
    pub metrics_token: Option<Secret>,
    /// Point the configured numbers' webhooks at `PUBLIC_URL` at start-up.
    pub auto_configure_numbers: bool,
    /// WAV played to the caller when Gemini is unavailable (`None`: the built-in clip).
    pub fallback_audio: Option<PathBuf>,
    /// Where each call's final record is POSTed, if anywhere (`POST_CALL_WEBHOOK_URL`).
    pub post_call_webhook: Option<PostCallWebhook>,
    /// Turn detection, expressive options, keypad and silent-line handling.
    pub conversation: ConversationConfig,
    /// Who speaks first, and what an answering machine gets.
    pub turns: TurnsConfig,
    /// How long a Gemini session opened at the answer webhook waits for its call's stream
    /// (`GEMINI_PREWARM_SECS`, default 10); `None` (`0`) opens sessions at the stream's start.
    pub prewarm: Option<Duration>,
    /// Call recordings: whether calls are recorded, where, and for how long they are kept.
    pub recordings: RecordingsConfig,
    /// The campaign dialer's timings.
    pub campaigns: CampaignSettings,
}

/// Call recordings (`RECORD_CALLS`, `RECORDINGS_DIR`, `RECORDING_RETENTION_DAYS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingsConfig {
    /// Record each call as a stereo WAV (`RECORD_CALLS`).
    pub enabled: bool,
    /// The folder recordings are written to and served from (`RECORDINGS_DIR`).
    pub dir: PathBuf,
    /// Recordings older than this are deleted (`RECORDING_RETENTION_DAYS`); `None` keeps them.
    pub retention: Option<Duration>,
}

/// How the campaign dialer runs on this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSettings {
    /// Run the dialer here (`CAMPAIGN_DIALER`); an instance without it still serves the API.
    pub dialer: bool,
    /// How often the dialer looks for due contacts and ended calls (`CAMPAIGN_POLL_MS`).
    pub poll: Duration,
    /// How long a claimed contact is held while its call is placed before another instance
    /// may take it over (`CAMPAIGN_LEASE_SECS`); longer than a provider request may take.
    pub lease: Duration,
}

/// The post-call webhook: every ended call's record, signed with the secret.
#[derive(Debug, Clone)]
pub struct PostCallWebhook {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Gemini-Phone-Signature` (`POST_CALL_WEBHOOK_SECRET`).
    pub secret: Secret,
}

/// What protects the server from overload, slow peers and abuse.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Calls admitted at once (`MAX_CONCURRENT_CALLS`); more are politely refused.
    pub max_concurrent_calls: usize,
    /// What a caller refused for lack of capacity hears (`BUSY_MESSAGE`).
    pub busy_message: String,
    /// No model output this long after the caller's turn → resume, then end (`GEMINI_STALL_SECS`).
    pub gemini_stall: Duration,
    /// How long calls may take to end after a shutdown signal (`SHUTDOWN_DRAIN_SECS`).
    pub drain_timeout: Duration,
    /// A request's headers must arrive within this (`HTTP_HEADER_TIMEOUT_SECS`).
    pub http_header_timeout: Duration,
    /// A request's body must arrive within this (`HTTP_BODY_TIMEOUT_SECS`).
    pub http_body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed (`HTTP_IDLE_TIMEOUT_SECS`).
    pub http_idle_timeout: Duration,
    /// `/calls` requests per bearer token per minute (`API_RATE_LIMIT`).
    pub api_rate_per_minute: u32,
    /// A socket write in a call that takes longer ends the call (`STREAM_WRITE_TIMEOUT_MS`).
    pub stream_write_timeout: Duration,
}

/// The agent's tools: built-ins and the user's HTTP tools.
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// `end_call` offered.
    pub end_call: bool,
    /// `transfer_call` offered.
    pub transfer_call: bool,
    /// `send_sms` offered.
    pub send_sms: bool,
    /// `send_dtmf` offered (keypad tones into the call, for phone menus).
    pub send_dtmf: bool,
    /// Where `transfer_call` goes when the model names no allowed number.
    pub transfer_number: Option<String>,
    /// Numbers the model may name for transfers and texts (besides the caller).
    pub allowed_numbers: Vec<String>,
    /// File of user-defined HTTP tools (JSON or TOML).
    pub tools_file: Option<PathBuf>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the process environment.
    /// Each section has its own reader in [`read`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(lookup);
        let agent = read::agent(&vars)?;
        let mut gemini = read::gemini(&vars, agent)?;
        // Read early: the expressive options can move Gemini's default endpoint to v1alpha.
        let conversation = conversation::read(&vars, gemini.as_mut())?;
        Ok(Config {
            agent,
            gemini,
            public_url: read::public_url(&vars)?,
            host: read::host(&vars)?,
            port: vars.number("PORT", 8000)?,
            twilio: read::twilio(&vars)?,
            plivo: read::plivo(&vars)?,
            api_token: vars.get("API_TOKEN").map(Secret::new),
            database_url: vars
                .get("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://data/gemini-phone.db".to_owned()),
            prompts_dir: PathBuf::from(
                vars.get("PROMPTS_DIR")
                    .unwrap_or_else(|| "prompts".to_owned()),
            ),
            max_call_duration: vars.seconds("MAX_CALL_SECONDS", 1800)?,
            tools: read::tools(&vars)?,
            provider_timeout: vars.seconds("PROVIDER_TIMEOUT_SECS", 15)?,
            verify_webhooks: vars.flag("VERIFY_WEBHOOKS", true)?,
            limits: read::limits(&vars)?,
            metrics_token: read::metrics_token(&vars)?,
            auto_configure_numbers: vars.flag("AUTO_CONFIGURE_NUMBERS", false)?,
            fallback_audio: vars.get("FALLBACK_AUDIO").map(PathBuf::from),
            post_call_webhook: read::post_call_webhook(&vars)?,
            conversation,
            turns: turns::read(&vars)?,
            prewarm: read::prewarm(&vars)?,
            recordings: read::recordings(&vars)?,
            campaigns: read::campaigns(&vars)?,
        })
    }

    /// The `wss://` (or `ws://`) form of the public URL, for stream URLs in answer XML.
    pub fn public_ws_url(&self) -> String {
        if let Some(rest) = self.public_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.public_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.public_url.clone()
        }
    }
}

#[cfg(test)]
mod tests;
