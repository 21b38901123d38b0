//! What a campaign is: its settings as validated from a request, its contacts, and the states
//! of both as the API shows them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::window::CallingWindow;
use crate::calls::CallStatus;

/// Where a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CampaignState {
    /// The dialer works through its contacts (within their windows, from `start_at`).
    Running,
    /// No new calls; calls in progress go on.
    Paused,
    /// Stopped for good: contacts not yet called are `canceled`.
    Canceled,
    /// Every contact is settled.
    Finished,
}

impl CampaignState {
    /// The name in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Canceled => "canceled",
            CampaignState::Finished => "finished",
        }
    }
}

impl FromStr for CampaignState {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "running" => CampaignState::Running,
            "paused" => CampaignState::Paused,
            "canceled" => CampaignState::Canceled,
            "finished" => CampaignState::Finished,
            other => return Err(format!("unknown campaign state {other:?}")),
        })
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContactState {
    /// Not called yet.
    Pending,
    /// An attempt is being placed or is in progress.
    Calling,
    /// An attempt ended in a status worth retrying; the next is scheduled.
    RetryScheduled,
    /// Answered (the last call completed).
    Done,
    /// No attempt left, or the last one ended in a status not retried.
    Failed,
    /// On the do-not-call list when its turn came: never dialled.
    Skipped,
    /// The campaign was canceled before this contact was (called again).
    Canceled,
}

impl ContactState {
    /// Every state, in the order counts are shown.
    pub const ALL: [ContactState; 7] = [
        ContactState::Pending,
        ContactState::Calling,
        ContactState::RetryScheduled,
        ContactState::Done,
        ContactState::Failed,
        ContactState::Skipped,
        ContactState::Canceled,
    ];

    /// The name in JSON, CSV and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactState::Pending => "pending",
            ContactState::Calling => "calling",
            ContactState::RetryScheduled => "retry-scheduled",
            ContactState::Done => "done",
            ContactState::Failed => "failed",
            ContactState::Skipped => "skipped",
            ContactState::Canceled => "canceled",
        }
    }

    /// True for a contact the campaign still has to work on.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ContactState::Pending | ContactState::Calling | ContactState::RetryScheduled
        )
    }
}

impl FromStr for ContactState {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ContactState::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "unknown contact state {value:?} (expected pending, calling, retry-scheduled, done, failed, skipped or canceled)"
                )
            })
    }
}

/// When a contact is called again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Final statuses that schedule another attempt (busy, no-answer, failed, machine).
    pub on: Vec<CallStatus>,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait between an attempt's end and the next one.
    pub backoff_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            on: vec![CallStatus::Busy, CallStatus::NoAnswer],
            max_attempts: 3,
            backoff_ms: 30 * 60_000,
        }
    }
}

impl RetryPolicy {
    /// Statuses a user may ask to retry on.
    pub const RETRYABLE: [CallStatus; 4] = [
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Failed,
        CallStatus::Machine,
    ];

    /// `busy,no-answer` as stored.
    pub fn on_list(&self) -> String {
        self.on
            .iter()
            .map(|status| status.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads a stored or requested list (`busy, no-answer`; `none` or empty for no retries).
    pub fn parse_on(text: &str) -> Result<Vec<CallStatus>, String> {
        let mut on = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "none" {
                continue;
            }
            let status: CallStatus = name
                .parse()
                .ok()
                .filter(|status| Self::RETRYABLE.contains(status))
                .ok_or_else(|| {
                    format!(
                        "retry_on: {name:?} cannot be retried; use busy, no-answer, failed or machine"
                    )
                })?;
            if !on.contains(&status) {
                on.push(status);
            }
        }
        Ok(on)
    }

    /// What a contact whose attempt number `attempts` ended in `status` becomes, and when its
    /// next attempt is due (for a retry).
    pub fn after(&self, status: CallStatus, attempts: u32, now_ms: i64) -> (ContactState, i64) {
        if status == CallStatus::Completed {
            return (ContactState::Done, now_ms);
        }
        if self.on.contains(&status) && attempts < self.max_attempts {
            return (
                ContactState::RetryScheduled,
                now_ms.saturating_add(self.backoff_ms),
            );
        }
        (ContactState::Failed, now_ms)
    }
}

/// A campaign's settings, validated.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    /// A label for people.
    pub name: String,
    /// The prompt template.
    pub prompt: String,
    /// Provider name.
    pub provider: String,
    /// Caller id, E.164.
    pub from: String,
    /// Live calls at most, across every instance.
    pub max_concurrent: u32,
    /// Call starts per minute at most (`None`: only `max_concurrent` paces).
    pub calls_per_minute: Option<u32>,
    /// Local calling hours.
    pub window: CallingWindow,
    /// IANA time zone of contacts that name none.
    pub timezone: String,
    /// Retries.
    pub retry: RetryPolicy,
    /// No call before this (unix ms).
    pub start_at_ms: i64,
}

/// One contact to call, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    /// Its line in the CSV (the header is line 1), or its index in the JSON list.
    pub line: u64,
    /// E.164 number.
    pub to: String,
    /// Template variables for its prompt.
    pub vars: Map<String, Value>,
    /// Its own IANA time zone, if it has one.
    pub timezone: Option<String>,
}

/// Contacts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Not called yet.
    pub pending: u64,
    /// Being called.
    pub calling: u64,
    /// Answered.
    pub done: u64,
    /// Given up on.
    pub failed: u64,
    /// On the do-not-call list.
    pub skipped: u64,
    /// Waiting for a retry.
    #[serde(rename = "retry-scheduled")]
    pub retry_scheduled: u64,
    /// Canceled with the campaign.
    pub canceled: u64,
}

impl StateCounts {
    /// Adds `n` contacts in `state`.
    pub fn add(&mut self, state: ContactState, n: u64) {
        let slot = match state {
            ContactState::Pending => &mut self.pending,
            ContactState::Calling => &mut self.calling,
            ContactState::RetryScheduled => &mut self.retry_scheduled,
            ContactState::Done => &mut self.done,
            ContactState::Failed => &mut self.failed,
            ContactState::Skipped => &mut self.skipped,
            ContactState::Canceled => &mut self.canceled,
        };
        *slot += n;
    }

    /// Contacts in all.
    pub fn total(&self) -> u64 {
        self.pending
            + self.calling
            + self.done
            + self.failed
            + self.skipped
            + self.retry_scheduled
            + self.canceled
    }

    /// Contacts still to be worked on.
    pub fn open(&self) -> u64 {
        self.pending + self.calling + self.retry_scheduled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_policy() {
        let policy = RetryPolicy {
            on: RetryPolicy::parse_on("busy, no-answer").unwrap(),
            max_attempts: 3,
            backoff_ms: 1_000,
        };
        assert_eq!(
            policy.after(CallStatus::Busy, 1, 10),
            (ContactState::RetryScheduled, 1_010)
        );
        assert_eq!(
            policy.after(CallStatus::NoAnswer, 3, 10),
            (ContactState::Failed, 10)
        );
        assert_eq!(
            policy.after(CallStatus::Failed, 1, 10).0,
            ContactState::Failed
        );
        assert_eq!(
            policy.after(CallStatus::Completed, 1, 10).0,
            ContactState::Done
        );
        assert_eq!(policy.on_list(), "busy,no-answer");
        assert!(RetryPolicy::parse_on("completed").is_err());
        assert_eq!(RetryPolicy::parse_on("none").unwrap(), []);
    }

    #[test]
    fn states_read_back_what_they_write() {
        for state in ContactState::ALL {
            assert_eq!(state.as_str().parse::<ContactState>(), Ok(state));
        }
        assert_eq!("paused".parse::<CampaignState>(), Ok(CampaignState::Paused));
    }
}
