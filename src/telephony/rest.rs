//! Provider REST operations on calls: dial out, hang up, transfer, look up status, text.
//!
//! Each provider implements [`CallControl`] beside its stream codec; callers hold a
//! `dyn CallControl` and never branch on the provider.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::OnMachine;

/// What we ask a provider to dial.
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// Callee, E.164 (`+15551234567`).
    pub to: String,
    /// Caller id, E.164.
    pub from: String,
    /// Our record id, carried on every webhook URL so callbacks find the record.
    pub record_id: String,
    /// Public https base URL (no trailing slash).
    pub public_url: String,
    /// Longest the call may last, in seconds.
    pub time_limit_secs: u64,
    /// What an answering machine gets (`ON_MACHINE`), which decides how detection runs.
    pub on_machine: OnMachine,
}

/// A provider REST failure, with the provider's own message when it gave one.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The provider answered with an error status.
    #[error("{provider} answered HTTP {status}: {message}")]
    Status {
        /// Provider name.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
    },
    /// No answer in time, or the connection failed.
    #[error("{provider} could not be reached: {source}")]
    Transport {
        /// Provider name.
        provider: &'static str,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered something we could not read.
    #[error("{provider} answered unexpectedly: {detail}")]
    Unexpected {
        /// Provider name.
        provider: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The account has no number to call from.
    #[error("no caller number: set {0} or pass `from`")]
    NoFromNumber(&'static str),
    /// A call id that is not in the provider's format was refused before any request was
    /// built: ids reach us from webhooks and streams, and one like `../Number/…` would
    /// otherwise steer an authenticated request to another endpoint of the account.
    #[error(
        "refused {provider} call id {id:?}: it is not {expected}, so no request was sent (a forged or corrupted webhook may have supplied it)"
    )]
    InvalidId {
        /// Provider name.
        provider: &'static str,
        /// The refused id (its first [`SHOWN_ID_CHARS`] characters).
        id: String,
        /// The format the provider uses, in words.
        expected: &'static str,
    },
    /// The configured REST base URL cannot have paths appended to it.
    #[error("{provider} API URL {url:?} is not an http(s) base URL; fix {variable}")]
    InvalidApiUrl {
        /// Provider name.
        provider: &'static str,
        /// The configured value.
        url: String,
        /// The variable that holds it.
        variable: &'static str,
    },
}

/// How much of a refused id an error repeats: enough to recognise it in a log, not enough
/// to let a hostile webhook fill the log.
pub const SHOWN_ID_CHARS: usize = 64;

impl RestError {
    /// A [`RestError::InvalidId`] for `id`, shortened to [`SHOWN_ID_CHARS`] characters.
    pub fn invalid_id(provider: &'static str, id: &str, expected: &'static str) -> RestError {
        RestError::InvalidId {
            provider,
            id: id.chars().take(SHOWN_ID_CHARS).collect(),
            expected,
        }
    }
}

/// REST control of one provider account.
pub trait CallControl: Send + Sync {
    /// Provider name (`twilio`, `plivo`).
    fn provider(&self) -> &'static str;
    /// The account's own number, used as caller id when none is given.
    fn default_from(&self) -> Option<&str>;
    /// Places a call; returns the provider's id for it.
    fn dial<'a>(&'a self, request: &'a DialRequest) -> BoxFuture<'a, Result<String, RestError>>;
    /// Ends a call (ringing or live). A call that has already ended is not an error.
    fn hang_up<'a>(
        &'a self,
        provider_call_id: &'a str,
        live: bool,
    ) -> BoxFuture<'a, Result<(), RestError>>;
    /// Moves a live call off our stream and dials `to` (E.164) for it.
    fn transfer<'a>(
        &'a self,
        provider_call_id: &'a str,
        to: &'a str,
        public_url: &'a str,
    ) -> BoxFuture<'a, Result<(), RestError>>;
    /// The provider's current status for a call, in our status vocabulary (`queued`,
    /// `ringing`, `in-progress`, `completed`, `busy`, `no-answer`, `failed`, `canceled`;
    /// see each provider for its mapping); `None` when the provider does not know the call.
    fn call_status<'a>(
        &'a self,
        provider_call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RestError>>;
    /// Sends a text message; returns the provider's message id.
    fn send_sms<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<String, RestError>>;
}

/// Turns a provider response into `Ok(body)` or a [`RestError`] carrying its message.
pub(crate) async fn read_response(
    provider: &'static str,
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<(u16, serde_json::Value), RestError> {
    let response = result.map_err(|source| RestError::Transport { provider, source })?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|source| RestError::Transport { provider, source })?;
    let body: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    if (200..300).contains(&status) {
        return Ok((status, body));
    }
    let message = ["message", "error", "detail"]
        .iter()
        .find_map(|key| body.get(key).and_then(|m| m.as_str()).map(str::to_owned))
        .or_else(|| body.as_str().map(|s| s.chars().take(300).collect()))
        .unwrap_or_else(|| "no message".to_owned());
    Err(RestError::Status {
        provider,
        status,
        message,
    })
}

/// Like [`read_response`], but a 404 (the provider does not know the resource) is `Ok(None)`.
pub(crate) async fn read_optional(
    provider: &'static str,
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<Option<serde_json::Value>, RestError> {
    match read_response(provider, result).await {
        Ok((_, body)) => Ok(Some(body)),
        Err(RestError::Status { status: 404, .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// `base` with `segments` appended as path segments, each percent-encoded on its own so
/// that no `/`, `?`, `#` or `%` in a value can change which endpoint is addressed. An empty
/// last segment gives the trailing slash Plivo's paths need.
///
/// Provider ids are validated before they get here; the encoding is a second wall, not the
/// first. (The `url` crate also drops `.` and `..` segments rather than resolving them.)
pub(crate) fn api_url(
    provider: &'static str,
    variable: &'static str,
    base: &str,
    segments: &[&str],
) -> Result<reqwest::Url, RestError> {
    let invalid = || RestError::InvalidApiUrl {
        provider,
        url: base.to_owned(),
        variable,
    };
    let mut url = reqwest::Url::parse(base).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid());
    }
    url.path_segments_mut()
        .map_err(|()| invalid())?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A client whose requests give up after `timeout`, shared by the providers and tools; or
/// why HTTPS cannot be set up (typically: the system has no CA certificates, as in a
/// container image without the `ca-certificates` package).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("gemini-phone/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Makes ring the process's TLS crypto provider (for Gemini and REST); later calls are no-ops.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
