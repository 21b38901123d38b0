//! What a call record is: its status, its fields and its history, as the API shows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::telephony::Direction;

/// `list` returns this many records unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 50;

/// The status of a call, as providers report it (kebab-case on the wire and in the database).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    /// Created; the provider has not started ringing yet (Twilio `queued`/`initiated`).
    Queued,
    /// The called phone is ringing.
    Ringing,
    /// Answered and connected.
    InProgress,
    /// Answered by an answering machine (AMD); the line may still be up.
    Machine,
    /// Ended after being answered.
    Completed,
    /// The called line was busy.
    Busy,
    /// Nobody answered (Plivo `timeout` too).
    NoAnswer,
    /// The call could not be placed or broke down.
    Failed,
    /// Hung up before it was answered.
    Canceled,
}

impl CallStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CallStatus; 9] = [
        CallStatus::Queued,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Machine,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Failed,
        CallStatus::Canceled,
    ];

    /// The kebab-case name used in JSON, the database and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in-progress",
            CallStatus::Machine => "machine",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::NoAnswer => "no-answer",
            CallStatus::Failed => "failed",
            CallStatus::Canceled => "canceled",
        }
    }

    /// True when the call's outcome is settled: machine, completed, busy, no-answer, failed
    /// or canceled. (A machine's line may be up a moment longer while we hang up on it.)
    pub fn is_final(self) -> bool {
        self.rank() == 3
    }

    /// Position along queued → ringing → in-progress → an outcome.
    ///
    /// `machine` is an outcome, not a stage before one: once detection says a machine
    /// answered, we hang up, and the `completed` that follows says less than `machine` did.
    fn rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Ringing => 1,
            CallStatus::InProgress => 2,
            CallStatus::Machine
            | CallStatus::Completed
            | CallStatus::Busy
            | CallStatus::NoAnswer
            | CallStatus::Failed
            | CallStatus::Canceled => 3,
        }
    }

    /// Whether a report of `next` moves a call that is `self` forward. The first outcome
    /// sticks, with one exception: a late `machine` verdict replaces `completed`, since both
    /// describe the same answered call and detection's callback may arrive after the hang-up's.
    pub(crate) fn advances_to(self, next: CallStatus) -> bool {
        next.rank() > self.rank() || (self == CallStatus::Completed && next == CallStatus::Machine)
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is neither ours nor a Twilio/Plivo spelling of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown call status {0:?} (expected queued, ringing, in-progress, machine, completed, busy, no-answer, failed or canceled)"
)]
pub struct ParseCallStatusError(pub String);

impl FromStr for CallStatus {
    type Err = ParseCallStatusError;

    /// Reads our names and the providers' spellings, case-insensitively: Twilio `initiated`
    /// is `Queued`, Plivo `timeout` is `NoAnswer`, `cancel`/`cancelled` are `Canceled`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let lower = value.trim().to_ascii_lowercase();
        let status = match lower.as_str() {
            "queued" | "initiated" => CallStatus::Queued,
            "ringing" => CallStatus::Ringing,
            "in-progress" | "in_progress" | "inprogress" => CallStatus::InProgress,
            "machine" => CallStatus::Machine,
            "completed" => CallStatus::Completed,
            "busy" => CallStatus::Busy,
            "no-answer" | "no_answer" | "noanswer" | "timeout" => CallStatus::NoAnswer,
            "failed" => CallStatus::Failed,
            "canceled" | "cancelled" | "cancel" => CallStatus::Canceled,
            _ => return Err(ParseCallStatusError(value.to_owned())),
        };
        Ok(status)
    }
}

/// What is known about a call when its record is created.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Provider name (`twilio`, `plivo`).
    pub provider: String,
    /// The provider's id for the call, when already known.
    pub provider_call_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Campaign tag given with `POST /calls`.
    pub campaign: Option<String>,
    /// Prompt template name.
    pub prompt: Option<String>,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// Initial status, recorded as the first history entry.
    pub status: CallStatus,
}

/// One call as stored, with its history.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// Our id: `c` followed by 24 characters of `[a-z0-9]`.
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// The provider's id for the call, once known.
    pub provider_call_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Campaign tag.
    pub campaign: Option<String>,
    /// Prompt template name.
    pub prompt: Option<String>,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// Current status.
    pub status: CallStatus,
    /// Who answered, as the provider's machine detection said (`human`, `machine_start`, …).
    pub answered_by: Option<String>,
    /// Call length the provider reported.
    pub duration_seconds: Option<i64>,
    /// Why the call ended (provider hangup cause, or our failure reason).
    pub end_reason: Option<String>,
    /// When the record was created (RFC 3339 UTC).
    pub created_at: String,
    /// When the record last changed (RFC 3339 UTC).
    pub updated_at: String,
    /// Status changes, oldest first; the first is the initial status.
    pub history: Vec<StatusChange>,
    /// What was said, oldest first (empty in [`CallStore::list`] results).
    pub transcript: Vec<TranscriptLine>,
    /// The agent's tool calls and results, oldest first (empty in [`CallStore::list`] results).
    pub tool_events: Vec<ToolEvent>,
    /// What happened when, in milliseconds, once the call has ended (empty before, and in
    /// [`CallStore::list`] results).
    pub events: Vec<super::TimelineEvent>,
    /// Timeline entries left out because the call reached the cap.
    pub events_dropped: u64,
    /// Greeting and response latency, barge-ins and resumptions; `null` until the call has
    /// ended (and in [`CallStore::list`] results).
    pub latency: Option<super::LatencySummary>,
    /// Where the call's recording is served (`/calls/{id}/recording`); `None` when the call
    /// was not recorded or its recording was deleted.
    pub recording_url: Option<String>,
    /// The recording's file name inside `RECORDINGS_DIR` (not shown: the URL is).
    #[serde(skip)]
    pub recording_file: Option<String>,
}

impl CallRecord {
    /// The API path of call `id`'s recording.
    pub fn recording_url_for(id: &str) -> String {
        format!("/calls/{id}/recording")
    }
}

/// One entry of a call's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    /// The status the call moved to.
    pub status: CallStatus,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// One line of a call's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptLine {
    /// Who spoke (e.g. `caller`, `agent`).
    pub who: String,
    /// What was said.
    pub text: String,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// The caller talked over this agent turn; `text` is the part they heard. Only
    /// present when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// One tool call or result of the agent during a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolEvent {
    /// The tool's name.
    pub name: String,
    /// Arguments or result, as given.
    pub detail: Value,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// Which records [`CallStore::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this campaign.
    pub campaign: Option<String>,
    /// Only calls currently in this status.
    pub status: Option<CallStatus>,
    /// At most this many (clamped to 1..=500).
    pub limit: u32,
    /// Only inbound or only outbound calls.
    pub direction: Option<Direction>,
}

impl Default for CallFilter {
    fn default() -> Self {
        CallFilter {
            campaign: None,
            status: None,
            limit: DEFAULT_LIST_LIMIT,
            direction: None,
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-05-20T09:30:00.125Z`.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_verdict_stays_final_over_a_later_completed() {
        // ON_MACHINE=message: the call goes on after `machine`, and ends with `completed`.
        assert!(!CallStatus::Machine.advances_to(CallStatus::Completed));
        assert!(!CallStatus::Machine.advances_to(CallStatus::InProgress));
        assert!(CallStatus::InProgress.advances_to(CallStatus::Machine));
        assert!(CallStatus::Completed.advances_to(CallStatus::Machine));
    }

    #[test]
    fn formats_rfc3339_utc_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_779_269_400_125), "2026-05-20T09:30:00.125Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
