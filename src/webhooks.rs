//! The providers' HTTP webhooks: answer (connect the call to our media stream) and the
//! status, hang-up and machine-detection callbacks that keep call records up to date.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::ANSWER_TO_START;
use crate::app::App;
use crate::bridge::jobs::session_setup;
use crate::bridge::voicemail::leaves_message;
use crate::calls::{CallRecord, CallStatus, NewCall};
use crate::e164;
use crate::metrics::WebhookRejection;
use crate::signature::{StreamClaims, unix_now};
use crate::telephony::{
    self, ANSWERED_BY_PARAM, CallInfo, Direction, Provider, RECORD_PARAM, TOKEN_PARAM, is_machine,
};

/// Largest webhook body accepted; real ones are a few kilobytes.
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Why a webhook was refused.
#[derive(Debug)]
pub enum Rejection {
    /// The path names no provider.
    NoSuchProvider,
    /// The body is unreadable or not a form or JSON object.
    BadBody(String),
    /// The signature is missing or wrong.
    BadSignature,
}

impl Rejection {
    /// The `reason` label this rejection is counted under.
    fn metric_reason(&self) -> WebhookRejection {
        match self {
            Rejection::NoSuchProvider => WebhookRejection::NoSuchProvider,
            Rejection::BadBody(_) => WebhookRejection::BadBody,
            Rejection::BadSignature => WebhookRejection::BadSignature,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::NoSuchProvider => {
                (StatusCode::NOT_FOUND, "no such provider").into_response()
            }
            Rejection::BadBody(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
            Rejection::BadSignature => {
                (StatusCode::FORBIDDEN, "invalid webhook signature").into_response()
            }
        }
    }
}

/// A provider webhook whose signature checked out: the provider named by the path's first
/// segment and the request's parameters (query string plus form or JSON body).
pub struct Webhook {
    /// The provider that sent it.
    pub provider: &'static dyn Provider,
    /// Query and body parameters; the body wins on a name clash.
    pub params: HashMap<String, String>,
}

impl FromRequest<Arc<App>> for Webhook {
    type Rejection = Rejection;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let name = parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let Some(provider) = telephony::provider_by_name(name) else {
            // The path's own text would let anyone mint label values: count it as `unknown`.
            app.metrics
                .webhook_rejected("unknown", WebhookRejection::NoSuchProvider);
            return Err(Rejection::NoSuchProvider);
        };
        read_webhook(provider, parts, body, app)
            .await
            .inspect_err(|rejection| {
                app.metrics
                    .webhook_rejected(provider.name(), rejection.metric_reason());
            })
    }
}

/// Reads and checks the webhook `provider` sent.
async fn read_webhook(
    provider: &'static dyn Provider,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
    app: &App,
) -> Result<Webhook, Rejection> {
    let body = axum::body::to_bytes(body, MAX_WEBHOOK_BYTES)
        .await
        .map_err(|e| Rejection::BadBody(format!("unreadable body: {e}")))?;
    let body_params = parse_body(&parts.headers, &body).map_err(Rejection::BadBody)?;
    if let Some(secret) = app.providers.webhook_secret(provider.name()) {
        // Signed over the URL the provider used, which is the public one, not ours.
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", app.config.public_url);
        if !provider.verify_webhook(secret.expose(), &url, &parts.headers, &body_params) {
            tracing::warn!(provider = provider.name(), %path, "refused a webhook with a missing or wrong signature");
            return Err(Rejection::BadSignature);
        }
    }
    let mut params: HashMap<String, String> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    params.extend(body_params);
    Ok(Webhook { provider, params })
}

/// Webhook bodies are form-encoded; Plivo may post JSON.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
            .map(|map| {
                map.into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect()
            })
            .map_err(|e| format!("invalid JSON body: {e}"))
    } else {
        serde_urlencoded::from_bytes(body).map_err(|e| format!("invalid form body: {e}"))
    }
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// The end reason of a call refused because every call slot was taken.
pub const OVER_CAPACITY: &str = "over capacity: all call slots were taken";

/// `POST /{provider}/answer`: connect the call to `/{provider}/stream`, unless a machine
/// answered, the call already ended (a replayed webhook) or the server is full.
pub async fn answer(
    State(app): State<Arc<App>>,
    Webhook { provider, params }: Webhook,
) -> Response {
    let name = provider.name();
    let Some(mut info) = provider.call_info(&params) else {
        tracing::warn!(provider = name, "answer webhook without a call id");
        return (StatusCode::BAD_REQUEST, "missing call id parameter").into_response();
    };
    // Caller ids come from the phone network; a control character in one would make the
    // answer XML not well-formed (and reach logs, records and tools).
    info.from = without_control_characters(&info.from);
    info.to = without_control_characters(&info.to);
    tracing::info!(
        provider = name,
        call_id = %info.provider_call_id,
        from = %info.from,
        to = %info.to,
        direction = info.direction.as_str(),
        "answering call"
    );
    let record = find_or_create_record(&app, provider, &info, params.get(RECORD_PARAM)).await;
    // With `ON_MACHINE=message` a machine's record is final (`machine`) before the stream
    // that leaves the message is connected.
    let message_for_machine = info
        .answered_by
        .as_deref()
        .is_some_and(|v| leaves_message(app.config.turns.on_machine, v));
    if let Some(record) = &record
        && record.status.is_final()
        && !(message_for_machine && record.status == CallStatus::Machine)
    {
        // Providers fetch the answer URL once per call; this is a replay of a call that is
        // over, and answering it would hand out a fresh stream token for a finished call.
        tracing::warn!(call = %record.id, status = %record.status, "answer webhook for a call that has already ended; hanging up");
        return xml(provider.hangup_xml());
    }
    let record_id = record.as_ref().map(|record| record.id.clone());

    if let Some(verdict) = info.answered_by.as_deref().filter(|v| is_machine(v)) {
        if let Some(id) = &record_id {
            mark_machine(&app, id, verdict).await;
        }
        // The stream reads the verdict from the record, so no record, no message.
        if !(message_for_machine && record_id.is_some()) {
            tracing::info!(
                answered_by = verdict,
                "answered by a machine; hanging up without speaking"
            );
            return xml(provider.hangup_xml());
        }
        tracing::info!(
            answered_by = verdict,
            "answered by a machine; connecting the stream to leave a message"
        );
    }

    let slot = record_id.as_deref().unwrap_or(&info.provider_call_id);
    if let Err(full) = app.admission.reserve(slot, Instant::now(), ANSWER_TO_START) {
        tracing::warn!(%full, call = slot, "refusing a call: the server is at its call limit");
        if let Some(id) = &record_id
            && let Err(error) = app.store.fail(id, OVER_CAPACITY).await
        {
            tracing::error!(%error, "could not record the refused call");
        }
        return xml(provider.busy_xml(&app.config.limits.busy_message));
    }
    prewarm_session(&app, slot, record.as_ref());
    if let Some(id) = &record_id
        && let Err(error) = app.store.record_status(id, CallStatus::InProgress).await
    {
        tracing::error!(%error, "could not record the answer");
    }
    let claims = StreamClaims {
        call_id: info.provider_call_id,
        record: record_id,
        from: info.from,
        to: info.to,
        direction: info.direction,
        expires_at: unix_now() + ANSWER_TO_START.as_secs(),
    };
    xml(connect_stream(
        &app,
        provider,
        &claims,
        info.answered_by.as_deref(),
    ))
}

/// Starts opening the Gemini session of the call admitted under `slot` now, while the
/// provider opens its media stream; the stream's start takes it ([`crate::bridge::prewarm`]).
fn prewarm_session(app: &App, slot: &str, record: Option<&CallRecord>) {
    if !app.prewarm.is_on() {
        return;
    }
    if let (Some(config), Some(setup)) = (&app.config.gemini, session_setup(app, record)) {
        app.prewarm.start(slot, setup, config, &app.shutdown);
    }
}

/// The answer XML that connects the call to our stream route, carrying the claims and the
/// token that signs them into the stream's `start`.
fn connect_stream(
    app: &App,
    provider: &dyn Provider,
    claims: &StreamClaims,
    answered_by: Option<&str>,
) -> String {
    let token = app.stream_tokens.issue(claims);
    let mut stream_params = vec![
        ("from", claims.from.as_str()),
        ("to", claims.to.as_str()),
        ("direction", claims.direction.as_str()),
    ];
    if let Some(id) = &claims.record {
        stream_params.push((RECORD_PARAM, id.as_str()));
    }
    stream_params.push((TOKEN_PARAM, token.as_str()));
    if answered_by == Some("human") {
        stream_params.push((ANSWERED_BY_PARAM, "human"));
    }
    let stream_url = format!("{}/{}/stream", app.config.public_ws_url(), provider.name());
    provider.answer_xml(&stream_url, &stream_params)
}

fn without_control_characters(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// The call's record: the one `POST /calls` made (named by the webhook's `record` query), the
/// one an earlier delivery of this webhook made (found by the provider's call id), or a new
/// one for an inbound call, created `ringing` until it is admitted. A database failure is
/// logged and the call is still answered: a caller matters more than a record.
async fn find_or_create_record(
    app: &App,
    provider: &dyn Provider,
    info: &CallInfo,
    record_id: Option<&String>,
) -> Option<CallRecord> {
    let store = &app.store;
    let found = match record_id {
        Some(id) => store.get(id).await.inspect(|found| {
            if found.is_none() {
                tracing::warn!(call_id = %id, "answer webhook names an unknown call record");
            }
        }),
        None => {
            store
                .find_by_provider_call_id(provider.name(), &info.provider_call_id)
                .await
        }
    };
    let record = match found {
        Ok(Some(record)) => record,
        Ok(None) => {
            let new = NewCall {
                provider: provider.name().to_owned(),
                provider_call_id: Some(info.provider_call_id.clone()),
                direction: info.direction,
                from: info.from.clone(),
                to: info.to.clone(),
                campaign: None,
                prompt: (info.direction == Direction::Inbound).then(|| "inbound".to_owned()),
                vars: serde_json::Map::new(),
                status: CallStatus::Ringing,
            };
            return store
                .create(new)
                .await
                .inspect_err(|error| tracing::error!(%error, "could not create the call record"))
                .ok();
        }
        Err(error) => {
            tracing::error!(%error, "could not read the call record");
            return None;
        }
    };
    // Plivo learns the CallUUID only now; before, the record held the request UUID.
    if record.provider_call_id.as_deref() != Some(info.provider_call_id.as_str())
        && let Err(error) = store
            .set_provider_call_id(&record.id, &info.provider_call_id)
            .await
    {
        tracing::error!(%error, "could not store the provider call id");
    }
    Some(record)
}

async fn mark_machine(app: &App, id: &str, verdict: &str) {
    let store = &app.store;
    let results = [
        store.set_answered_by(id, verdict).await,
        store.record_status(id, CallStatus::Machine).await,
    ];
    for error in results.into_iter().filter_map(Result::err) {
        tracing::error!(%error, "could not record the machine answer");
    }
}

/// `POST /{provider}/status` and `/{provider}/hangup`: status, hang-up and machine-detection
/// callbacks.
pub async fn status(
    State(app): State<Arc<App>>,
    Webhook { provider, params }: Webhook,
) -> Response {
    let name = provider.name();
    let event = provider.callback_event(&params);
    let ended = event
        .status
        .as_deref()
        .and_then(|raw| raw.parse::<CallStatus>().ok())
        .is_some_and(CallStatus::is_final);
    let record = match find_record(
        &app,
        provider,
        params.get(RECORD_PARAM),
        event.provider_call_id.as_deref(),
    )
    .await
    {
        Some(record) => record,
        None => {
            tracing::debug!(
                provider = name,
                ?event,
                "callback for a call without a record"
            );
            if ended && let Some(call_id) = &event.provider_call_id {
                app.admission.release(call_id);
                app.prewarm.cancel(call_id);
            }
            return StatusCode::NO_CONTENT.into_response();
        }
    };
    if ended {
        // A call that ends before its stream starts gives its slot back, and closes its
        // pre-warmed session, now rather than when either lapses; a live call's slot is
        // held by its task instead.
        app.admission.release(&record.id);
        app.prewarm.cancel(&record.id);
    }
    tracing::info!(call = %record.id, status = ?event.status, answered_by = ?event.answered_by, "provider callback");
    let store = &app.store;

    if let Some(verdict) = event.answered_by.as_deref() {
        if is_machine(verdict) {
            mark_machine(&app, &record.id, verdict).await;
            machine_on_live_call(&app, provider, &record, verdict).await;
        } else if let Err(error) = store.set_answered_by(&record.id, verdict).await {
            tracing::error!(%error, "could not record who answered");
        }
    }
    if let Some(raw) = event.status.as_deref() {
        match raw.parse::<CallStatus>() {
            Ok(status) => {
                if let Err(error) = store.record_status(&record.id, status).await {
                    tracing::error!(%error, "could not record the call status");
                }
                if status.is_final() {
                    // A completed call's reason comes from the bridge, which knows who ended
                    // it; an unanswered call's reason is the provider's.
                    let reason = (status != CallStatus::Completed && record.end_reason.is_none())
                        .then(|| event.hangup_cause.as_deref().unwrap_or(status.as_str()));
                    if let Err(error) = store
                        .finish(&record.id, event.duration_seconds, reason)
                        .await
                    {
                        tracing::error!(%error, "could not record the end of the call");
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "callback status ignored"),
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Detection said `verdict` (a machine) after the call was connected. With
/// `ON_MACHINE=message` the call's task leaves the message (a stream not started yet reads
/// the verdict from the record instead); otherwise the call is hung up before any message
/// is left. The provider may already be hanging up, which is fine.
async fn machine_on_live_call(
    app: &App,
    provider: &dyn Provider,
    record: &CallRecord,
    verdict: &str,
) {
    if leaves_message(app.config.turns.on_machine, verdict) {
        if !app.machine_verdicts.deliver(&record.id, verdict) {
            tracing::info!(call = %record.id, "no call here is waiting for this verdict; a stream that starts later reads it from the record");
        }
        return;
    }
    if let (Some(control), Some(call_id)) = (
        app.providers.control(provider.name()),
        record.provider_call_id.as_deref(),
    ) && let Err(error) = control.hang_up(call_id, true).await
    {
        tracing::warn!(%error, "could not hang up on the machine");
    }
}

async fn find_record(
    app: &App,
    provider: &dyn Provider,
    record_id: Option<&String>,
    provider_call_id: Option<&str>,
) -> Option<CallRecord> {
    let found = match (record_id, provider_call_id) {
        (Some(id), _) => app.store.get(id).await,
        (None, Some(call_id)) => {
            app.store
                .find_by_provider_call_id(provider.name(), call_id)
                .await
        }
        (None, None) => Ok(None),
    };
    found.unwrap_or_else(|error| {
        tracing::error!(%error, "could not read the call record");
        None
    })
}

/// `POST /{provider}/transfer?to=…`: the XML that dials a transfer target (Plivo fetches it
/// when a call is transferred). Only the configured transfer numbers are dialled.
pub async fn transfer(
    State(app): State<Arc<App>>,
    Webhook { provider, params }: Webhook,
) -> Response {
    // Plivo writes numbers without `+`; an unreadable one is refused as not allowed below.
    let requested = params
        .get("to")
        .map(|to| e164::normalize(to).unwrap_or_else(|| to.clone()));
    match app.tools.transfer_target(requested.as_deref()) {
        Ok(to) => xml(provider.transfer_xml(&to)),
        Err(why) => (StatusCode::FORBIDDEN, why).into_response(),
    }
}
