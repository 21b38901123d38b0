//! One reader per configuration section.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::vars::Vars;
use super::{
    AgentKind, CampaignSettings, ConfigError, DEFAULT_GEMINI_LIVE_URL, DEFAULT_GEMINI_MODEL,
    DEFAULT_VERTEX_LOCATION, GeminiBackend, GeminiConfig, Limits, PlivoConfig, PostCallWebhook,
    RecordingsConfig, Secret, ToolsConfig, TwilioConfig, VertexAccess, VertexConfig,
};
use crate::e164;
use crate::gemini::auth::{CredentialSources, SharedCredentials};

/// Calls admitted per CPU core when `MAX_CONCURRENT_CALLS` is unset. Measured: 300 calls on
/// 2 cores cost 1.9 ms CPU per call-second (BENCHMARKS.md), about 30 % of the machine, with
/// call set-up still fast; at 1000 calls set-up p99 reached 24 s. 150 a core keeps headroom
/// for set-up bursts, tools and the database.
const CALLS_PER_CORE: usize = 150;

/// What a caller refused for lack of capacity hears.
const DEFAULT_BUSY_MESSAGE: &str =
    "Sorry, all of our lines are busy right now. Please call again in a few minutes. Goodbye.";

pub(super) fn agent<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<AgentKind, ConfigError> {
    match vars.get("AGENT").as_deref() {
        None | Some("gemini") => Ok(AgentKind::Gemini),
        Some("echo") => Ok(AgentKind::Echo),
        Some(other) => Err(ConfigError::new(
            "AGENT",
            format!("`{other}` is not an agent; use `gemini` or `echo`"),
        )),
    }
}

pub(super) fn gemini<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    agent: AgentKind,
) -> Result<Option<GeminiConfig>, ConfigError> {
    let Some((api_key, backend)) = gemini_access(vars, agent)? else {
        return Ok(None);
    };
    let default_url = match &backend {
        GeminiBackend::AiStudio => DEFAULT_GEMINI_LIVE_URL.to_owned(),
        GeminiBackend::Vertex(vertex) => vertex.live_url(),
    };
    Ok(Some(GeminiConfig {
        api_key,
        model: vars
            .get("GEMINI_MODEL")
            .unwrap_or_else(|| DEFAULT_GEMINI_MODEL.to_owned()),
        voice: vars
            .get("GEMINI_VOICE")
            .unwrap_or_else(|| "Kore".to_owned()),
        language: vars.get("GEMINI_LANGUAGE"),
        live_url: ws_url(
            "GEMINI_LIVE_URL",
            vars.get("GEMINI_LIVE_URL").unwrap_or(default_url),
        )?,
        setup_timeout: Duration::from_secs(vars.number("GEMINI_SETUP_TIMEOUT_SECS", 15)?),
        backend,
    }))
}

/// The backend and the key it uses (empty for Vertex with Google Cloud credentials), or
/// `None` in echo mode when nothing names a way to reach Gemini.
fn gemini_access<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    agent: AgentKind,
) -> Result<Option<(Secret, GeminiBackend)>, ConfigError> {
    let key = vars.get("GEMINI_API_KEY");
    match vars.get("GEMINI_BACKEND").as_deref() {
        None | Some("ai_studio") => match key {
            Some(key) => Ok(Some((Secret::new(key), GeminiBackend::AiStudio))),
            None if agent == AgentKind::Echo => Ok(None),
            None => Err(ConfigError::new(
                "GEMINI_API_KEY",
                "missing; put your Google AI Studio API key here (or set GEMINI_BACKEND=vertex to use Google Cloud credentials, or AGENT=echo to test a phone setup without one)",
            )),
        },
        Some("vertex") => vertex_access(vars, agent, key),
        Some(other) => Err(ConfigError::new(
            "GEMINI_BACKEND",
            format!("`{other}` is not a backend; use `ai_studio` or `vertex`"),
        )),
    }
}

fn vertex_access<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    agent: AgentKind,
    key: Option<String>,
) -> Result<Option<(Secret, GeminiBackend)>, ConfigError> {
    let location = vars
        .get("GOOGLE_CLOUD_LOCATION")
        .unwrap_or_else(|| DEFAULT_VERTEX_LOCATION.to_owned());
    let well_formed = location
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        return Err(ConfigError::new(
            "GOOGLE_CLOUD_LOCATION",
            format!(
                "`{location}` is not a Google Cloud location; use e.g. us-central1, europe-west4 or global"
            ),
        ));
    }
    let project = vars.get("GOOGLE_CLOUD_PROJECT");
    let (api_key, access) = match (key, project) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "GEMINI_API_KEY",
                "set together with GOOGLE_CLOUD_PROJECT; on Vertex use either an API key (express mode) or a project with Google Cloud credentials, not both",
            ));
        }
        (Some(key), None) => (Secret::new(key), VertexAccess::ApiKey),
        (None, Some(project)) => (
            Secret::new(""),
            VertexAccess::Credentials {
                project,
                sources: CredentialSources::from_lookup(|name| vars.get(name)),
                tokens: SharedCredentials::default(),
            },
        ),
        (None, None) if agent == AgentKind::Echo => return Ok(None),
        (None, None) => {
            return Err(ConfigError::new(
                "GOOGLE_CLOUD_PROJECT",
                "missing while GEMINI_BACKEND=vertex; put your Google Cloud project id here (or a Vertex API key in GEMINI_API_KEY for express mode)",
            ));
        }
    };
    Ok(Some((
        api_key,
        GeminiBackend::Vertex(VertexConfig { location, access }),
    )))
}

pub(super) fn public_url<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<String, ConfigError> {
    let Some(url) = vars.get("PUBLIC_URL") else {
        return Err(ConfigError::new(
            "PUBLIC_URL",
            "missing; put the https URL Twilio/Plivo reach this server at, e.g. https://abc123.ngrok.app",
        ));
    };
    let host_part = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match host_part {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#', ' ']) =>
        {
            Ok(trim_slash(url))
        }
        _ => Err(ConfigError::new(
            "PUBLIC_URL",
            format!("`{url}` is not an http(s) base URL; use e.g. https://abc123.ngrok.app"),
        )),
    }
}

pub(super) fn host<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<IpAddr, ConfigError> {
    match vars.get("HOST") {
        None => Ok(IpAddr::from([0, 0, 0, 0])),
        Some(h) => h.parse().map_err(|_| {
            ConfigError::new(
                "HOST",
                format!("`{h}` is not an IP address; use e.g. 0.0.0.0"),
            )
        }),
    }
}

pub(super) fn twilio<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<TwilioConfig>, ConfigError> {
    Ok(
        account(vars, "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")?.map(
            |(account_sid, auth_token)| TwilioConfig {
                account_sid,
                auth_token,
                phone_number: vars.get("TWILIO_PHONE_NUMBER"),
                api_url: trim_slash(
                    vars.get("TWILIO_API_URL")
                        .unwrap_or_else(|| "https://api.twilio.com".into()),
                ),
            },
        ),
    )
}

pub(super) fn plivo<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<PlivoConfig>, ConfigError> {
    Ok(
        account(vars, "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")?.map(|(auth_id, auth_token)| {
            PlivoConfig {
                auth_id,
                auth_token,
                phone_number: vars.get("PLIVO_PHONE_NUMBER"),
                api_url: trim_slash(
                    vars.get("PLIVO_API_URL")
                        .unwrap_or_else(|| "https://api.plivo.com".into()),
                ),
            }
        }),
    )
}

pub(super) fn tools<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<ToolsConfig, ConfigError> {
    let mut tools = ToolsConfig {
        end_call: true,
        ..ToolsConfig::default()
    };
    if let Some(list) = vars.get("BUILTIN_TOOLS") {
        tools.end_call = false;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "end_call" => tools.end_call = true,
                "transfer_call" => tools.transfer_call = true,
                "send_sms" => tools.send_sms = true,
                "send_dtmf" => tools.send_dtmf = true,
                "none" => {}
                other => {
                    return Err(ConfigError::new(
                        "BUILTIN_TOOLS",
                        format!(
                            "`{other}` is not a built-in tool; use end_call, transfer_call, send_sms, send_dtmf or none"
                        ),
                    ));
                }
            }
        }
    }
    let number = |var: &'static str, number: &str| {
        if e164::is_e164(number) {
            Ok(number.to_owned())
        } else {
            Err(ConfigError::new(
                var,
                format!("`{number}` is not an E.164 number like +15551234567"),
            ))
        }
    };
    tools.transfer_number = vars
        .get("TRANSFER_NUMBER")
        .map(|n| number("TRANSFER_NUMBER", &n))
        .transpose()?;
    if let Some(list) = vars.get("TOOL_ALLOWED_NUMBERS") {
        tools.allowed_numbers = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| number("TOOL_ALLOWED_NUMBERS", n))
            .collect::<Result<_, _>>()?;
    }
    if tools.transfer_call && tools.transfer_number.is_none() && tools.allowed_numbers.is_empty() {
        return Err(ConfigError::new(
            "TRANSFER_NUMBER",
            "missing while BUILTIN_TOOLS offers transfer_call; put the number to transfer callers to",
        ));
    }
    tools.tools_file = vars.get("TOOLS_FILE").map(PathBuf::from);
    Ok(tools)
}

pub(super) fn limits<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Limits, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Ok(Limits {
        max_concurrent_calls: vars
            .at_least_one("MAX_CONCURRENT_CALLS", (CALLS_PER_CORE * cores) as u64)?
            as usize,
        busy_message: vars
            .get("BUSY_MESSAGE")
            .unwrap_or_else(|| DEFAULT_BUSY_MESSAGE.to_owned()),
        gemini_stall: vars.seconds("GEMINI_STALL_SECS", 8)?,
        drain_timeout: vars.seconds("SHUTDOWN_DRAIN_SECS", 30)?,
        http_header_timeout: vars.seconds("HTTP_HEADER_TIMEOUT_SECS", 10)?,
        http_body_timeout: vars.seconds("HTTP_BODY_TIMEOUT_SECS", 10)?,
        http_idle_timeout: vars.seconds("HTTP_IDLE_TIMEOUT_SECS", 60)?,
        api_rate_per_minute: vars.at_least_one("API_RATE_LIMIT", 60)? as u32,
        stream_write_timeout: vars.millis("STREAM_WRITE_TIMEOUT_MS", 2_000)?,
    })
}

/// A post-call webhook secret shorter than this is refused: it is an HMAC key.
const MIN_WEBHOOK_SECRET_LEN: usize = 16;

pub(super) fn post_call_webhook<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<PostCallWebhook>, ConfigError> {
    const URL: &str = "POST_CALL_WEBHOOK_URL";
    const SECRET: &str = "POST_CALL_WEBHOOK_SECRET";
    let (url, secret) = match (vars.get(URL), vars.get(SECRET)) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(ConfigError::new(
                URL,
                format!(
                    "missing while {SECRET} is set; put the URL that receives each call's final record"
                ),
            ));
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                SECRET,
                format!(
                    "missing while {URL} is set; put a random string of at least {MIN_WEBHOOK_SECRET_LEN} characters (e.g. `openssl rand -hex 32`) that the receiver checks signatures with"
                ),
            ));
        }
        (Some(url), Some(secret)) => (url, secret),
    };
    let is_web_url = reqwest::Url::parse(&url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !is_web_url {
        // Not echoed: a webhook URL may carry a token of the receiver's.
        return Err(ConfigError::new(
            URL,
            "not an http(s) URL; use e.g. https://hooks.example.com/calls",
        ));
    }
    if secret.chars().count() < MIN_WEBHOOK_SECRET_LEN {
        return Err(ConfigError::new(
            SECRET,
            format!(
                "too short; use at least {MIN_WEBHOOK_SECRET_LEN} random characters (e.g. `openssl rand -hex 32`)"
            ),
        ));
    }
    Ok(Some(PostCallWebhook {
        url,
        secret: Secret::new(secret),
    }))
}

/// `METRICS_TOKEN`: unset means none; set, it must be something a scraper can send.
pub(super) fn metrics_token<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<Secret>, ConfigError> {
    match vars.get("METRICS_TOKEN") {
        None => Ok(None),
        Some(token) if token.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(ConfigError::new(
                "METRICS_TOKEN",
                "contains whitespace or control characters, which cannot travel in an Authorization header; use letters, digits and punctuation",
            ))
        }
        Some(token) => Ok(Some(Secret::new(token))),
    }
}

fn account<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    id_var: &'static str,
    token_var: &'static str,
) -> Result<Option<(String, Secret)>, ConfigError> {
    match (vars.get(id_var), vars.get(token_var)) {
        (Some(id), Some(token)) => Ok(Some((id, Secret::new(token)))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            token_var,
            format!("missing while {id_var} is set; put the account's auth token here"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            id_var,
            format!("missing while {token_var} is set; put the account id here"),
        )),
    }
}

fn ws_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    if (url.starts_with("wss://") || url.starts_with("ws://")) && !url.contains(' ') {
        Ok(url)
    } else {
        Err(ConfigError::new(
            var,
            format!("`{url}` is not a ws:// or wss:// URL"),
        ))
    }
}

fn trim_slash(mut url: String) -> String {
    while url.ends_with('/') {
        url.pop();
    }
    url
}

/// Longest `GEMINI_PREWARM_SECS`: a stream comes within this or never (its token lapses then).
const MAX_PREWARM_SECS: u64 = crate::admission::ANSWER_TO_START.as_secs();

/// `GEMINI_PREWARM_SECS`: how long a session opened at the answer webhook waits for its
/// stream; 0 turns pre-warming off.
pub(super) fn prewarm<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<Duration>, ConfigError> {
    const NAME: &str = "GEMINI_PREWARM_SECS";
    match vars.number(NAME, 10u64)? {
        0 => Ok(None),
        secs if secs > MAX_PREWARM_SECS => Err(ConfigError::new(
            NAME,
            format!(
                "{secs} is too long; use at most {MAX_PREWARM_SECS} (a stream's token lapses then), or 0 to open sessions only when the stream starts"
            ),
        )),
        secs => Ok(Some(Duration::from_secs(secs))),
    }
}

/// Where recordings go when `RECORDINGS_DIR` is unset.
const DEFAULT_RECORDINGS_DIR: &str = "data/recordings";
/// Longest retention accepted: past it, a day count is more likely a typo than a policy.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// `RECORD_CALLS`, `RECORDINGS_DIR`, `RECORDING_RETENTION_DAYS`. The folder and the
/// retention apply even with recording off: recordings made earlier are still served and
/// swept.
pub(super) fn recordings<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<RecordingsConfig, ConfigError> {
    const RETENTION: &str = "RECORDING_RETENTION_DAYS";
    let retention = match vars.get(RETENTION) {
        None => None,
        Some(_) => {
            let days = vars.at_least_one(RETENTION, 1)?;
            if days > MAX_RETENTION_DAYS {
                return Err(ConfigError::new(
                    RETENTION,
                    format!(
                        "{days} days is over {MAX_RETENTION_DAYS}; leave it unset to keep recordings forever"
                    ),
                ));
            }
            Some(Duration::from_secs(days * 86_400))
        }
    };
    Ok(RecordingsConfig {
        enabled: vars.flag("RECORD_CALLS", false)?,
        dir: PathBuf::from(
            vars.get("RECORDINGS_DIR")
                .unwrap_or_else(|| DEFAULT_RECORDINGS_DIR.to_owned()),
        ),
        retention,
    })
}

/// The campaign dialer's section: `CAMPAIGN_DIALER`, `CAMPAIGN_POLL_MS`, `CAMPAIGN_LEASE_SECS`.
pub(super) fn campaigns<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<CampaignSettings, ConfigError> {
    let lease = vars.seconds("CAMPAIGN_LEASE_SECS", 60)?;
    let provider_timeout = vars.seconds("PROVIDER_TIMEOUT_SECS", 15)?;
    if lease <= provider_timeout {
        // A lease that can run out while the provider is still being asked would let another
        // instance dial the same contact.
        return Err(ConfigError::new(
            "CAMPAIGN_LEASE_SECS",
            format!(
                "must be longer than PROVIDER_TIMEOUT_SECS ({} s), so a contact being dialled is never taken over",
                provider_timeout.as_secs()
            ),
        ));
    }
    Ok(CampaignSettings {
        dialer: vars.flag("CAMPAIGN_DIALER", true)?,
        poll: vars.millis("CAMPAIGN_POLL_MS", 500)?,
        lease,
    })
}
