//! The user's API: start outbound calls, read records, hang up. Every route needs the
//! `API_TOKEN` bearer token, checked by [`Authorized`] before any body is read: an open
//! dial-out endpoint is toll fraud waiting to happen. The token's requests are rate-limited,
//! bodies are small and must arrive in time, and `POST /calls` dials only when a call slot
//! is free ([`crate::admission`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, post};
use axum::{Extension, Json, Router};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::dial;
use super::store::{CallFilter, CallRecord, CallStatus};
use crate::admission::Saturated;
use crate::app::App;
use crate::e164::{self, is_e164};
use crate::prompts::PromptError;
use crate::server::body_timeout_in;
use crate::telephony::Direction;
use crate::telephony::rest::CallControl;

/// The prompt template used when `POST /calls` names none.
pub const DEFAULT_OUTBOUND_PROMPT: &str = "outbound";

/// Largest request body the API reads. A `POST /calls` body is a few hundred bytes; even
/// with many template variables it stays far below this.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What `Retry-After` tells a client refused because every call slot is taken. Slots come
/// free as calls end and as unanswered dial-outs lapse, so a short wait usually finds one.
pub const SATURATED_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The `/calls` routes, with their body limit and the API token's rate limit (`rate`,
/// shared with the other routes the token opens).
pub fn routes(rate: ApiRateLimit) -> Router<Arc<App>> {
    Router::new()
        .route("/calls", post(create).get(list))
        .route("/calls/{id}", routing::get(get))
        .route("/calls/{id}/hangup", post(hang_up))
        .route(
            "/calls/{id}/recording",
            routing::get(crate::recording::http::download),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(Extension(rate))
}

/// An API failure, answered as `{"error": "…"}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// `API_TOKEN` is not configured, so the API is closed.
    #[error("the /calls API is disabled: set API_TOKEN to enable it")]
    Disabled,
    /// The token used up its requests for now (`API_RATE_LIMIT`).
    #[error("too many requests: the API takes {per_minute} a minute; try again in {} s", retry_after_seconds(*.retry_after))]
    RateLimited {
        /// The configured rate.
        per_minute: u32,
        /// When the next request will be accepted.
        retry_after: Duration,
    },
    /// The number is on the do-not-call list; nothing was dialled.
    #[error("{0} is on the do-not-call list: nothing was dialled (DELETE /dnc/{0} takes it off)")]
    DoNotCall(String),
    /// Every call slot is taken (`MAX_CONCURRENT_CALLS`); nothing was dialled.
    #[error("{saturated}: nothing was dialled; try again in {} s", SATURATED_RETRY_AFTER.as_secs(), saturated = .0)]
    Saturated(Saturated),
    /// The body is over [`MAX_REQUEST_BYTES`].
    #[error("the request body is over the {} KiB the API takes", MAX_REQUEST_BYTES / 1024)]
    BodyTooLarge,
    /// The body did not arrive within `HTTP_BODY_TIMEOUT_SECS`.
    #[error(transparent)]
    BodyTimedOut(#[from] crate::server::BodyTimedOut),
    /// The request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// No such call.
    #[error("no call with id {0:?}")]
    NotFound(String),
    /// The call is over already.
    #[error("{0}")]
    Conflict(String),
    /// The provider refused or failed.
    #[error("{message}")]
    Provider {
        /// What the provider said.
        message: String,
        /// The record created for the failed attempt.
        id: Option<String>,
    },
    /// The record store failed.
    #[error("call records are unavailable: {0}")]
    Store(#[from] super::store::StoreError),
    /// The server was put together wrongly; the message says how.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::DoNotCall(_) => StatusCode::FORBIDDEN,
            ApiError::Disabled => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } | ApiError::Saturated(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Provider { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long a refused client should wait before trying again, when that is known.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Saturated(_) => Some(SATURATED_RETRY_AFTER),
            _ => None,
        }
    }
}

/// Whole seconds, rounded up so that a client waiting that long is not refused again.
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Store(error) => tracing::error!(%error, "call API store failure"),
            ApiError::Internal(problem) => tracing::error!(problem, "call API internal error"),
            _ => {}
        }
        let mut body = json!({"error": self.to_string()});
        if let ApiError::Provider { id: Some(id), .. } = &self {
            body["id"] = json!(id);
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, retry_after_seconds(wait).into());
        }
        response
    }
}

/// Proof that a request carried the `API_TOKEN` bearer token and is within the token's rate.
/// Handlers take it as their first argument, so it runs before any body is read: a client
/// without the token is answered at once, however large a body it announced.
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequestParts<Arc<App>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Some(token) = &app.config.api_token else {
            return Err(ApiError::Disabled);
        };
        let presented = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        if !same_secret(presented, token.expose()) {
            return Err(ApiError::Unauthorized);
        }
        let rate = parts
            .extensions
            .get::<ApiRateLimit>()
            .ok_or(ApiError::Internal(
                "the /calls routes lack their rate limit",
            ))?;
        rate.take()?;
        Ok(Authorized)
    }
}

/// The credentials of an `Authorization: Bearer <token>` header. The scheme is matched
/// without regard to case, as RFC 7235 (§2.1) says auth schemes are.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

/// Compares digests in constant time, so the time taken reveals neither the token's bytes
/// nor its length.
pub(crate) fn same_secret(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(presented.ct_eq(&expected))
}

/// The API token's request budget: `API_RATE_LIMIT` requests a minute, which may come in
/// one burst and are then refilled evenly. Shared by every clone.
#[derive(Clone)]
pub struct ApiRateLimit {
    per_minute: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for ApiRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRateLimit")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl ApiRateLimit {
    /// `per_minute` requests a minute (at least one).
    pub fn per_minute(per_minute: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            per_minute: rate.get(),
            limiter: Arc::new(RateLimiter::direct(Quota::per_minute(rate))),
        }
    }

    /// Takes one request from the budget, or says how long until one is free.
    pub fn take(&self) -> Result<(), ApiError> {
        self.limiter.check().map_err(|not_until| {
            use governor::clock::Clock as _;
            ApiError::RateLimited {
                per_minute: self.per_minute,
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            }
        })
    }
}

/// The body of a request, or why it could not be read.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if let Some(timed_out) = body_timeout_in(&rejection) {
            return ApiError::BodyTimedOut(timed_out);
        }
        match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::BodyTooLarge
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    })
}

/// `POST /calls` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCall {
    to: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    campaign: Option<String>,
}

/// `POST /calls`: validate, take a call slot, record, dial.
///
/// A request refused for lack of a slot (429) leaves no record: nothing was attempted, and
/// a client that retries later does not leave a trail of failed records behind.
pub async fn create(
    _: Authorized,
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body)?;
    let request: CreateCall = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    if !is_e164(&request.to) {
        return Err(ApiError::BadRequest(format!(
            "`to` must be an E.164 number like +15551234567, got {:?}",
            request.to
        )));
    }
    let control = provider_control(&app, request.provider.as_deref())?;
    let from = caller_id(control.as_ref(), request.from.as_deref())?;
    let prompt = request
        .prompt
        .unwrap_or_else(|| DEFAULT_OUTBOUND_PROMPT.to_owned());
    app.prompts
        .render(&prompt, &request.vars)
        .map_err(|e: PromptError| ApiError::BadRequest(e.to_string()))?;

    let call = dial::Outbound {
        control,
        from,
        to: request.to,
        prompt,
        vars: request.vars,
        campaign: request.campaign,
    };
    let record = dial::record(&app, call).await?.dial().await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// The provider account a request names, or the only configured one when it names none.
pub(crate) fn provider_control(
    app: &App,
    name: Option<&str>,
) -> Result<Arc<dyn CallControl>, ApiError> {
    match name {
        Some(name) => app.providers.control(name).ok_or_else(|| {
            ApiError::BadRequest(match name {
                "twilio" | "plivo" => format!("provider `{name}` is not configured on this server"),
                _ => format!("unknown provider `{name}`: use twilio or plivo"),
            })
        }),
        None => app.providers.only_control().ok_or_else(|| {
            ApiError::BadRequest(if app.providers.is_empty() {
                "no provider is configured: set TWILIO_* or PLIVO_* credentials".to_owned()
            } else {
                "several providers are configured: say which with `provider`".to_owned()
            })
        }),
    }
}

/// The caller id to dial from: `from` if given, else the account's number, in E.164.
pub(crate) fn caller_id(control: &dyn CallControl, from: Option<&str>) -> Result<String, ApiError> {
    let Some(from) = from.or(control.default_from()) else {
        return Err(ApiError::BadRequest(format!(
            "no caller number: pass `from` or set {}_PHONE_NUMBER",
            control.provider().to_ascii_uppercase()
        )));
    };
    // Plivo numbers are often written without `+`; accept both and store E.164.
    e164::normalize(from).ok_or_else(|| {
        ApiError::BadRequest(format!("`from` must be an E.164 number, got {from:?}"))
    })
}

/// `GET /calls` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    campaign: Option<String>,
    status: Option<String>,
    direction: Option<String>,
    limit: Option<u32>,
}

/// `GET /calls?campaign=&status=&direction=&limit=`: newest first.
pub async fn list(
    _: Authorized,
    State(app): State<Arc<App>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<CallStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let direction = match query.direction.as_deref() {
        None => None,
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown direction {other:?} (expected inbound or outbound)"
            )));
        }
    };
    let mut filter = CallFilter {
        campaign: query.campaign,
        status,
        direction,
        ..CallFilter::default()
    };
    if let Some(limit) = query.limit {
        filter.limit = limit;
    }
    #[derive(serde::Serialize)]
    struct CallList {
        calls: Vec<super::store::CallRecord>,
    }
    let calls = app.store.list(&filter).await?;
    Ok(Json(CallList { calls }).into_response())
}

/// `GET /calls/{id}`: the whole record with its transcript.
pub async fn get(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = find_record(&app, &id).await?;
    Ok(Json(record).into_response())
}

/// The record with our id `id`, or with `id` as its provider's call id (a Twilio `CallSid`
/// or Plivo `CallUUID` from the provider's console or logs).
pub(crate) async fn find_record(app: &App, id: &str) -> Result<CallRecord, ApiError> {
    if let Some(record) = app.store.get(id).await? {
        return Ok(record);
    }
    for provider in crate::telephony::PROVIDERS {
        if let Some(record) = app
            .store
            .find_by_provider_call_id(provider.name(), id)
            .await?
        {
            return Ok(record);
        }
    }
    Err(ApiError::NotFound(id.to_owned()))
}

/// `POST /calls/{id}/hangup`: end a live or ringing call through the provider.
pub async fn hang_up(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = find_record(&app, &id).await?;
    let id = record.id.clone();
    end_call(&app, &record, "hung up through the API").await?;
    let record = find_record(&app, &id).await?;
    Ok(Json(record).into_response())
}

/// Ends a ringing or live call through its provider and records why (`reason`); a call that
/// was still ringing is `canceled`. A call that has ended already is a conflict.
pub(crate) async fn end_call(app: &App, record: &CallRecord, reason: &str) -> Result<(), ApiError> {
    let id = &record.id;
    if record.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "call {id} has already ended ({})",
            record.status
        )));
    }
    if record.provider == crate::telephony::web::NAME {
        return Err(ApiError::Conflict(format!(
            "call {id} is a browser call from the web console: it ends when the browser hangs up or the agent ends it"
        )));
    }
    let control = app.providers.control(&record.provider).ok_or_else(|| {
        ApiError::Conflict(format!(
            "provider `{}` is no longer configured",
            record.provider
        ))
    })?;
    let Some(provider_call_id) = record.provider_call_id.as_deref() else {
        return Err(ApiError::Conflict(format!("call {id} was never placed")));
    };
    let live = record.status == CallStatus::InProgress;
    control
        .hang_up(provider_call_id, live)
        .await
        .map_err(|e| ApiError::Provider {
            message: e.to_string(),
            id: None,
        })?;
    app.store.finish(id, None, Some(reason)).await?;
    if !live {
        app.store.record_status(id, CallStatus::Canceled).await?;
    }
    Ok(())
}
