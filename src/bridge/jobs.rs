//! Work a call needs done that is not moving audio: checking a stream's start against the
//! records, provider REST calls (hang-up, transfer, text) and the user's tools. Each runs as
//! a job in the call's own [`JoinSet`], so the call task keeps pumping audio and timers
//! while it runs; its result comes back as a [`JobDone`] for the machine. Jobs are aborted
//! with the call, so none outlives it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::task::{AbortHandle, JoinSet};

use super::machine::EndReason;
use super::prewarm::WarmSession;
use super::voicemail::{self, MachineAnswered, VoicemailPlan};
use crate::admission::LiveCall;
use crate::app::App;
use crate::calls::CallRecord;
use crate::gemini::SessionSetup;
use crate::signature::unix_now;
use crate::telephony::{Direction, StreamStart, TOKEN_PARAM};
use crate::tools::CallerInfo;

/// A finished job.
pub enum JobDone {
    /// The stream's `start` was checked: the call as it may go ahead, or why it may not.
    Started(Result<Box<AdmittedCall>, EndReason>),
    /// A tool call finished with this response for the model.
    Tool {
        /// The model's id for the call.
        id: String,
        /// The tool's name.
        name: String,
        /// What the model is told.
        response: Value,
    },
    /// The REST hang-up finished; the call ends for `reason` either way.
    HungUp {
        /// Why the call is being hung up.
        reason: EndReason,
    },
    /// The REST transfer finished.
    Transferred {
        /// The target number.
        to: String,
        /// Why the caller is being transferred.
        purpose: TransferFor,
        /// The provider's refusal, if any.
        result: Result<(), String>,
    },
    /// Detection said an answering machine answered, after the stream started
    /// (`ON_MACHINE=message`): the message to leave.
    MachineAnswered(MachineAnswered),
}

/// Why a call is being transferred, which decides what a failed transfer does.
pub enum TransferFor {
    /// The model called `transfer_call` (this id): a failure is the tool's answer.
    Tool(String),
    /// Gemini failed (this reason) and the fallback message has played: a failure hangs up.
    Fallback(EndReason),
}

/// A call whose stream proved itself and got a slot.
pub struct AdmittedCall {
    /// The admission slot, held until the call ends.
    pub live: LiveCall,
    /// Our call record.
    pub record: Option<String>,
    /// The parties, as the answer webhook vouched for them.
    pub caller: CallerInfo,
    /// The provider's id for the call.
    pub provider_call_id: String,
    /// The Gemini session to open (`None` in echo mode).
    pub setup: Option<SessionSetup>,
    /// What is known, or will be told, about an answering machine on the line.
    pub voicemail: VoicemailPlan,
    /// The session opened for this call at its answer webhook, if one is waiting for it.
    pub warm_session: Option<WarmSession>,
}

/// The call's jobs in flight, with a handle on each tool call so the model can cancel it.
#[derive(Default)]
pub struct Jobs {
    set: JoinSet<JobDone>,
    tools: HashMap<String, AbortHandle>,
}

impl Jobs {
    /// Runs `job`.
    pub fn spawn(&mut self, job: impl Future<Output = JobDone> + Send + 'static) {
        self.set.spawn(job);
    }

    /// Runs a tool call that the model may cancel by `id`.
    pub fn spawn_tool(&mut self, id: String, job: impl Future<Output = JobDone> + Send + 'static) {
        let handle = self.set.spawn(job);
        self.tools.insert(id, handle);
    }

    /// Cancels the tool call `id`; false if it is not running.
    pub fn cancel_tool(&mut self, id: &str) -> bool {
        match self.tools.remove(id) {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    /// The next finished job; pending forever while there is none.
    pub async fn next(&mut self) -> JobDone {
        loop {
            match self.set.join_next().await {
                Some(Ok(done)) => {
                    if let JobDone::Tool { id, .. } = &done {
                        self.tools.remove(id);
                    }
                    return done;
                }
                // Cancelled tool calls end as aborted tasks; a panicking tool is logged.
                Some(Err(error)) => {
                    if error.is_panic() {
                        tracing::error!(%error, "a call job panicked");
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Checks a stream's `start`: its token proves the answer webhook opened it and what it may
/// act on (record, numbers, direction), the token is used up, the server has a slot for
/// it, and its record gives the prompt.
pub async fn admit_stream(app: Arc<App>, start: StreamStart) -> JobDone {
    JobDone::Started(check_start(&app, start).await.map(Box::new))
}

async fn check_start(app: &App, start: StreamStart) -> Result<AdmittedCall, EndReason> {
    let claims = app
        .stream_tokens
        .verify(&start.call_id, &start.params, unix_now())
        .map_err(|e| EndReason::Unauthorized(e.to_string()))?;
    let token = start.params.get(TOKEN_PARAM).map_or("", String::as_str);
    // Single use, across instances and restarts. A store that cannot say whether the token
    // was used refuses the stream: replay protection fails closed.
    match app
        .store
        .consume_stream_token(token, claims.expires_at)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(EndReason::Unauthorized("token already used".into())),
        Err(error) => {
            tracing::error!(%error, "could not record the stream token's use");
            return Err(EndReason::Unauthorized(
                "the token's use could not be recorded".into(),
            ));
        }
    }
    let key = claims.record.as_deref().unwrap_or(&claims.call_id);
    let live = app
        .admission
        .admit(key, claims.record.clone(), std::time::Instant::now())
        .map_err(|_| EndReason::OverCapacity)?;
    if let Some(record) = &claims.record
        && let Err(error) = app.store.take_ownership(record).await
    {
        // The call goes ahead; at worst another instance may settle its record early.
        tracing::error!(%error, "could not take ownership of the call record");
    }
    let voicemail = voicemail::plan(app, &claims).await;
    let caller = CallerInfo {
        from: claims.from,
        to: claims.to,
        direction: claims.direction.as_str().to_owned(),
    };
    // The token proved the stream belongs to `key`: it may take the session opened for it.
    let warm_session = app.prewarm.adopt(key);
    let setup = match &warm_session {
        Some(warm) => Some(warm.setup().clone()),
        None if app.config.gemini.is_none() => None,
        None => {
            let record = match &claims.record {
                Some(id) => read_record(app, id).await,
                None => None,
            };
            session_setup(app, record.as_ref())
        }
    };
    Ok(AdmittedCall {
        live,
        record: claims.record,
        caller,
        provider_call_id: claims.call_id,
        setup,
        voicemail,
        warm_session,
    })
}

/// The Gemini session setup of the call with `record` (`None` in echo mode): its prompt,
/// the tools and the conversation options.
pub fn session_setup(app: &App, record: Option<&CallRecord>) -> Option<SessionSetup> {
    let config = app.config.gemini.as_ref()?;
    let mut setup = SessionSetup::new(config, system_prompt(app, record));
    setup.function_declarations = app.tools.declarations();
    setup.options = app.config.conversation.live;
    Some(setup)
}

/// The call record `id`, or `None` (logged) when it is unknown or unreadable: the call then
/// gets the inbound prompt.
async fn read_record(app: &App, id: &str) -> Option<CallRecord> {
    match app.store.get(id).await {
        Ok(Some(record)) => Some(record),
        Ok(None) => {
            tracing::warn!(record = %id, "stream names an unknown call record; using the inbound prompt");
            None
        }
        Err(error) => {
            tracing::error!(%error, "could not read the call record; using the inbound prompt");
            None
        }
    }
}

/// The rendered prompt of an outbound call's record, or the inbound prompt.
fn system_prompt(app: &App, record: Option<&CallRecord>) -> String {
    let Some(record) = record else {
        return app.inbound_prompt.clone();
    };
    match (&record.direction, &record.prompt) {
        (Direction::Outbound, Some(name)) => match app.prompts.render(name, &record.vars) {
            Ok(prompt) => prompt,
            Err(error) => {
                tracing::error!(%error, "could not render the call's prompt; using the inbound prompt");
                app.inbound_prompt.clone()
            }
        },
        _ => app.inbound_prompt.clone(),
    }
}

/// Ends the call through the provider's REST API (closing the stream ends it too; this
/// makes it certain), for `reason`.
pub async fn hang_up(
    app: Arc<App>,
    provider: &'static str,
    provider_call_id: String,
    reason: EndReason,
) -> JobDone {
    if let Some(control) = app.providers.control(provider)
        && let Err(e) = control.hang_up(&provider_call_id, true).await
    {
        tracing::warn!(error = %e, "REST hang-up failed; closing the stream instead");
    }
    JobDone::HungUp { reason }
}

/// Moves the call to `to` through the provider's REST API.
pub async fn transfer(
    app: Arc<App>,
    provider: &'static str,
    provider_call_id: String,
    to: String,
    purpose: TransferFor,
) -> JobDone {
    let result = match app.providers.control(provider) {
        Some(control) => control
            .transfer(&provider_call_id, &to, &app.config.public_url)
            .await
            .map_err(|e| e.to_string()),
        None => Err("transfers are not set up on this line".to_owned()),
    };
    JobDone::Transferred {
        to,
        purpose,
        result,
    }
}

/// Texts `body` to `to` (already checked against the allowed numbers) from the line's number.
pub async fn send_sms(
    app: Arc<App>,
    provider: &'static str,
    target: Result<String, String>,
    body: String,
    id: String,
    name: String,
) -> JobDone {
    let control = app.providers.control(provider);
    let from = control
        .as_ref()
        .and_then(|c| c.default_from().map(str::to_owned));
    let response = match (control, from, target) {
        (_, _, Err(why)) => json!({"error": why}),
        (None, _, _) | (_, None, _) => json!({"error": "texting is not set up on this line"}),
        _ if body.trim().is_empty() => json!({"error": "the message body is empty"}),
        (Some(control), Some(from), Ok(to)) => match control.send_sms(&from, &to, &body).await {
            Ok(message_id) => json!({"result": "sent", "to": to, "message_id": message_id}),
            Err(e) => json!({"error": format!("the text could not be sent: {e}")}),
        },
    };
    JobDone::Tool { id, name, response }
}
