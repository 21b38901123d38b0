//! The state every route and call shares, and how it is built at start-up.

use std::sync::Arc;
use std::time::Instant;

use crate::admission::Admission;
use crate::audio::clip::Clip;
use crate::audio::{Downlink, Uplink};
use crate::bridge::prewarm::Prewarm;
use crate::bridge::voicemail::MachineVerdicts;
use crate::calls::post_call;
use crate::calls::reconcile::{self, Membership, Reconciler};
use crate::calls::recorder::Recorder;
use crate::calls::{CallStore, StoreError};
use crate::campaigns::Campaigns;
use crate::campaigns::clock::{Clock, SystemClock};
use crate::config::{AgentKind, Config, ConfigError, VertexAccess};
use crate::metrics::Metrics;
use crate::prompts::Prompts;
use crate::recording::{Recordings, sweeper};
use crate::shutdown::Shutdown;
use crate::signature::StreamTokens;
use crate::telephony::registry::Registry;
use crate::telephony::rest::http_client;
use crate::tools::ToolBox;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A variable is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The call-record database could not be opened.
    #[error("DATABASE_URL: {0}")]
    Store(#[from] StoreError),
    /// HTTPS cannot be set up (no CA certificates on the system, typically).
    #[error(
        "cannot set up HTTPS for provider and tool requests ({0}); install the system's CA certificates (Debian: ca-certificates)"
    )]
    Tls(reqwest::Error),
    /// `GEMINI_BACKEND=vertex` without a Google Cloud access token.
    #[error(
        "GEMINI_BACKEND=vertex: {0}; run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key or user credentials file, or run on Google Cloud with a service account"
    )]
    GoogleCredentials(#[from] crate::gemini::auth::AuthError),
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
    /// The configured provider accounts.
    pub providers: Registry,
    /// The agent's tools.
    pub tools: ToolBox,
    /// HTTP client for the user's tools.
    pub http: reqwest::Client,
    /// Binds media streams to the answer webhooks that opened them.
    pub stream_tokens: StreamTokens,
    /// Call slots: reserved by webhooks, held by live calls.
    pub admission: Arc<Admission>,
    /// The stop signal every call hears.
    pub shutdown: Shutdown,
    /// What a caller hears when Gemini fails (`FALLBACK_AUDIO`, else the built-in apology).
    pub fallback_clip: Clip,
    /// This process's id among instances sharing the records database.
    pub instance_id: String,
    /// Prometheus metrics, served at `/metrics`.
    pub metrics: Metrics,
    /// Calls waiting to hear that an answering machine picked up (`ON_MACHINE=message`).
    pub machine_verdicts: Arc<MachineVerdicts>,
    /// Gemini sessions opened at answer webhooks, waiting for their calls' streams.
    pub prewarm: Prewarm,
    /// Call recordings: the writer (with `RECORD_CALLS=true`) and `RECORDINGS_DIR`.
    pub recordings: Recordings,
    /// Campaigns and the do-not-call list: their store, the dialer's clock and wake-up.
    pub campaigns: Campaigns,
    /// This instance's heartbeat in the records store.
    membership: Membership,
    started: Instant,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("instance_id", &self.instance_id)
            .field("live_calls", &self.admission.live())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the shared state: reads the inbound prompt, opens the record store, registers
    /// this instance there and starts its heartbeat, crash reconciliation and, when
    /// `POST_CALL_WEBHOOK_URL` is set, post-call webhook deliveries.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let post_call = post_call::Settings::for_config(&config);
        Self::with_post_call(config, post_call).await
    }

    /// [`App::new`] with the post-call webhook's delivery settings given (`None`: no
    /// webhook), so tests can shorten its timings.
    pub async fn with_post_call(
        config: Config,
        post_call: Option<post_call::Settings>,
    ) -> Result<Self, StartError> {
        Self::with_clock(config, post_call, Arc::new(SystemClock)).await
    }

    /// [`App::with_post_call`] with the campaign dialer's clock given, so tests can move
    /// calling windows, back-offs and leases forward without waiting.
    pub async fn with_clock(
        config: Config,
        post_call: Option<post_call::Settings>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let prompts = Prompts::new(config.prompts_dir.clone());
        let inbound_prompt = read_inbound_prompt(&config)?;
        let instance_id = format!("i{}", uuid::Uuid::new_v4().simple());
        let mut store = CallStore::connect(&config.database_url)
            .await?
            .owned_by(&instance_id);
        if post_call.is_some() {
            // Before any clone: every writer of final statuses queues the delivery.
            store = store.with_post_call_outbox();
        }
        let (recorder, _writer) = Recorder::spawn(store.clone());
        let tools = ToolBox::load(&config.tools)?;
        let fallback_clip = fallback_clip(&config)?;
        load_google_credentials(&config).await?;
        // Designs the audio filters now rather than during the first call.
        let _ = (Uplink::new(), Downlink::new());
        let http = http_client(config.provider_timeout).map_err(StartError::Tls)?;
        let providers = Registry::from_config(&config, &http);
        let unverified = providers.unverified();
        if !unverified.is_empty() {
            tracing::warn!(
                providers = ?unverified,
                "these providers' webhooks are not signature-checked (no auth token, or VERIFY_WEBHOOKS=false); streams are still bound to answer webhooks"
            );
        }
        // Alive before any record is created, so none of ours ever looks orphaned.
        store.heartbeat().await?;
        let shutdown = Shutdown::new();
        let reconciler = Reconciler::new(
            store.clone(),
            &providers,
            reconcile::Settings::for_config(&config),
        );
        let membership = reconcile::start(reconciler, &shutdown);
        if let Some(settings) = post_call {
            post_call::start(store.clone(), settings, &instance_id, &shutdown)
                .map_err(StartError::Tls)?;
        }
        let prewarm = Prewarm::new(config.prewarm, config.limits.max_concurrent_calls);
        let recordings = Recordings::start(&config.recordings)?;
        sweeper::start(&recordings, store.clone(), &shutdown);
        Ok(Self {
            fallback_clip,
            stream_tokens: StreamTokens::new(&stream_secret(&config)),
            admission: Admission::new(config.limits.max_concurrent_calls),
            shutdown,
            instance_id,
            membership,
            config,
            inbound_prompt,
            prompts,
            store: store.clone(),
            recorder,
            providers,
            tools,
            http,
            metrics: Metrics::new(),
            machine_verdicts: Arc::default(),
            prewarm,
            recordings,
            campaigns: Campaigns::new(&store, clock),
            started: Instant::now(),
        })
    }

    /// Removes this instance from the records store: a clean exit. Call it last, once every
    /// call has ended and the recorder is flushed; other instances may then settle any record
    /// this one still owns. A process that never calls it counts as dead once its heartbeat
    /// goes stale.
    pub async fn leave(&self) {
        self.membership.leave().await;
    }

    /// How long this process has been up.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

/// `FALLBACK_AUDIO` converted for the phone, or the built-in apology.
fn fallback_clip(config: &Config) -> Result<Clip, ConfigError> {
    match &config.fallback_audio {
        None => Ok(Clip::builtin_fallback()),
        Some(path) => Clip::from_wav_file(path).map_err(|e| {
            ConfigError::new(
                "FALLBACK_AUDIO",
                format!("cannot use {}: {e}", path.display()),
            )
        }),
    }
}

/// Vertex with Google Cloud credentials: finds them and fetches the first token now, so a
/// broken setup stops start-up instead of the first call.
async fn load_google_credentials(config: &Config) -> Result<(), StartError> {
    if let Some(gemini) = &config.gemini
        && let Some(vertex) = gemini.vertex()
        && let VertexAccess::Credentials {
            sources, tokens, ..
        } = &vertex.access
    {
        tokens.load(sources).await?;
    }
    Ok(())
}

/// The key stream tokens are signed with. Instances behind one load balancer share the
/// Gemini key, so they accept each other's streams; on Vertex with Google Cloud credentials
/// there is no key, and the providers' auth tokens (shared the same way) stand in. Without
/// either (echo mode) the process makes one up.
fn stream_secret(config: &Config) -> Vec<u8> {
    if let Some(gemini) = &config.gemini
        && !gemini.api_key.expose().is_empty()
    {
        return gemini.api_key.expose().as_bytes().to_vec();
    }
    let provider_tokens: Vec<u8> = [
        config.twilio.as_ref().map(|t| t.auth_token.expose()),
        config.plivo.as_ref().map(|p| p.auth_token.expose()),
    ]
    .into_iter()
    .flatten()
    .flat_map(|token| token.bytes().chain([0]))
    .collect();
    if provider_tokens.is_empty() {
        uuid::Uuid::new_v4().as_bytes().to_vec()
    } else {
        provider_tokens
    }
}

/// The inbound agent's prompt, `PROMPTS_DIR/inbound.md` (empty in echo mode when absent).
pub fn read_inbound_prompt(config: &Config) -> Result<String, ConfigError> {
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
