//! The campaign and do-not-call routes. Like `/calls`, each needs the `API_TOKEN` bearer token
//! (checked before any body is read) and counts against the token's rate limit.
//!
//! A campaign is created from JSON, or from a CSV body (`Content-Type: text/csv`) with its
//! settings as query parameters. Every contact is checked before anything is stored: a bad
//! one is reported with its line and no campaign is created.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::csv::{RawContact, read_contacts};
use super::dnc;
use super::model::{
    CampaignSpec, CampaignState, ContactState, NewContact, RetryPolicy, StateCounts,
};
use super::store::{CampaignRow, ContactRow};
use super::window::{CallingWindow, time_zone};
use crate::app::App;
use crate::calls::api::{self as calls_api, ApiError, ApiRateLimit, Authorized};
use crate::calls::store::model::rfc3339_ms;
use crate::e164;
use crate::prompts::PromptError;
use crate::server::body_timeout_in;

/// Largest campaign upload: room for 10,000 contacts with a few long variables each.
pub const MAX_UPLOAD_BYTES: usize = 5 * 1024 * 1024;
/// Contacts one campaign may hold.
pub const MAX_CONTACTS: usize = 100_000;
/// `max_concurrent` when a campaign names none.
const DEFAULT_MAX_CONCURRENT: u32 = 5;
/// Highest `max_attempts` accepted.
const MAX_ATTEMPTS: u32 = 20;
/// `GET /campaigns` lists this many unless told otherwise, and at most [`MAX_LIST`].
const DEFAULT_LIST: u32 = 50;
const MAX_LIST: u32 = 500;
/// `GET /campaigns/{id}/contacts` pages.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

mod upload;

pub use upload::create;

/// The campaign and do-not-call routes, with their body limit and the API token's `rate`.
pub fn routes(rate: ApiRateLimit) -> Router<Arc<App>> {
    Router::new()
        .route("/campaigns", post(create).get(list))
        .route("/campaigns/{id}", get(show))
        .route("/campaigns/{id}/contacts", get(contacts))
        .route("/campaigns/{id}/results.csv", get(results))
        .route("/campaigns/{id}/pause", post(pause))
        .route("/campaigns/{id}/resume", post(resume))
        .route("/campaigns/{id}/cancel", post(cancel))
        .route(
            "/dnc/{number}",
            post(dnc::add).delete(dnc::remove).get(dnc::show),
        )
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(Extension(rate))
}

/// A campaign request that failed; answered as `{"error": "…"}` (with `"line"` for a bad
/// contact).
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// What `/calls` would answer: authorization, a bad setting, the store.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A contact is wrong; nothing was created.
    #[error("line {line}: {problem}")]
    BadContact {
        /// Its line in the CSV (or position in the JSON list, from 1).
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// No campaign has this id.
    #[error("no campaign with id {0:?}")]
    NoCampaign(String),
    /// The number is not on the do-not-call list.
    #[error("{0} is not on the do-not-call list")]
    NotListed(String),
    /// The campaign's state does not allow the action.
    #[error("{0}")]
    WrongState(String),
    /// The upload is over [`MAX_UPLOAD_BYTES`].
    #[error("the upload is over the {} MiB a campaign takes; split the list into several campaigns", MAX_UPLOAD_BYTES / (1024 * 1024))]
    TooLarge,
}

impl From<crate::calls::StoreError> for CampaignError {
    fn from(error: crate::calls::StoreError) -> Self {
        CampaignError::Api(ApiError::Store(error))
    }
}

impl IntoResponse for CampaignError {
    fn into_response(self) -> Response {
        let status = match &self {
            // Answered by `ApiError` itself, below.
            CampaignError::Api(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CampaignError::BadContact { .. } => StatusCode::BAD_REQUEST,
            CampaignError::NoCampaign(_) | CampaignError::NotListed(_) => StatusCode::NOT_FOUND,
            CampaignError::WrongState(_) => StatusCode::CONFLICT,
            CampaignError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let mut body = json!({"error": self.to_string()});
        match self {
            // Answered as `/calls` answers it (status, headers, logging).
            CampaignError::Api(error) => return error.into_response(),
            CampaignError::BadContact { line, .. } => body["line"] = json!(line),
            _ => {}
        }
        (status, Json(body)).into_response()
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> CampaignError {
    CampaignError::Api(ApiError::BadRequest(message.into()))
}

// ---- Reading campaigns ----

async fn find(app: &App, id: &str) -> Result<Value, CampaignError> {
    let campaign = app
        .campaigns
        .store
        .campaign(id)
        .await?
        .ok_or_else(|| CampaignError::NoCampaign(id.to_owned()))?;
    let mut counts = app.campaigns.store.counts(&[id]).await?;
    let (counts, attempts) = counts.remove(id).unwrap_or_default();
    Ok(campaign_json(
        &campaign,
        &counts,
        attempts,
        app.campaigns.now_ms(),
    ))
}

/// A campaign as the API shows it.
fn campaign_json(row: &CampaignRow, counts: &StateCounts, attempts: u64, now_ms: i64) -> Value {
    let spec = &row.spec;
    json!({
        "id": row.id,
        "name": spec.name,
        "state": row.state,
        "prompt": spec.prompt,
        "provider": spec.provider,
        "from": spec.from,
        "timezone": spec.timezone,
        "window": {
            "start": spec.window.start(),
            "end": spec.window.end(),
            "days": spec.window.day_names(),
        },
        "pacing": {
            "max_concurrent": spec.max_concurrent,
            "calls_per_minute": spec.calls_per_minute,
        },
        "retry": {
            "on": spec.retry.on.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "max_attempts": spec.retry.max_attempts,
            "backoff_minutes": spec.retry.backoff_ms as f64 / 60_000.0,
        },
        "start_at": rfc3339_ms(spec.start_at_ms),
        "created_at": rfc3339_ms(row.created_ms),
        "started_at": row.started_ms.map(rfc3339_ms),
        "finished_at": row.finished_ms.map(rfc3339_ms),
        "contacts": counts.total(),
        "counts": counts,
        "attempts": attempts,
        "estimated_finish_at": estimated_finish(row, counts, now_ms).map(rfc3339_ms),
    })
}

/// When a running campaign should be through, at the pace it has settled contacts so far;
/// `None` before any contact is settled. A rough guide: back-offs and windows make the tail
/// slower than the start.
fn estimated_finish(row: &CampaignRow, counts: &StateCounts, now_ms: i64) -> Option<i64> {
    let started = row.started_ms?;
    if row.state != CampaignState::Running {
        return None;
    }
    let settled = counts.done + counts.failed + counts.skipped;
    let elapsed = now_ms.saturating_sub(started);
    if settled == 0 || elapsed <= 0 {
        return None;
    }
    let per_contact = elapsed as f64 / settled as f64;
    Some(now_ms.saturating_add((per_contact * counts.open() as f64) as i64))
}

/// `GET /campaigns` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
}

/// `GET /campaigns?limit=`: newest first, each with its counts.
pub async fn list(
    _: Authorized,
    State(app): State<Arc<App>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, CampaignError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
    let store = &app.campaigns.store;
    let rows = store.campaigns(limit).await?;
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let mut counts = store.counts(&ids).await?;
    let now_ms = app.campaigns.now_ms();
    let campaigns: Vec<Value> = rows
        .iter()
        .map(|row| {
            let (counts, attempts) = counts.remove(&row.id).unwrap_or_default();
            campaign_json(row, &counts, attempts, now_ms)
        })
        .collect();
    Ok(Json(json!({ "campaigns": campaigns })).into_response())
}

/// `GET /campaigns/{id}`.
pub async fn show(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, CampaignError> {
    Ok(Json(find(&app, &id).await?).into_response())
}

/// `GET /campaigns/{id}/contacts` query.
#[derive(Debug, Deserialize)]
pub struct ContactsQuery {
    state: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /campaigns/{id}/contacts?state=&after=&limit=`: contacts in line order, each with its
/// attempts and their calls; `next_after` pages on.
pub async fn contacts(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<ContactsQuery>,
) -> Result<Response, CampaignError> {
    let state = query
        .state
        .as_deref()
        .map(str::parse::<ContactState>)
        .transpose()
        .map_err(bad_request)?;
    let store = &app.campaigns.store;
    if store.campaign(&id).await?.is_none() {
        return Err(CampaignError::NoCampaign(id));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = store
        .contacts(&id, state, query.after.unwrap_or(0), limit)
        .await?;
    let next_after = (page.len() == limit as usize)
        .then(|| page.last().map(|contact| contact.line))
        .flatten();
    let contacts: Vec<Value> = page.iter().map(contact_json).collect();
    Ok(Json(json!({ "contacts": contacts, "next_after": next_after })).into_response())
}

fn contact_json(contact: &ContactRow) -> Value {
    let waiting = matches!(
        contact.state,
        ContactState::Pending | ContactState::RetryScheduled
    );
    let calls: Vec<Value> = contact
        .calls
        .iter()
        .map(|call| {
            json!({
                "attempt": call.attempt,
                "call_id": call.call_id,
                "status": call.status,
                "duration_seconds": call.duration_seconds,
                "started_at": rfc3339_ms(call.started_ms),
            })
        })
        .collect();
    json!({
        "line": contact.line,
        "to": contact.to,
        "timezone": contact.timezone,
        "vars": contact.vars,
        "state": contact.state,
        "attempts": contact.attempts,
        "next_attempt_at": waiting.then(|| rfc3339_ms(contact.next_attempt_ms)),
        "last_status": contact.last_status,
        "calls": calls,
    })
}

/// `GET /campaigns/{id}/results.csv`: one row per contact, in line order:
/// `line,to,state,attempts,last_status,duration_seconds,call_ids` (call ids `;`-separated,
/// oldest first; the duration is the last call's).
pub async fn results(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, CampaignError> {
    let store = &app.campaigns.store;
    if store.campaign(&id).await?.is_none() {
        return Err(CampaignError::NoCampaign(id));
    }
    let mut out = ::csv::Writer::from_writer(Vec::new());
    let write_failed = |e: ::csv::Error| {
        tracing::error!(error = %e, "could not write results.csv");
        CampaignError::Api(ApiError::Internal("could not write results.csv"))
    };
    out.write_record([
        "line",
        "to",
        "state",
        "attempts",
        "last_status",
        "duration_seconds",
        "call_ids",
    ])
    .map_err(write_failed)?;
    let mut after = 0;
    loop {
        let page = store.contacts(&id, None, after, MAX_PAGE).await?;
        for contact in &page {
            let duration = contact
                .calls
                .last()
                .and_then(|call| call.duration_seconds)
                .map(|seconds| seconds.to_string())
                .unwrap_or_default();
            let call_ids = contact
                .calls
                .iter()
                .map(|call| call.call_id.as_str())
                .collect::<Vec<_>>()
                .join(";");
            out.write_record([
                contact.line.to_string().as_str(),
                &contact.to,
                contact.state.as_str(),
                &contact.attempts.to_string(),
                contact.last_status.as_deref().unwrap_or(""),
                &duration,
                &call_ids,
            ])
            .map_err(write_failed)?;
        }
        match page.last() {
            Some(last) if page.len() == MAX_PAGE as usize => after = last.line,
            _ => break,
        }
    }
    let body = out
        .into_inner()
        .map_err(|e| write_failed(e.into_error().into()))?;
    let disposition = format!("attachment; filename=\"campaign-{id}-results.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

// ---- Pause, resume, cancel ----

/// Answers a state change that did not apply: 404 for no such campaign, else 409 saying why.
async fn refused(app: &App, id: &str, action: &str, allowed: &str) -> CampaignError {
    match app.campaigns.store.campaign(id).await {
        Ok(Some(campaign)) => CampaignError::WrongState(format!(
            "campaign {id} is {}; only a {allowed} campaign can be {action}",
            campaign.state
        )),
        Ok(None) => CampaignError::NoCampaign(id.to_owned()),
        Err(error) => error.into(),
    }
}

/// `POST /campaigns/{id}/pause`: no new calls from now on; calls in progress go on.
pub async fn pause(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, CampaignError> {
    let moved = (CampaignState::Running, CampaignState::Paused);
    move_campaign(&app, &id, moved, ("paused", "running")).await
}

/// `POST /campaigns/{id}/resume`: a paused campaign dials again.
pub async fn resume(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, CampaignError> {
    let moved = (CampaignState::Paused, CampaignState::Running);
    let response = move_campaign(&app, &id, moved, ("resumed", "paused")).await?;
    app.campaigns.wake_dialer();
    Ok(response)
}

/// Moves campaign `id` from one state to another and answers with it; `action` and
/// `allowed` (the state it needs) word the refusal when it is in another state.
async fn move_campaign(
    app: &App,
    id: &str,
    (from, to): (CampaignState, CampaignState),
    (action, allowed): (&str, &str),
) -> Result<Response, CampaignError> {
    if !app.campaigns.store.transition(id, &[from], to).await? {
        return Err(refused(app, id, action, allowed).await);
    }
    tracing::info!(campaign = %id, "campaign {action}");
    Ok(Json(find(app, id).await?).into_response())
}

/// `POST /campaigns/{id}/cancel` query.
#[derive(Debug, Deserialize)]
pub struct CancelQuery {
    #[serde(default)]
    hangup: bool,
}

/// `POST /campaigns/{id}/cancel?hangup=true|false`: contacts not yet called are canceled.
/// Calls in progress go on unless `hangup=true`, which ends them through the provider.
pub async fn cancel(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<CancelQuery>,
) -> Result<Response, CampaignError> {
    let campaigns = &app.campaigns;
    if !campaigns.store.cancel(&id, campaigns.now_ms()).await? {
        return Err(refused(&app, &id, "canceled", "running or paused").await);
    }
    tracing::info!(campaign = %id, hangup = query.hangup, "campaign canceled");
    let mut hung_up = Vec::new();
    if query.hangup {
        for call_id in campaigns.store.live_calls(&id).await? {
            let Some(record) = app.store.get(&call_id).await? else {
                continue;
            };
            match calls_api::end_call(&app, &record, "campaign canceled").await {
                Ok(()) => hung_up.push(call_id),
                // Ended on its own meanwhile: nothing to do.
                Err(ApiError::Conflict(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, call = %call_id, "could not hang up a canceled campaign's call");
                }
            }
        }
    }
    let mut campaign = find(&app, &id).await?;
    campaign["hung_up"] = json!(hung_up);
    Ok(Json(campaign).into_response())
}
