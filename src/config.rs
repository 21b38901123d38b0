//! Configuration read from the environment (and `.env`), validated once at start-up.
//!
//! Every variable is named in `../shared/contract.md`; a missing or malformed value is a
//! [`ConfigError`] whose message names the variable and says what to put there.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default Live model (GA native-audio model, September 2026).
pub const DEFAULT_GEMINI_MODEL: &str = "gemini-3.8-live";
/// The AI Studio v1beta BidiGenerateContent endpoint.
pub const DEFAULT_GEMINI_LIVE_URL: &str = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

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
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
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

/// How to reach Gemini Live and what to ask of it.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    /// API key, sent in the `x-goog-api-key` header only.
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
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let agent = match get("AGENT").as_deref() {
            None | Some("gemini") => AgentKind::Gemini,
            Some("echo") => AgentKind::Echo,
            Some(other) => {
                return Err(ConfigError::new(
                    "AGENT",
                    format!("`{other}` is not an agent; use `gemini` or `echo`"),
                ));
            }
        };

        let gemini = match get("GEMINI_API_KEY") {
            Some(key) => Some(GeminiConfig {
                api_key: Secret::new(key),
                model: get("GEMINI_MODEL").unwrap_or_else(|| DEFAULT_GEMINI_MODEL.to_owned()),
                voice: get("GEMINI_VOICE").unwrap_or_else(|| "Kore".to_owned()),
                language: get("GEMINI_LANGUAGE"),
                live_url: parse_ws_url(
                    "GEMINI_LIVE_URL",
                    get("GEMINI_LIVE_URL").unwrap_or_else(|| DEFAULT_GEMINI_LIVE_URL.to_owned()),
                )?,
                setup_timeout: Duration::from_secs(parse_number(
                    "GEMINI_SETUP_TIMEOUT_SECS",
                    get("GEMINI_SETUP_TIMEOUT_SECS"),
                    15,
                )?),
            }),
            None if agent == AgentKind::Gemini => {
                return Err(ConfigError::new(
                    "GEMINI_API_KEY",
                    "missing; put your Google AI Studio API key here (or set AGENT=echo to test a phone setup without one)",
                ));
            }
            None => None,
        };

        let public_url = parse_public_url(get("PUBLIC_URL"))?;

        let host = match get("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(h) => h.parse().map_err(|_| {
                ConfigError::new(
                    "HOST",
                    format!("`{h}` is not an IP address; use e.g. 0.0.0.0"),
                )
            })?,
        };
        let port = parse_number("PORT", get("PORT"), 8000)?;

        let twilio = account(&get, "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")?.map(
            |(account_sid, auth_token)| TwilioConfig {
                account_sid,
                auth_token,
                phone_number: get("TWILIO_PHONE_NUMBER"),
                api_url: trim_slash(
                    get("TWILIO_API_URL").unwrap_or_else(|| "https://api.twilio.com".into()),
                ),
            },
        );
        let plivo =
            account(&get, "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")?.map(|(auth_id, auth_token)| {
                PlivoConfig {
                    auth_id,
                    auth_token,
                    phone_number: get("PLIVO_PHONE_NUMBER"),
                    api_url: trim_slash(
                        get("PLIVO_API_URL").unwrap_or_else(|| "https://api.plivo.com".into()),
                    ),
                }
            });

        let tools = parse_tools(&get)?;

        Ok(Config {
            agent,
            gemini,
            public_url,
            host,
            port,
            twilio,
            plivo,
            api_token: get("API_TOKEN").map(Secret::new),
            database_url: get("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://data/gemini-phone.db".to_owned()),
            prompts_dir: PathBuf::from(get("PROMPTS_DIR").unwrap_or_else(|| "prompts".to_owned())),
            max_call_duration: Duration::from_secs(
                match parse_number("MAX_CALL_SECONDS", get("MAX_CALL_SECONDS"), 1800u64)? {
                    0 => return Err(ConfigError::new("MAX_CALL_SECONDS", "must be at least 1")),
                    n => n,
                },
            ),
            tools,
            provider_timeout: Duration::from_secs(
                match parse_number("PROVIDER_TIMEOUT_SECS", get("PROVIDER_TIMEOUT_SECS"), 15u64)? {
                    0 => {
                        return Err(ConfigError::new(
                            "PROVIDER_TIMEOUT_SECS",
                            "must be at least 1",
                        ));
                    }
                    n => n,
                },
            ),
            verify_webhooks: match get("VERIFY_WEBHOOKS").as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(other) => {
                    return Err(ConfigError::new(
                        "VERIFY_WEBHOOKS",
                        format!("`{other}` is not true or false"),
                    ));
                }
            },
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

fn parse_tools(get: &impl Fn(&str) -> Option<String>) -> Result<ToolsConfig, ConfigError> {
    let mut tools = ToolsConfig {
        end_call: true,
        ..ToolsConfig::default()
    };
    if let Some(list) = get("BUILTIN_TOOLS") {
        tools.end_call = false;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "end_call" => tools.end_call = true,
                "transfer_call" => tools.transfer_call = true,
                "send_sms" => tools.send_sms = true,
                "none" => {}
                other => {
                    return Err(ConfigError::new(
                        "BUILTIN_TOOLS",
                        format!(
                            "`{other}` is not a built-in tool; use end_call, transfer_call, send_sms or none"
                        ),
                    ));
                }
            }
        }
    }
    let e164 = |var: &'static str, number: &str| {
        let digits = number.strip_prefix('+').unwrap_or("");
        if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(number.to_owned())
        } else {
            Err(ConfigError::new(
                var,
                format!("`{number}` is not an E.164 number like +15551234567"),
            ))
        }
    };
    tools.transfer_number = get("TRANSFER_NUMBER")
        .map(|n| e164("TRANSFER_NUMBER", &n))
        .transpose()?;
    if let Some(list) = get("TOOL_ALLOWED_NUMBERS") {
        tools.allowed_numbers = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| e164("TOOL_ALLOWED_NUMBERS", n))
            .collect::<Result<_, _>>()?;
    }
    if tools.transfer_call && tools.transfer_number.is_none() && tools.allowed_numbers.is_empty() {
        return Err(ConfigError::new(
            "TRANSFER_NUMBER",
            "missing while BUILTIN_TOOLS offers transfer_call; put the number to transfer callers to",
        ));
    }
    tools.tools_file = get("TOOLS_FILE").map(PathBuf::from);
    Ok(tools)
}

fn account(
    get: &impl Fn(&str) -> Option<String>,
    id_var: &'static str,
    token_var: &'static str,
) -> Result<Option<(String, Secret)>, ConfigError> {
    match (get(id_var), get(token_var)) {
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

fn parse_public_url(value: Option<String>) -> Result<String, ConfigError> {
    let Some(url) = value else {
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

fn parse_ws_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    if (url.starts_with("wss://") || url.starts_with("ws://")) && !url.contains(' ') {
        Ok(url)
    } else {
        Err(ConfigError::new(
            var,
            format!("`{url}` is not a ws:// or wss:// URL"),
        ))
    }
}

fn parse_number<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError::new(var, format!("`{v}` is not a valid number"))),
    }
}

fn trim_slash(mut url: String) -> String {
    while url.ends_with('/') {
        url.pop();
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("GEMINI_API_KEY", "k"),
        ("PUBLIC_URL", "https://example.ngrok.app/"),
    ];

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(MINIMAL).expect("minimal config");
        assert_eq!(c.agent, AgentKind::Gemini);
        let g = c.gemini.as_ref().expect("gemini");
        assert_eq!(g.model, "gemini-3.8-live");
        assert_eq!(g.voice, "Kore");
        assert_eq!(g.live_url, DEFAULT_GEMINI_LIVE_URL);
        assert_eq!(c.port, 8000);
        assert_eq!(c.public_url, "https://example.ngrok.app");
        assert_eq!(c.public_ws_url(), "wss://example.ngrok.app");
        assert_eq!(c.database_url, "sqlite://data/gemini-phone.db");
        assert_eq!(c.max_call_duration, Duration::from_secs(1800));
        assert!(c.tools.end_call && !c.tools.transfer_call && !c.tools.send_sms);
        assert!(c.verify_webhooks);
        assert!(c.twilio.is_none() && c.plivo.is_none());
    }

    #[test]
    fn missing_key_names_the_variable() {
        let err = config(&[("PUBLIC_URL", "https://x.io")]).unwrap_err();
        assert_eq!(err.var, "GEMINI_API_KEY");
        assert!(err.to_string().starts_with("GEMINI_API_KEY: missing"));
    }

    #[test]
    fn echo_needs_no_key() {
        let c = config(&[("AGENT", "echo"), ("PUBLIC_URL", "http://localhost:8000")]).unwrap();
        assert_eq!(c.agent, AgentKind::Echo);
        assert!(c.gemini.is_none());
        assert_eq!(c.public_ws_url(), "ws://localhost:8000");
    }

    #[test]
    fn malformed_values_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("AGENT", "robot")], "AGENT"),
            (&[("PORT", "eighty")], "PORT"),
            (&[("PUBLIC_URL", "ftp://x")], "PUBLIC_URL"),
            (&[("GEMINI_LIVE_URL", "https://x")], "GEMINI_LIVE_URL"),
            (&[("TWILIO_ACCOUNT_SID", "AC1")], "TWILIO_AUTH_TOKEN"),
            (&[("PLIVO_AUTH_TOKEN", "t")], "PLIVO_AUTH_ID"),
            (&[("HOST", "everywhere")], "HOST"),
            (&[("MAX_CALL_SECONDS", "0")], "MAX_CALL_SECONDS"),
            (&[("BUILTIN_TOOLS", "end_call,fly")], "BUILTIN_TOOLS"),
            (&[("VERIFY_WEBHOOKS", "maybe")], "VERIFY_WEBHOOKS"),
            (&[("BUILTIN_TOOLS", "transfer_call")], "TRANSFER_NUMBER"),
            (&[("TRANSFER_NUMBER", "555")], "TRANSFER_NUMBER"),
            (
                &[("TOOL_ALLOWED_NUMBERS", "+15551234567, 12")],
                "TOOL_ALLOWED_NUMBERS",
            ),
        ];
        for (extra, var) in cases {
            let mut vars = MINIMAL.to_vec();
            vars.extend_from_slice(extra);
            // Later entries win in the map, so the malformed value replaces the good one.
            let err = config(&vars).unwrap_err();
            assert_eq!(err.var, *var, "{extra:?}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let c = config(&[
            ("GEMINI_API_KEY", "super-secret-key"),
            ("PUBLIC_URL", "https://x.io"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "tok-secret"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("super-secret-key"));
        assert!(!printed.contains("tok-secret"));
    }
}
