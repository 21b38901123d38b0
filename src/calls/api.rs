//! The user's API: start outbound calls, read records, hang up. Every route needs the
//! `API_TOKEN` bearer token: an open dial-out endpoint is toll fraud waiting to happen.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::store::{CallFilter, CallStatus, NewCall};
use crate::app::App;
use crate::e164::is_e164;
use crate::prompts::PromptError;
use crate::telephony::Direction;
use crate::telephony::rest::DialRequest;

/// The prompt template used when `POST /calls` names none.
pub const DEFAULT_OUTBOUND_PROMPT: &str = "outbound";

/// An API failure, answered as `{"error": "…"}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// `API_TOKEN` is not configured, so the API is closed.
    #[error("the /calls API is disabled: set API_TOKEN to enable it")]
    Disabled,
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Disabled => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Provider { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Store(error) => {
                tracing::error!(%error, "call API store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut body = json!({"error": self.to_string()});
        if let ApiError::Provider { id: Some(id), .. } = &self {
            body["id"] = json!(id);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &app.config.api_token else {
        return Err(ApiError::Disabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
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

/// `POST /calls`: validate, record, dial.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let request: CreateCall = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    if !is_e164(&request.to) {
        return Err(ApiError::BadRequest(format!(
            "`to` must be an E.164 number like +15551234567, got {:?}",
            request.to
        )));
    }
    let control = match request.provider.as_deref() {
        Some(name) => app.providers.control(name).ok_or_else(|| {
            ApiError::BadRequest(match name {
                "twilio" | "plivo" => format!("provider `{name}` is not configured on this server"),
                _ => format!("unknown provider `{name}`: use twilio or plivo"),
            })
        })?,
        None => app.providers.only_control().ok_or_else(|| {
            ApiError::BadRequest(if app.providers.is_empty() {
                "no provider is configured: set TWILIO_* or PLIVO_* credentials".to_owned()
            } else {
                "several providers are configured: say which with `provider`".to_owned()
            })
        })?,
    };
    let from = match request.from.as_deref().or(control.default_from()) {
        Some(from) => from.to_owned(),
        None => {
            return Err(ApiError::BadRequest(format!(
                "no caller number: pass `from` or set {}_PHONE_NUMBER",
                control.provider().to_ascii_uppercase()
            )));
        }
    };
    // Plivo numbers are often written without `+`; accept both and store E.164.
    let from = if from.starts_with('+') {
        from
    } else {
        format!("+{from}")
    };
    if !is_e164(&from) {
        return Err(ApiError::BadRequest(format!(
            "`from` must be an E.164 number, got {from:?}"
        )));
    }
    let prompt = request
        .prompt
        .unwrap_or_else(|| DEFAULT_OUTBOUND_PROMPT.to_owned());
    app.prompts
        .render(&prompt, &request.vars)
        .map_err(|e: PromptError| ApiError::BadRequest(e.to_string()))?;

    let record = app
        .store
        .create(NewCall {
            provider: control.provider().to_owned(),
            provider_call_id: None,
            direction: Direction::Outbound,
            from: from.clone(),
            to: request.to.clone(),
            campaign: request.campaign,
            prompt: Some(prompt),
            vars: request.vars,
            status: CallStatus::Queued,
        })
        .await?;
    let dial = DialRequest {
        to: request.to,
        from,
        record_id: record.id.clone(),
        public_url: app.config.public_url.clone(),
        time_limit_secs: app.config.max_call_duration.as_secs(),
    };
    match control.dial(&dial).await {
        Ok(provider_call_id) => {
            app.store
                .set_provider_call_id(&record.id, &provider_call_id)
                .await?;
            tracing::info!(call = %record.id, provider = control.provider(), %provider_call_id, "outbound call placed");
            let record = app
                .store
                .get(&record.id)
                .await?
                .ok_or_else(|| ApiError::NotFound(record.id.clone()))?;
            Ok((StatusCode::CREATED, Json(record)).into_response())
        }
        Err(error) => {
            tracing::warn!(call = %record.id, %error, "provider refused the outbound call");
            app.store.fail(&record.id, &error.to_string()).await?;
            Err(ApiError::Provider {
                message: error.to_string(),
                id: Some(record.id),
            })
        }
    }
}

/// `GET /calls` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    campaign: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /calls?campaign=&status=&limit=`: newest first.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<CallStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut filter = CallFilter {
        campaign: query.campaign,
        status,
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
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let record = app.store.get(&id).await?.ok_or(ApiError::NotFound(id))?;
    Ok(Json(record).into_response())
}

/// `POST /calls/{id}/hangup`: end a live or ringing call through the provider.
pub async fn hang_up(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let record = app
        .store
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(id.clone()))?;
    if record.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "call {id} has already ended ({})",
            record.status
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
    let live = matches!(record.status, CallStatus::InProgress | CallStatus::Machine);
    control
        .hang_up(provider_call_id, live)
        .await
        .map_err(|e| ApiError::Provider {
            message: e.to_string(),
            id: None,
        })?;
    app.store
        .finish(&id, None, Some("hung up through the API"))
        .await?;
    if !live {
        app.store.record_status(&id, CallStatus::Canceled).await?;
    }
    let record = app.store.get(&id).await?.ok_or(ApiError::NotFound(id))?;
    Ok(Json(record).into_response())
}
