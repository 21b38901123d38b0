//! Placing an outbound call: the one path that `POST /calls` and the campaign dialer share.
//!
//! [`record`] checks the do-not-call list, takes a call slot ([`crate::admission`]) and
//! creates the call record; [`RecordedCall::dial`] then asks the provider to dial. The two
//! steps are apart so that the campaign dialer can tie the record to its contact before the
//! provider is asked: a dialer that dies in between leaves a record that says whether the call
//! was placed, instead of a contact that might be dialled twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::api::ApiError;
use super::store::{CallRecord, CallStatus, NewCall};
use crate::admission::{self, Admission};
use crate::app::App;
use crate::telephony::Direction;
use crate::telephony::rest::{CallControl, DialRequest};

/// A validated outbound call, not recorded yet.
pub struct Outbound {
    /// The provider account that dials it.
    pub control: Arc<dyn CallControl>,
    /// Caller id, E.164.
    pub from: String,
    /// Callee, E.164.
    pub to: String,
    /// Prompt template name.
    pub prompt: String,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// Campaign tag (the campaign's id for calls a campaign places).
    pub campaign: Option<String>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("provider", &self.control.provider())
            .field("to", &self.to)
            .field("campaign", &self.campaign)
            .finish_non_exhaustive()
    }
}

/// A call slot held while a call is recorded and dialled; given back if the call is not
/// placed, kept (under the record's id) once it is.
pub(crate) struct DialSlot<'a> {
    admission: &'a Admission,
    key: String,
    placed: bool,
}

impl<'a> DialSlot<'a> {
    /// Takes a slot under a key of its own: the record, whose id will key the call, does not
    /// exist yet, and a refused request should leave none behind.
    fn take(admission: &'a Admission) -> Result<Self, ApiError> {
        Self::take_for(admission, admission::DIAL_TO_START)
    }

    /// Takes a slot held for `hold` until the call's stream starts (a browser call's stream
    /// follows its request at once, a dialled call's only after ringing).
    pub(crate) fn take_for(admission: &'a Admission, hold: Duration) -> Result<Self, ApiError> {
        let key = format!("dial-{}", uuid::Uuid::new_v4().simple());
        admission
            .reserve(&key, Instant::now(), hold)
            .map_err(ApiError::Saturated)?;
        Ok(Self {
            admission,
            key,
            placed: false,
        })
    }

    /// Keys the slot by the call's record, as the call's media stream will claim it.
    pub(crate) fn bind_to_record(&mut self, record_id: &str) {
        if self.admission.rename(&self.key, record_id) {
            record_id.clone_into(&mut self.key);
        }
    }

    /// The call was placed: the slot stays held until its stream starts or it lapses.
    pub(crate) fn keep(mut self) {
        self.placed = true;
    }
}

impl Drop for DialSlot<'_> {
    fn drop(&mut self) {
        if !self.placed {
            self.admission.release(&self.key);
        }
    }
}

/// A call whose slot is held and whose record exists (`queued`), not dialled yet.
pub struct RecordedCall<'a> {
    app: &'a App,
    slot: DialSlot<'a>,
    record: CallRecord,
    control: Arc<dyn CallControl>,
}

impl std::fmt::Debug for RecordedCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedCall")
            .field("record", &self.record.id)
            .finish_non_exhaustive()
    }
}

/// Refuses a number on the do-not-call list, takes a call slot and creates the record.
///
/// Nothing is recorded when the number is listed (`DoNotCall`) or every slot is taken
/// (`Saturated`): nothing was attempted.
pub async fn record(app: &App, call: Outbound) -> Result<RecordedCall<'_>, ApiError> {
    if app
        .campaigns
        .store
        .do_not_call_since(&call.to)
        .await?
        .is_some()
    {
        return Err(ApiError::DoNotCall(call.to));
    }
    let mut slot = DialSlot::take(&app.admission)?;
    let record = app
        .store
        .create(NewCall {
            provider: call.control.provider().to_owned(),
            provider_call_id: None,
            direction: Direction::Outbound,
            from: call.from,
            to: call.to,
            campaign: call.campaign,
            prompt: Some(call.prompt),
            vars: call.vars,
            status: CallStatus::Queued,
        })
        .await?;
    slot.bind_to_record(&record.id);
    Ok(RecordedCall {
        app,
        slot,
        record,
        control: call.control,
    })
}

impl RecordedCall<'_> {
    /// The call record's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Asks the provider to dial. On success the slot stays held and the record (with the
    /// provider's call id) is returned; on failure the record is `failed` with the provider's
    /// message and the slot given back.
    pub async fn dial(self) -> Result<CallRecord, ApiError> {
        let RecordedCall {
            app,
            slot,
            record,
            control,
        } = self;
        let dial = DialRequest {
            to: record.to.clone(),
            from: record.from.clone(),
            record_id: record.id.clone(),
            public_url: app.config.public_url.clone(),
            time_limit_secs: app.config.max_call_duration.as_secs(),
            on_machine: app.config.turns.on_machine,
        };
        match control.dial(&dial).await {
            Ok(provider_call_id) => {
                slot.keep();
                app.store
                    .set_provider_call_id(&record.id, &provider_call_id)
                    .await?;
                tracing::info!(call = %record.id, provider = control.provider(), %provider_call_id, "outbound call placed");
                app.store
                    .get(&record.id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(record.id.clone()))
            }
            Err(error) => {
                drop(slot);
                tracing::warn!(call = %record.id, %error, "provider refused the outbound call");
                app.store.fail(&record.id, &error.to_string()).await?;
                Err(ApiError::Provider {
                    message: error.to_string(),
                    id: Some(record.id),
                })
            }
        }
    }

    /// Gives up before dialling: the record is `failed` with `reason` and the slot given back.
    pub async fn abandon(self, reason: &str) -> Result<(), ApiError> {
        let RecordedCall {
            app, slot, record, ..
        } = self;
        drop(slot);
        app.store.fail(&record.id, reason).await?;
        Ok(())
    }
}
