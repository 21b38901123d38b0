//! Browser calls: `POST /web/calls` makes the record and a single-use stream token, and
//! `GET /web/stream` turns the token into a call on the bridge.
//!
//! The token is the same [`StreamClaims`] token an answer webhook hands a phone provider, so
//! the bridge's start check (signature, expiry, single use in `stream_tokens`, a call slot)
//! is the one every phone call passes. The route checks the signature once more before the
//! upgrade, so a browser holding no genuine token gets a plain HTTP refusal and never a
//! socket; a genuine token used a second time is refused by that start check, before any
//! Gemini session.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::calls::api::{ApiError, Authorized};
use crate::calls::dial::DialSlot;
use crate::calls::{CallStatus, NewCall};
use crate::server::{MAX_PHONE_MESSAGE_BYTES, PHONE_READ_BUFFER_BYTES};
use crate::signature::{StreamClaims, unix_now};
use crate::telephony::web::{self, Web, WebStream};

/// How long a browser call's slot and token wait for its stream: the console opens the
/// socket straight after its request, so this only covers a slow network.
pub const STREAM_TO_START: Duration = Duration::from_secs(60);

/// `POST /web/calls` answer: the call's record id and the URL of its audio socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedWebCall {
    /// The call record's id (`GET /calls/{id}`).
    pub id: String,
    /// Where to open the call's WebSocket, relative to the server, with its single-use token.
    pub stream_url: String,
}

/// `POST /web/calls`: a call slot, a record (provider `web`, inbound, `ringing` until the
/// browser's stream opens) and a stream token. The body, if any, is ignored.
pub async fn create(_: Authorized, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let mut slot = DialSlot::take_for(&app.admission, STREAM_TO_START)?;
    let record = app
        .store
        .create(NewCall {
            provider: web::NAME.to_owned(),
            provider_call_id: None,
            direction: web::DIRECTION,
            from: web::FROM.to_owned(),
            to: web::TO.to_owned(),
            campaign: None,
            prompt: Some("inbound".to_owned()),
            vars: serde_json::Map::new(),
            status: CallStatus::Ringing,
        })
        .await?;
    slot.bind_to_record(&record.id);
    let claims = StreamClaims {
        call_id: record.id.clone(),
        record: Some(record.id.clone()),
        from: web::FROM.to_owned(),
        to: web::TO.to_owned(),
        direction: web::DIRECTION,
        expires_at: unix_now() + STREAM_TO_START.as_secs(),
    };
    let token = app.stream_tokens.issue(&claims);
    slot.keep();
    give_up_unless_started(Arc::clone(&app), record.id.clone());
    tracing::info!(call = %record.id, "browser call placed");
    let created = CreatedWebCall {
        stream_url: web::stream_url(&record.id, &token),
        id: record.id,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// A browser that never gets its stream going leaves no open call behind: once the token
/// has lapsed, a record that is neither finished nor a live call here is marked failed.
fn give_up_unless_started(app: Arc<App>, id: String) {
    tokio::spawn(async move {
        tokio::time::sleep(STREAM_TO_START + Duration::from_secs(1)).await;
        match app.store.get(&id).await {
            Ok(Some(record))
                if !record.status.is_final() && !app.admission.live_records().contains(&id) =>
            {
                if let Err(error) = app
                    .store
                    .fail(&id, "the browser call's audio stream never started")
                    .await
                {
                    tracing::error!(%error, "could not record the abandoned browser call");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "could not read the browser call's record"),
        }
    });
}

/// `GET /web/stream` query: the token and call id `POST /web/calls` gave.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    token: Option<String>,
    call: Option<String>,
}

/// `GET /web/stream?token=…&call=…`: the browser call's audio, both ways.
pub async fn stream(
    State(app): State<Arc<App>>,
    Query(query): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let (Some(token), Some(call)) = (query.token, query.call) else {
        return (
            StatusCode::UNAUTHORIZED,
            "a browser call's stream needs the `token` and `call` that POST /web/calls gave",
        )
            .into_response();
    };
    let start = web::stream_start(&call, &token);
    if let Err(refused) = app
        .stream_tokens
        .verify(&start.call_id, &start.params, unix_now())
    {
        tracing::warn!(%refused, "refused a browser stream");
        return (StatusCode::FORBIDDEN, refused.to_string()).into_response();
    }
    ws.max_message_size(MAX_PHONE_MESSAGE_BYTES)
        .max_frame_size(MAX_PHONE_MESSAGE_BYTES)
        .read_buffer_size(PHONE_READ_BUFFER_BYTES)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "browser stream upgrade failed"))
        .on_upgrade(move |socket| async move {
            // Forward-only, so a replayed token cannot move a finished call back.
            if let Err(error) = app.store.record_status(&call, CallStatus::InProgress).await {
                tracing::error!(%error, "could not record the browser call's answer");
            }
            let codec = Box::new(WebStream::for_call(&call, &token));
            let shutdown = app.shutdown.clone();
            shutdown.spawn_call(crate::bridge::run_stream(socket, &Web, codec, app));
        })
}
