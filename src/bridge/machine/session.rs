//! The Gemini side of a call: the session's setup, its resumption handle, reconnection
//! tries with backoff, and the watchdog that notices a model gone quiet.

use std::time::Duration;

use crate::gemini::SessionSetup;

/// Reconnect this long before a `goAway` deadline if no idle moment came first.
pub const GO_AWAY_MARGIN: Duration = Duration::from_secs(5);
/// Consecutive failed session openings after which the call ends.
pub const MAX_RECONNECT_ATTEMPTS: u32 = 3;
/// Wait after a failed try before the next one, times the tries made so far.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Default for `GEMINI_STALL_SECS`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(8);

/// Why a live session was closed and resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeCause {
    /// Gemini sent `goAway`.
    GoAway,
    /// The connection dropped or closed abnormally.
    ConnectionLost,
    /// The model went quiet when it owed an answer.
    Stalled,
}

/// How many times the call's session was resumed, by cause (read by the task for metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resumptions {
    /// After a `goAway`.
    pub go_away: u32,
    /// After a lost connection.
    pub connection_lost: u32,
    /// After the model stalled.
    pub stalled: u32,
}

impl Resumptions {
    /// Counts one resumption.
    pub fn count(&mut self, cause: ResumeCause) {
        let slot = match cause {
            ResumeCause::GoAway => &mut self.go_away,
            ResumeCause::ConnectionLost => &mut self.connection_lost,
            ResumeCause::Stalled => &mut self.stalled,
        };
        *slot = slot.saturating_add(1);
    }
}

/// What is known about the call's Gemini session across reconnections.
#[derive(Debug)]
pub struct Session {
    /// The setup every (re)connection sends.
    pub setup: Option<SessionSetup>,
    handle: Option<String>,
    /// A `goAway` asked for a resumption at the next pause.
    pub resume_wanted: bool,
    attempts: u32,
    /// The greeting cue has been sent (never twice in one call).
    pub greeted: bool,
    /// The model has been resumed once for stalling since it last said anything.
    pub stall_resumed: bool,
    /// How long the model may stay silent when it owes an answer.
    pub stall_timeout: Duration,
    /// Resumptions so far.
    pub resumptions: Resumptions,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            setup: None,
            handle: None,
            resume_wanted: false,
            attempts: 0,
            greeted: false,
            stall_resumed: false,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            resumptions: Resumptions::default(),
        }
    }
}

impl Session {
    /// Keeps the newest resumption handle.
    pub fn set_handle(&mut self, handle: String) {
        self.handle = Some(handle);
    }

    /// True if a lost connection can be resumed: the close was abnormal (server fault,
    /// going away, dropped connection) rather than a refusal, a handle is held, and tries
    /// remain.
    pub fn can_resume_after(&self, code: u16, reason: &str) -> bool {
        let abnormal = matches!(code, 1001 | 1006 | 1011);
        // A quota close is final: resuming would be refused the same way.
        let refused = reason.to_ascii_lowercase().contains("quota");
        abnormal && !refused && self.handle.is_some() && self.can_retry()
    }

    /// True while another try to open the session is allowed.
    pub fn can_retry(&self) -> bool {
        self.attempts < MAX_RECONNECT_ATTEMPTS
    }

    /// The `setup` message for the next (re)connection; counts the try.
    pub fn next_connect_message(&mut self) -> Option<String> {
        let setup = self.setup.as_ref()?;
        self.attempts += 1;
        self.resume_wanted = false;
        Some(setup.to_message(self.handle.as_deref()))
    }

    /// How long to wait after a failed try: 0.5 s, then 1 s, …
    pub fn retry_delay(&self) -> Duration {
        RETRY_BACKOFF * self.attempts
    }

    /// Tries made since the session was last open.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The session is open: tries start again from zero.
    pub fn opened(&mut self) {
        self.attempts = 0;
    }
}
