//! What the machine is told and what it asks for: modes, speakers, end reasons, commands.

use std::fmt;

use crate::gemini::protocol::FunctionCall;
use crate::telephony::StreamStart;

/// Who answers: a Gemini session, or the caller's own voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bridge to Gemini Live.
    Gemini,
    /// Play the caller's audio back.
    Echo,
}

/// Who said a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The person on the phone.
    Caller,
    /// The Gemini agent.
    Agent,
}

impl Speaker {
    /// Lower-case name for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Caller => "caller",
            Speaker::Agent => "agent",
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The provider reported the stream stopped or closed the socket.
    CallerHungUp,
    /// The provider never sent `start`.
    NoStart,
    /// A Gemini session could not be opened.
    GeminiUnavailable(String),
    /// Gemini closed the session and it could not be resumed.
    GeminiClosed {
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
    /// Gemini stopped answering (and a resumed session, when one could be tried, did not
    /// answer either).
    GeminiStalled,
    /// The phone socket failed (oversized message, protocol error, stopped reading).
    PhoneError(String),
    /// The call reached `MAX_CALL_SECONDS`.
    MaxDuration,
    /// The provider stopped sending anything without closing the stream.
    PhoneSilent,
    /// The stream kept sending far more audio than real time.
    AudioFlood,
    /// The agent ended the call (`end_call`).
    AgentHungUp,
    /// The agent transferred the call (`transfer_call`).
    Transferred(String),
    /// The stream did not prove it was opened by our answer webhook (token missing, forged,
    /// expired or already used).
    Unauthorized(String),
    /// The server was at `MAX_CONCURRENT_CALLS`.
    OverCapacity,
    /// The server is shutting down.
    ServerShutdown,
    /// Nobody spoke for `IDLE_HANGUP_SECONDS`; the agent said goodbye and hung up.
    Idle,
    /// An answering machine answered; the agent left the voicemail message and hung up.
    VoicemailLeft,
    /// Gemini failed (`cause`); the caller heard the fallback message and was transferred
    /// (`transferred_to`) or hung up on.
    FellBack {
        /// What went wrong with Gemini.
        cause: Box<EndReason>,
        /// Where the caller went, if anywhere.
        transferred_to: Option<String>,
    },
}

impl EndReason {
    /// True when the agent is what failed: the caller is owed an explanation.
    pub fn is_gemini_failure(&self) -> bool {
        matches!(
            self,
            EndReason::GeminiUnavailable(_)
                | EndReason::GeminiClosed { .. }
                | EndReason::GeminiStalled
        )
    }

    /// The WebSocket close code the phone side is sent.
    pub fn close_code(&self) -> u16 {
        match self {
            EndReason::Unauthorized(_) | EndReason::AudioFlood => 1008,
            EndReason::PhoneError(_) => 1002,
            EndReason::ServerShutdown => 1001,
            EndReason::OverCapacity => 1013,
            EndReason::GeminiUnavailable(_)
            | EndReason::GeminiClosed { .. }
            | EndReason::GeminiStalled => 1011,
            _ => 1000,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::CallerHungUp => f.write_str("caller hung up"),
            EndReason::NoStart => f.write_str("provider sent no start message"),
            EndReason::GeminiUnavailable(why) => write!(f, "Gemini unavailable: {why}"),
            EndReason::GeminiClosed { code, reason } => {
                write!(f, "Gemini closed the session: code {code} {reason:?}")
            }
            EndReason::GeminiStalled => f.write_str("Gemini stopped answering"),
            EndReason::PhoneError(why) => write!(f, "phone stream error: {why}"),
            EndReason::MaxDuration => f.write_str("maximum call duration reached"),
            EndReason::PhoneSilent => f.write_str("the phone stream went silent"),
            EndReason::AudioFlood => {
                f.write_str("the phone stream sent audio far faster than real time")
            }
            EndReason::AgentHungUp => f.write_str("agent ended the call"),
            EndReason::Transferred(to) => write!(f, "transferred to {to}"),
            EndReason::Unauthorized(why) => {
                write!(f, "stream not opened by our answer webhook: {why}")
            }
            EndReason::OverCapacity => f.write_str("over capacity: MAX_CONCURRENT_CALLS reached"),
            EndReason::ServerShutdown => f.write_str("server shutdown"),
            EndReason::Idle => f.write_str("idle: the line stayed silent"),
            EndReason::VoicemailLeft => f.write_str("voicemail message left"),
            EndReason::FellBack {
                cause,
                transferred_to: Some(to),
            } => write!(
                f,
                "{cause}; the caller heard the fallback message and was transferred to {to}"
            ),
            EndReason::FellBack {
                cause,
                transferred_to: None,
            } => write!(f, "{cause}; the caller heard the fallback message"),
        }
    }
}

/// What to do once the agent's last words have played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPlayout {
    /// Hang up (`end_call`).
    HangUp,
    /// Hang up a line that stayed silent (end reason [`EndReason::Idle`]).
    IdleHangUp,
    /// Hang up once the voicemail message has played (end reason [`EndReason::VoicemailLeft`]).
    VoicemailHangUp,
    /// Transfer to this number (`transfer_call`, answering tool call `call_id`).
    Transfer {
        /// E.164 target.
        to: String,
        /// The tool call to answer if the transfer fails.
        call_id: String,
    },
    /// The fallback message has played after Gemini failed (`cause`): transfer the caller
    /// to a person if one is configured, else hang up.
    Fallback {
        /// What went wrong with Gemini.
        cause: EndReason,
    },
}

/// A command for the task around the machine.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// The stream started: the task checks it and decides the session setup, then calls
    /// [`super::CallMachine::handle_session_setup`] or [`super::CallMachine::finish`].
    Started(StreamStart),
    /// Send this text frame to the phone.
    Phone(String),
    /// Send this text frame to Gemini.
    Gemini(String),
    /// Close the current Gemini socket (before a resumption).
    CloseGemini,
    /// Open a Gemini session with this `setup` message, then report back with
    /// [`super::CallMachine::handle_gemini_ready`] or
    /// [`super::CallMachine::handle_gemini_failed`].
    ConnectGemini(String),
    /// A finished transcript line.
    Transcript {
        /// Who said it.
        speaker: Speaker,
        /// What they said (for an interrupted agent turn, the part the caller heard).
        text: String,
        /// The caller talked over this agent turn and the rest of it was not played.
        interrupted: bool,
    },
    /// The model asked for function calls.
    ToolCalls(Vec<FunctionCall>),
    /// The model cancelled function calls.
    CancelToolCalls(Vec<String>),
    /// The agent's last words have played (or the wait timed out): carry out the action.
    PlayedOut(AfterPlayout),
    /// End the call: close both sockets.
    End(EndReason),
}
