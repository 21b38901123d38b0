//! Answering machines on calls we place, outside the call machine: what a call knows about
//! one when its stream starts, the rendered message it leaves (`prompts/voicemail.md`), and
//! how a detection verdict that arrives mid-call (Plivo's asynchronous detection callback)
//! reaches the call's task.
//!
//! A verdict reaches a call by one of two paths, so none is lost in between: the status
//! webhook writes it to the record *before* offering it to a listening call, and a call
//! starts listening *before* it reads its record. A verdict written before the read is seen
//! in the record; one offered after the listener exists is delivered to it. (Both may
//! happen; the machine takes the first report and ignores the second.) A call whose stream
//! runs on another instance than the one the callback reached is not told, and goes on as a
//! conversation: run one instance, or route a call's webhooks to the instance running it,
//! when `ON_MACHINE=message` matters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::jobs::JobDone;
use crate::app::App;
use crate::calls::CallRecord;
use crate::config::OnMachine;
use crate::signature::StreamClaims;
use crate::telephony::Direction;

/// The template of the message left on a machine, in `PROMPTS_DIR`.
pub const VOICEMAIL_PROMPT: &str = "voicemail";
/// What is left when `voicemail.md` is missing or cannot be rendered with the call's vars.
const FALLBACK_MESSAGE: &str = "Hello, this is an automated assistant returning your call. Please call us back when it suits you. Thank you, goodbye.";

/// True when, by `ON_MACHINE`, a call answered with detection verdict `answered_by` gets a
/// message: answering machines and voicemail do, a fax never does.
pub fn leaves_message(on_machine: OnMachine, answered_by: &str) -> bool {
    on_machine == OnMachine::Message && answered_by.starts_with("machine")
}

/// True when the verdict says the machine's greeting is already over (Twilio's
/// `DetectMessageEnd`: `machine_end_beep`, `machine_end_silence`, `machine_end_other`).
fn greeting_over(answered_by: &str) -> bool {
    answered_by.starts_with("machine_end")
}

/// A machine that answered, as the call learns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineAnswered {
    /// The rendered message to leave.
    pub message: String,
    /// The provider waited for the end of the machine's greeting.
    pub greeting_over: bool,
}

/// What a starting outbound call knows about answering machines.
#[derive(Debug, Default)]
pub struct VoicemailPlan {
    /// A machine already answered (the verdict was in the record).
    pub answered: Option<MachineAnswered>,
    /// Waits for a verdict that comes later, when none is in yet.
    pub later: Option<VerdictListener>,
}

/// Calls waiting for a detection verdict, by record id.
#[derive(Debug, Default)]
pub struct MachineVerdicts {
    waiting: Mutex<HashMap<String, oneshot::Sender<String>>>,
}

impl MachineVerdicts {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<String>>> {
        // Plain map entries: a panic elsewhere leaves nothing half-done.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts listening for the verdict on `record`; the listener stops when dropped.
    pub fn listen(self: &Arc<Self>, record: &str) -> VerdictListener {
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(record.to_owned(), tx);
        VerdictListener {
            verdicts: Arc::clone(self),
            record: record.to_owned(),
            rx: Some(rx),
        }
    }

    /// Hands `verdict` to the call of `record` if it is listening here; false if not.
    pub fn deliver(&self, record: &str, verdict: &str) -> bool {
        let Some(tx) = self.waiting().remove(record) else {
            return false;
        };
        tx.send(verdict.to_owned()).is_ok()
    }
}

/// One call's wait for a detection verdict.
#[derive(Debug)]
pub struct VerdictListener {
    verdicts: Arc<MachineVerdicts>,
    record: String,
    rx: Option<oneshot::Receiver<String>>,
}

impl VerdictListener {
    /// The verdict, when one is delivered (pending forever otherwise: the call ends first).
    async fn verdict(&mut self) -> Option<String> {
        self.rx.as_mut()?.await.ok()
    }
}

impl Drop for VerdictListener {
    fn drop(&mut self) {
        self.verdicts.waiting().remove(&self.record);
    }
}

/// What the call of `claims` knows about answering machines as its stream starts: nothing
/// unless it is an outbound call with a record and `ON_MACHINE=message`.
pub async fn plan(app: &App, claims: &StreamClaims) -> VoicemailPlan {
    let Some(record_id) = claims.record.as_deref() else {
        return VoicemailPlan::default();
    };
    if app.config.turns.on_machine != OnMachine::Message || claims.direction != Direction::Outbound
    {
        return VoicemailPlan::default();
    }
    // Listen first, then read: see the module documentation.
    let later = app.machine_verdicts.listen(record_id);
    let record = match app.store.get(record_id).await {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(%error, "could not read the call record for its machine verdict");
            None
        }
    };
    let verdict = record.as_ref().and_then(|r| r.answered_by.as_deref());
    match verdict.filter(|v| leaves_message(OnMachine::Message, v)) {
        Some(verdict) => VoicemailPlan {
            answered: Some(MachineAnswered {
                message: render_message(app, record.as_ref()),
                greeting_over: greeting_over(verdict),
            }),
            later: None,
        },
        None => VoicemailPlan {
            answered: None,
            later: Some(later),
        },
    }
}

/// Waits for the verdict of a call planned with `listener`; a machine's comes back as a
/// [`JobDone::MachineAnswered`] with the call's rendered message. A human's changes
/// nothing, and the job ends quietly.
pub async fn wait_for_machine(app: Arc<App>, mut listener: VerdictListener) -> JobDone {
    let verdict = match listener.verdict().await {
        Some(verdict) if leaves_message(OnMachine::Message, &verdict) => verdict,
        // A person (or no verdict at all): nothing to do for the rest of the call.
        _ => return std::future::pending().await,
    };
    let record = match app.store.get(&listener.record).await {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(%error, "could not read the call record for its message");
            None
        }
    };
    JobDone::MachineAnswered(MachineAnswered {
        message: render_message(&app, record.as_ref()),
        greeting_over: greeting_over(&verdict),
    })
}

/// The message for `record`: `voicemail.md` rendered with its vars, or a neutral one.
fn render_message(app: &App, record: Option<&CallRecord>) -> String {
    let empty = Map::<String, Value>::new();
    let vars = record.map_or(&empty, |r| &r.vars);
    match app.prompts.render(VOICEMAIL_PROMPT, vars) {
        Ok(message) => message.trim().to_owned(),
        Err(error) => {
            tracing::error!(%error, "could not render the voicemail message; leaving a neutral one");
            FALLBACK_MESSAGE.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_machines_get_a_message_and_only_when_asked() {
        assert!(leaves_message(OnMachine::Message, "machine_end_beep"));
        assert!(leaves_message(OnMachine::Message, "machine"));
        assert!(!leaves_message(OnMachine::Message, "fax"));
        assert!(!leaves_message(OnMachine::Message, "human"));
        assert!(!leaves_message(OnMachine::HangUp, "machine_end_beep"));
        assert!(greeting_over("machine_end_silence"));
        assert!(!greeting_over("machine_start"));
    }

    #[tokio::test]
    async fn a_verdict_reaches_a_listening_call_once_and_a_gone_call_not_at_all() {
        let verdicts = Arc::new(MachineVerdicts::default());
        let mut listener = verdicts.listen("c1");
        assert!(!verdicts.deliver("c2", "machine"), "nobody listens for c2");
        assert!(verdicts.deliver("c1", "machine"));
        assert_eq!(listener.verdict().await.as_deref(), Some("machine"));
        assert!(!verdicts.deliver("c1", "machine"), "delivered once");
        let gone = verdicts.listen("c3");
        drop(gone);
        assert!(!verdicts.deliver("c3", "machine"), "the call ended");
    }
}
