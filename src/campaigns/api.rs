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

// ---- Creating a campaign ----

/// A campaign's settings as the flat query parameters of a CSV upload spell them (and the
/// JSON body is folded into).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    name: Option<String>,
    prompt: Option<String>,
    provider: Option<String>,
    from: Option<String>,
    max_concurrent: Option<u32>,
    calls_per_minute: Option<u32>,
    window_start: Option<String>,
    window_end: Option<String>,
    days: Option<String>,
    timezone: Option<String>,
    max_attempts: Option<u32>,
    retry_on: Option<String>,
    backoff_minutes: Option<f64>,
    start_at: Option<String>,
}

/// A list given as one comma-separated string or as a JSON array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NameList {
    One(String),
    Many(Vec<String>),
}

impl NameList {
    fn joined(self) -> String {
        match self {
            NameList::One(text) => text,
            NameList::Many(names) => names.join(","),
        }
    }
}

/// `POST /campaigns` JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCampaign {
    name: Option<String>,
    prompt: Option<String>,
    provider: Option<String>,
    from: Option<String>,
    contacts: Vec<JsonContact>,
    #[serde(default)]
    window: Option<JsonWindow>,
    #[serde(default)]
    pacing: Option<JsonPacing>,
    #[serde(default)]
    retry: Option<JsonRetry>,
    timezone: Option<String>,
    start_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonContact {
    to: String,
    #[serde(default)]
    vars: Map<String, Value>,
    timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonWindow {
    start: Option<String>,
    end: Option<String>,
    days: Option<NameList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPacing {
    max_concurrent: Option<u32>,
    calls_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRetry {
    on: Option<NameList>,
    max_attempts: Option<u32>,
    backoff_minutes: Option<f64>,
}

impl CreateCampaign {
    /// The settings, flattened, and the contacts numbered from 1.
    fn split(self) -> (Settings, Vec<RawContact>) {
        let window = self.window.unwrap_or_default();
        let pacing = self.pacing.unwrap_or_default();
        let retry = self.retry.unwrap_or_default();
        let settings = Settings {
            name: self.name,
            prompt: self.prompt,
            provider: self.provider,
            from: self.from,
            max_concurrent: pacing.max_concurrent,
            calls_per_minute: pacing.calls_per_minute,
            window_start: window.start,
            window_end: window.end,
            days: window.days.map(NameList::joined),
            timezone: self.timezone,
            max_attempts: retry.max_attempts,
            retry_on: retry.on.map(NameList::joined),
            backoff_minutes: retry.backoff_minutes,
            start_at: self.start_at,
        };
        let contacts = self
            .contacts
            .into_iter()
            .zip(1..)
            .map(|(contact, line)| RawContact {
                line,
                to: contact.to,
                timezone: contact.timezone,
                vars: contact.vars,
            })
            .collect();
        (settings, contacts)
    }
}

/// `POST /campaigns`: validate everything, then store the campaign and its contacts at once.
pub async fn create(
    _: Authorized,
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, CampaignError> {
    let body = read_upload(body)?;
    let (settings, contacts) = if is_csv(&headers) {
        let settings: Settings = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| bad_request(format!("invalid query parameters: {e}")))?;
        let contacts =
            read_contacts(&body, MAX_CONTACTS).map_err(|e| CampaignError::BadContact {
                line: e.line,
                problem: e.problem,
            })?;
        (settings, contacts)
    } else {
        if query.as_deref().is_some_and(|q| !q.is_empty()) {
            return Err(bad_request(
                "with a JSON body the settings go in the body; query parameters are for text/csv uploads",
            ));
        }
        let request: CreateCampaign = serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("invalid request body: {e}")))?;
        if request.contacts.len() > MAX_CONTACTS {
            return Err(bad_request(format!(
                "a campaign takes at most {MAX_CONTACTS} contacts"
            )));
        }
        request.split()
    };
    let spec = campaign_spec(&app, settings)?;
    let contacts = validate_contacts(&app, &spec, contacts)?;
    let campaigns = &app.campaigns;
    let id = campaigns
        .store
        .create(&spec, &contacts, campaigns.now_ms())
        .await?;
    tracing::info!(campaign = %id, name = %spec.name, contacts = contacts.len(), "campaign created");
    campaigns.wake_dialer();
    let campaign = find(&app, &id).await?;
    Ok((StatusCode::CREATED, Json(campaign)).into_response())
}

fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "text/csv" || v == "application/csv")
}

fn read_upload(body: Result<Bytes, BytesRejection>) -> Result<Bytes, CampaignError> {
    body.map_err(|rejection| {
        if let Some(timed_out) = body_timeout_in(&rejection) {
            return CampaignError::Api(ApiError::BodyTimedOut(timed_out));
        }
        match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                CampaignError::TooLarge
            }
            other => bad_request(other.body_text()),
        }
    })
}

/// Checks the settings and fills in defaults.
fn campaign_spec(app: &App, settings: Settings) -> Result<CampaignSpec, CampaignError> {
    let name = settings
        .name
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| bad_request("`name` is required: a label for the campaign"))?;
    if name.chars().count() > 200 {
        return Err(bad_request("`name` is over 200 characters"));
    }
    let control = calls_api::provider_control(app, settings.provider.as_deref())?;
    let from = calls_api::caller_id(control.as_ref(), settings.from.as_deref())?;
    let max_concurrent = settings.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
    if max_concurrent == 0 {
        return Err(bad_request("max_concurrent must be at least 1"));
    }
    if settings.calls_per_minute == Some(0) {
        return Err(bad_request(
            "calls_per_minute must be at least 1 (leave it out for no rate limit)",
        ));
    }
    let window = CallingWindow::parse(
        settings.window_start.as_deref(),
        settings.window_end.as_deref(),
        settings.days.as_deref(),
    )
    .map_err(|e| bad_request(e.0))?;
    let timezone = settings.timezone.unwrap_or_else(|| "UTC".to_owned());
    time_zone(&timezone).map_err(|e| bad_request(format!("timezone: {}", e.0)))?;
    let mut retry = RetryPolicy::default();
    if let Some(on) = settings.retry_on.as_deref() {
        retry.on = RetryPolicy::parse_on(on).map_err(bad_request)?;
    }
    if let Some(max_attempts) = settings.max_attempts {
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(bad_request(format!(
                "max_attempts must be 1 to {MAX_ATTEMPTS} (1: no retries)"
            )));
        }
        retry.max_attempts = max_attempts;
    }
    if let Some(minutes) = settings.backoff_minutes {
        if !minutes.is_finite() || !(0.0..=10_080.0).contains(&minutes) {
            return Err(bad_request("backoff_minutes must be 0 to 10080 (a week)"));
        }
        // At most a week in milliseconds: far inside i64.
        retry.backoff_ms = (minutes * 60_000.0).round() as i64;
    }
    let start_at_ms = match settings.start_at.as_deref() {
        None => app.campaigns.now_ms(),
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map(jiff::Timestamp::as_millisecond)
            .map_err(|_| {
                bad_request(format!(
                    "start_at: {text:?} is not an RFC 3339 time such as 2026-12-01T09:00:00Z or 2026-12-01T09:00:00-05:00"
                ))
            })?,
    };
    Ok(CampaignSpec {
        name,
        prompt: settings
            .prompt
            .unwrap_or_else(|| calls_api::DEFAULT_OUTBOUND_PROMPT.to_owned()),
        provider: control.provider().to_owned(),
        from,
        max_concurrent,
        calls_per_minute: settings.calls_per_minute,
        window,
        timezone,
        retry,
        start_at_ms,
    })
}

/// Checks every contact: an E.164 number, not twice in the list, a known time zone, and a
/// value for each of the prompt's placeholders. The first problem stops the upload.
fn validate_contacts(
    app: &App,
    spec: &CampaignSpec,
    contacts: Vec<RawContact>,
) -> Result<Vec<NewContact>, CampaignError> {
    if contacts.is_empty() {
        return Err(bad_request("no contacts: give at least one"));
    }
    // Placeholders are only checked for presence, so contacts with the same set of variable
    // names render alike: one render per set, not per contact.
    let mut rendered: HashMap<BTreeSet<String>, Result<(), PromptError>> = HashMap::new();
    let mut seen: HashMap<String, u64> = HashMap::with_capacity(contacts.len());
    let mut valid = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let line = contact.line;
        let problem = |problem: String| CampaignError::BadContact { line, problem };
        let to = contact.to.trim().to_owned();
        if !e164::is_e164(&to) {
            return Err(problem(format!(
                "`to` must be an E.164 number like +15551234567, got {:?}",
                contact.to
            )));
        }
        if let Some(first) = seen.insert(to.clone(), line) {
            return Err(problem(format!(
                "{to} is already on line {first}; each number once per campaign"
            )));
        }
        if let Some(zone) = &contact.timezone {
            time_zone(zone).map_err(|e| problem(e.0))?;
        }
        let names: BTreeSet<String> = contact
            .vars
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, _)| name.clone())
            .collect();
        let outcome = rendered
            .entry(names)
            .or_insert_with(|| app.prompts.render(&spec.prompt, &contact.vars).map(|_| ()));
        match outcome {
            Ok(()) => {}
            Err(error @ PromptError::MissingVars { .. }) => {
                return Err(problem(error.to_string()));
            }
            // The template itself is wrong: not this contact's fault.
            Err(error) => return Err(bad_request(error.to_string())),
        }
        valid.push(NewContact {
            line,
            to,
            vars: contact.vars,
            timezone: contact.timezone,
        });
    }
    Ok(valid)
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
    let store = &app.campaigns.store;
    if !store
        .transition(&id, &[CampaignState::Running], CampaignState::Paused)
        .await?
    {
        return Err(refused(&app, &id, "paused", "running").await);
    }
    tracing::info!(campaign = %id, "campaign paused");
    Ok(Json(find(&app, &id).await?).into_response())
}

/// `POST /campaigns/{id}/resume`: a paused campaign dials again.
pub async fn resume(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, CampaignError> {
    let store = &app.campaigns.store;
    if !store
        .transition(&id, &[CampaignState::Paused], CampaignState::Running)
        .await?
    {
        return Err(refused(&app, &id, "resumed", "paused").await);
    }
    tracing::info!(campaign = %id, "campaign resumed");
    app.campaigns.wake_dialer();
    Ok(Json(find(&app, &id).await?).into_response())
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
