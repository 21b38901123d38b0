//! The per-call state machine, free of I/O.
//!
//! It takes events — a text frame from the phone, a frame from Gemini, a session opened or
//! lost, a timer — and queues commands: frames for the phone, messages for Gemini, "open a
//! session", "end the call". The task in [`super::task`] only pumps sockets and timers, so
//! barge-in, turn-taking and reconnects are tested here without a socket.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::audio::{Downlink, PHONE_FRAME_BYTES, Uplink};
use crate::gemini::SessionSetup;
use crate::gemini::protocol::{self, FunctionCall, ServerContent, ServerMessage};
use crate::telephony::{MediaStream, PhoneCommand, PhoneEvent, StreamStart};

/// How long the provider may take to send `start` after the socket opens.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A live provider streams audio every 20 ms; this long with no message means the stream
/// is dead even if its socket is not closed.
pub const PHONE_SILENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Caller audio kept while a Gemini session is being opened (16 kHz PCM16: 1 s).
const MAX_PENDING_UPLINK_BYTES: usize = 32_000;
/// Reconnect this long before a `goAway` deadline if no idle moment came first.
const GO_AWAY_MARGIN: Duration = Duration::from_secs(5);
/// Consecutive failed session re-openings after which the call ends.
const MAX_RECONNECT_ATTEMPTS: u32 = 3;
/// How long the last words of the agent may take to play before a hang-up or transfer
/// goes ahead anyway.
pub const PLAYOUT_TIMEOUT: Duration = Duration::from_secs(15);
/// Name of the mark that tells us the agent's last words have played.
const PLAYOUT_MARK: &str = "playout";
/// Bad messages logged per call before the log is sampled.
const LOGGED_BAD_MESSAGES: u32 = 5;

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
    /// The phone socket failed (oversized message, protocol error).
    PhoneError(String),
    /// The call reached `MAX_CALL_SECONDS`.
    MaxDuration,
    /// The provider stopped sending anything without closing the stream.
    PhoneSilent,
    /// The agent ended the call (`end_call`).
    AgentHungUp,
    /// The agent transferred the call (`transfer_call`).
    Transferred(String),
    /// The stream did not carry the token our answer webhook issued for its call.
    Unauthorized,
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
            EndReason::PhoneError(why) => write!(f, "phone stream error: {why}"),
            EndReason::MaxDuration => f.write_str("maximum call duration reached"),
            EndReason::PhoneSilent => f.write_str("the phone stream went silent"),
            EndReason::AgentHungUp => f.write_str("agent ended the call"),
            EndReason::Transferred(to) => write!(f, "transferred to {to}"),
            EndReason::Unauthorized => f.write_str("stream not opened by our answer webhook"),
        }
    }
}

/// What to do once the agent's last words have played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPlayout {
    /// Hang up (`end_call`).
    HangUp,
    /// Transfer to this number (`transfer_call`, answering tool call `call_id`).
    Transfer {
        /// E.164 target.
        to: String,
        /// The tool call to answer if the transfer fails.
        call_id: String,
    },
}

/// A command for the task around the machine.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// The stream started: the task decides the session setup and calls
    /// [`CallMachine::open_session`] (Gemini mode only).
    Started(StreamStart),
    /// Send this text frame to the phone.
    Phone(String),
    /// Send this text frame to Gemini.
    Gemini(String),
    /// Close the current Gemini socket (before a resumption).
    CloseGemini,
    /// Open a Gemini session with this `setup` message, then report back with
    /// [`CallMachine::gemini_ready`] or [`CallMachine::gemini_failed`].
    ConnectGemini(String),
    /// A finished transcript line.
    Transcript(Speaker, String),
    /// The model asked for function calls.
    ToolCalls(Vec<FunctionCall>),
    /// The model cancelled function calls.
    CancelToolCalls(Vec<String>),
    /// The agent's last words have played (or the wait timed out): carry out the action.
    PlayedOut(AfterPlayout),
    /// End the call: close both sockets.
    End(EndReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingStart,
    AwaitingSetup,
    Connecting,
    Live,
    Reconnecting,
    Ended,
}

/// One call's bridge logic.
pub struct CallMachine {
    mode: Mode,
    phase: Phase,
    stream: Box<dyn MediaStream>,
    uplink: Uplink,
    downlink: Downlink,
    setup: Option<SessionSetup>,
    outputs: VecDeque<Output>,
    /// Reused buffers so the per-frame path does not allocate.
    pcm16k: Vec<u8>,
    pcm24k: Vec<u8>,
    echo: Vec<u8>,
    pending_uplink: Vec<u8>,
    /// Ids of blocking tool calls not yet answered; caller audio is held meanwhile.
    blocking_tools: Vec<String>,
    greeted: bool,
    resume_handle: Option<String>,
    resume_wanted: bool,
    resume_deadline: Option<Instant>,
    reconnect_attempts: u32,
    start_deadline: Option<Instant>,
    call_deadline: Option<Instant>,
    /// When to check that the phone is still sending; `phone_heard` says whether it did since
    /// the last check (cheaper than reading the clock on every frame).
    silence_check: Option<Instant>,
    phone_heard: bool,
    agent_speaking: bool,
    after_playout: Option<AfterPlayout>,
    playout_mark_sent: bool,
    playout_deadline: Option<Instant>,
    turns: u32,
    caller_line: String,
    agent_line: String,
    bad_messages: u32,
}

impl CallMachine {
    /// A machine for a stream that has just opened at `now`.
    pub fn new(mode: Mode, stream: Box<dyn MediaStream>, now: Instant) -> Self {
        Self {
            mode,
            phase: Phase::AwaitingStart,
            stream,
            uplink: Uplink::new(),
            downlink: Downlink::new(),
            setup: None,
            outputs: VecDeque::new(),
            pcm16k: Vec::new(),
            pcm24k: Vec::new(),
            echo: Vec::new(),
            pending_uplink: Vec::new(),
            blocking_tools: Vec::new(),
            greeted: false,
            resume_handle: None,
            resume_wanted: false,
            resume_deadline: None,
            reconnect_attempts: 0,
            start_deadline: Some(now + START_TIMEOUT),
            call_deadline: None,
            silence_check: None,
            phone_heard: false,
            agent_speaking: false,
            after_playout: None,
            playout_mark_sent: false,
            playout_deadline: None,
            turns: 0,
            caller_line: String::new(),
            agent_line: String::new(),
            bad_messages: 0,
        }
    }

    /// The next queued command, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.start_deadline,
            self.resume_deadline,
            self.call_deadline,
            self.playout_deadline,
            self.silence_check,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends the call at `deadline` whatever is happening then.
    pub fn set_call_deadline(&mut self, deadline: Instant) {
        self.call_deadline = Some(deadline);
    }

    /// True once the call has ended; nothing more will be queued.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// True while the agent's audio is being sent and has not finished or been cut off.
    pub fn agent_speaking(&self) -> bool {
        self.agent_speaking
    }

    /// A text frame from the phone.
    pub fn handle_phone_text(&mut self, text: &str) {
        if self.is_ended() {
            return;
        }
        self.phone_heard = true;
        let event = match self.stream.parse(text) {
            Ok(event) => event,
            Err(error) => {
                let n = self.note_bad_message();
                if n <= LOGGED_BAD_MESSAGES || n.is_power_of_two() {
                    tracing::warn!(%error, bad_messages = n, "ignoring bad message from phone");
                }
                return;
            }
        };
        match event {
            PhoneEvent::Audio(mulaw) => {
                // Split borrow: the codec's buffer is borrowed by `mulaw`, so work through
                // the fields directly rather than through `&mut self` methods.
                match (self.mode, self.phase) {
                    (Mode::Echo, Phase::Live) => {
                        self.echo.extend_from_slice(mulaw);
                        let mut chunks = self.echo.chunks_exact(PHONE_FRAME_BYTES);
                        for frame in &mut chunks {
                            self.outputs.push_back(Output::Phone(
                                self.stream.encode(PhoneCommand::Play(frame)),
                            ));
                        }
                        let rest = chunks.remainder().len();
                        let used = self.echo.len() - rest;
                        self.echo.drain(..used);
                    }
                    (Mode::Gemini, Phase::Live) if self.blocking_tools.is_empty() => {
                        self.pcm16k.clear();
                        self.uplink.push(mulaw, &mut self.pcm16k);
                        let mut message = String::with_capacity(96 + self.pcm16k.len() * 4 / 3);
                        protocol::write_audio_message(&self.pcm16k, &mut message);
                        self.outputs.push_back(Output::Gemini(message));
                    }
                    // Held while a session opens, and while a blocking tool call is pending
                    // (models that block on tools close the session with 1008 otherwise).
                    (
                        Mode::Gemini,
                        Phase::Live
                        | Phase::Connecting
                        | Phase::Reconnecting
                        | Phase::AwaitingSetup,
                    ) => {
                        self.uplink.push(mulaw, &mut self.pending_uplink);
                        let excess = self
                            .pending_uplink
                            .len()
                            .saturating_sub(MAX_PENDING_UPLINK_BYTES);
                        if excess > 0 {
                            // Keep the most recent second; whole samples only.
                            self.pending_uplink.drain(..excess + excess % 2);
                        }
                    }
                    _ => {}
                }
            }
            PhoneEvent::Started(start) => self.on_started(start),
            PhoneEvent::Dtmf(digit) => tracing::info!(%digit, "caller pressed a key"),
            PhoneEvent::MarkPlayed(name) => {
                tracing::debug!(%name, "playback reached mark");
                if name == PLAYOUT_MARK && self.playout_mark_sent {
                    self.played_out();
                }
            }
            PhoneEvent::Cleared => tracing::debug!("provider cleared playback"),
            PhoneEvent::Stopped => self.end(EndReason::CallerHungUp),
            PhoneEvent::Ignored => {}
        }
    }

    /// A binary frame from the phone: providers send none, so it is logged and dropped.
    pub fn handle_phone_binary(&mut self) {
        let n = self.note_bad_message();
        if n <= LOGGED_BAD_MESSAGES {
            tracing::warn!("ignoring binary frame from phone");
        }
    }

    /// The phone socket ended or failed.
    pub fn phone_closed(&mut self, error: Option<String>) {
        self.end(match error {
            Some(e) => EndReason::PhoneError(e),
            None => EndReason::CallerHungUp,
        });
    }

    /// Sets the session up (Gemini mode) once the task knows the call's prompt.
    pub fn open_session(&mut self, setup: SessionSetup) {
        if self.phase != Phase::AwaitingSetup {
            return;
        }
        self.outputs
            .push_back(Output::ConnectGemini(setup.to_message(None)));
        self.setup = Some(setup);
        self.phase = Phase::Connecting;
    }

    /// The Gemini session asked for is open (`setupComplete` arrived).
    pub fn gemini_ready(&mut self) {
        if !matches!(self.phase, Phase::Connecting | Phase::Reconnecting) {
            return;
        }
        self.phase = Phase::Live;
        self.reconnect_attempts = 0;
        if !self.greeted {
            self.greeted = true;
            if let Some(setup) = &self.setup {
                self.outputs
                    .push_back(Output::Gemini(setup.greeting_message()));
            }
        }
        self.send_held_uplink();
    }

    /// Sends the caller audio held back meanwhile, in chunks of at most 100 ms.
    fn send_held_uplink(&mut self) {
        let pending = std::mem::take(&mut self.pending_uplink);
        for chunk in pending.chunks(3_200) {
            let mut message = String::new();
            protocol::write_audio_message(chunk, &mut message);
            self.outputs.push_back(Output::Gemini(message));
        }
    }

    /// A tool call was answered (or given up); audio held for blocking calls flows again once
    /// none is pending.
    pub fn tool_answered(&mut self, id: &str) {
        let before = self.blocking_tools.len();
        self.blocking_tools.retain(|pending| pending != id);
        if before > 0 && self.blocking_tools.is_empty() && self.phase == Phase::Live {
            self.send_held_uplink();
        }
    }

    /// Opening a Gemini session failed.
    pub fn gemini_failed(&mut self, why: String) {
        if self.phase == Phase::Reconnecting && self.reconnect_attempts < MAX_RECONNECT_ATTEMPTS {
            tracing::warn!(%why, attempt = self.reconnect_attempts, "resuming the Gemini session failed; retrying");
            self.request_resume();
            return;
        }
        self.end(EndReason::GeminiUnavailable(why));
    }

    /// The live Gemini socket closed (close frame, error or EOF).
    pub fn gemini_closed(&mut self, code: u16, reason: String) {
        if self.phase != Phase::Live {
            return;
        }
        // 1011 is a server fault or the connection deadline; both resume cleanly.
        let resumable = code == 1011 && !reason.to_ascii_lowercase().contains("quota");
        if resumable
            && self.resume_handle.is_some()
            && self.reconnect_attempts < MAX_RECONNECT_ATTEMPTS
        {
            tracing::warn!(code, %reason, "Gemini connection lost; resuming the session");
            self.outputs.push_back(Output::CloseGemini);
            self.request_resume();
            return;
        }
        self.end(EndReason::GeminiClosed { code, reason });
    }

    /// A frame (text or binary JSON) from Gemini, received at `now`.
    pub fn handle_gemini_frame(&mut self, frame: &[u8], now: Instant) {
        if self.phase != Phase::Live {
            return;
        }
        let message: ServerMessage<'_> = match serde_json::from_slice(frame) {
            Ok(m) => m,
            Err(error) => {
                let n = self.note_bad_message();
                if n <= LOGGED_BAD_MESSAGES || n.is_power_of_two() {
                    tracing::warn!(%error, "ignoring unreadable message from Gemini");
                }
                return;
            }
        };
        // One message can carry several of these; handle each, never else-if.
        if let Some(content) = message.server_content {
            self.on_server_content(content);
        }
        if let Some(call) = message.tool_call
            && !call.function_calls.is_empty()
        {
            if self.setup.as_ref().is_some_and(SessionSetup::tools_block) {
                self.blocking_tools
                    .extend(call.function_calls.iter().map(|c| c.id.clone()));
            }
            self.outputs
                .push_back(Output::ToolCalls(call.function_calls));
        }
        if let Some(cancel) = message.tool_call_cancellation
            && !cancel.ids.is_empty()
        {
            for id in &cancel.ids {
                self.tool_answered(id);
            }
            self.outputs.push_back(Output::CancelToolCalls(cancel.ids));
        }
        if let Some(update) = message.session_resumption_update
            && update.resumable
            && let Some(handle) = update.new_handle.filter(|h| !h.is_empty())
        {
            self.resume_handle = Some(handle);
        }
        if let Some(go_away) = message.go_away {
            let left = go_away.seconds_left().unwrap_or(10.0);
            tracing::info!(
                seconds_left = left,
                "Gemini will close this connection; resuming at the next pause"
            );
            self.resume_wanted = true;
            let left = Duration::from_secs_f64(left.min(3_600.0));
            self.resume_deadline = Some(now + left.saturating_sub(GO_AWAY_MARGIN));
            if !self.agent_speaking {
                self.resume_now();
            }
        }
    }

    /// Carries out `action` once what the agent is saying has played to the caller: after
    /// the current turn, a mark, and the provider's acknowledgement of it (or a timeout).
    pub fn after_playout(&mut self, action: AfterPlayout, now: Instant) {
        if self.is_ended() || self.after_playout.is_some() {
            return;
        }
        self.after_playout = Some(action);
        self.playout_deadline = Some(now + PLAYOUT_TIMEOUT);
        if !self.agent_speaking {
            self.send_playout_mark();
        }
    }

    /// Ends the call for `reason` (the task's verdict after a hang-up or transfer).
    pub fn finish(&mut self, reason: EndReason) {
        self.end(reason);
    }

    /// Sends a queued reply to Gemini (tool responses and the like).
    pub fn send_to_gemini(&mut self, message: String) {
        if self.phase == Phase::Live {
            self.outputs.push_back(Output::Gemini(message));
        }
    }

    /// Timers: no `start` in time, a `goAway` deadline reached mid-turn, the call too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.call_deadline.is_some_and(|d| now >= d) {
            self.call_deadline = None;
            self.end(EndReason::MaxDuration);
            return;
        }
        if self.start_deadline.is_some_and(|d| now >= d) {
            self.start_deadline = None;
            if self.phase == Phase::AwaitingStart {
                self.end(EndReason::NoStart);
            }
        }
        if self.resume_deadline.is_some_and(|d| now >= d) {
            self.resume_now();
        }
        if self.silence_check.is_some_and(|d| now >= d) {
            if !std::mem::take(&mut self.phone_heard) {
                self.end(EndReason::PhoneSilent);
                return;
            }
            self.silence_check = Some(now + PHONE_SILENCE_TIMEOUT);
        }
        if self.playout_deadline.is_some_and(|d| now >= d) {
            tracing::warn!("no playback acknowledgement in time; going ahead");
            self.played_out();
        }
    }

    fn send_playout_mark(&mut self) {
        self.playout_mark_sent = true;
        self.outputs.push_back(Output::Phone(
            self.stream.encode(PhoneCommand::Mark(PLAYOUT_MARK)),
        ));
    }

    fn played_out(&mut self) {
        self.playout_deadline = None;
        if let Some(action) = self.after_playout.take() {
            self.outputs.push_back(Output::PlayedOut(action));
        }
    }

    fn on_started(&mut self, start: StreamStart) {
        if self.phase != Phase::AwaitingStart {
            return;
        }
        // The start deadline was set from the moment the socket opened.
        self.silence_check = self
            .start_deadline
            .map(|d| d - START_TIMEOUT + PHONE_SILENCE_TIMEOUT);
        self.start_deadline = None;
        self.phase = match self.mode {
            Mode::Echo => Phase::Live,
            Mode::Gemini => Phase::AwaitingSetup,
        };
        self.outputs.push_back(Output::Started(start));
    }

    fn on_server_content(&mut self, content: ServerContent<'_>) {
        if let Some(turn) = content.model_turn {
            for part in turn.parts {
                let Some(blob) = part.inline_data else {
                    continue;
                };
                if part.thought
                    || !blob
                        .mime_type
                        .as_deref()
                        .is_none_or(|m| m.starts_with("audio/pcm"))
                {
                    continue;
                }
                if let Err(error) = protocol::decode_audio(&blob.data, &mut self.pcm24k) {
                    tracing::warn!(%error, "dropping undecodable audio from Gemini");
                    continue;
                }
                if !self.agent_speaking {
                    self.agent_speaking = true;
                    self.flush_line(Speaker::Caller);
                }
                self.downlink.push(&self.pcm24k);
                self.drain_frames();
            }
        }
        if let Some(t) = content.input_transcription {
            self.caller_line.push_str(&t.text);
        }
        if let Some(t) = content.output_transcription {
            self.agent_line.push_str(&t.text);
        }
        if content.interrupted {
            // Barge-in: nothing the model said before this may still reach the caller.
            self.downlink.clear();
            self.outputs
                .push_back(Output::Phone(self.stream.encode(PhoneCommand::Clear)));
            self.agent_speaking = false;
            self.flush_line(Speaker::Agent);
        }
        if content.turn_complete {
            if let Some(reason) = content.turn_complete_reason.as_deref() {
                tracing::debug!(reason, "model turn complete");
            }
            if self.agent_speaking {
                self.downlink.finish_turn();
                self.drain_frames();
                self.turns += 1;
                let mark = format!("turn-{}", self.turns);
                self.outputs
                    .push_back(Output::Phone(self.stream.encode(PhoneCommand::Mark(&mark))));
            }
            self.agent_speaking = false;
            self.flush_line(Speaker::Caller);
            self.flush_line(Speaker::Agent);
            if self.after_playout.is_some() && !self.playout_mark_sent {
                self.send_playout_mark();
            }
            if self.resume_wanted {
                self.resume_now();
            }
        }
    }

    fn drain_frames(&mut self) {
        while let Some(frame) = self.downlink.pop_frame() {
            self.outputs.push_back(Output::Phone(
                self.stream.encode(PhoneCommand::Play(&frame)),
            ));
        }
    }

    fn flush_line(&mut self, speaker: Speaker) {
        let line = match speaker {
            Speaker::Caller => &mut self.caller_line,
            Speaker::Agent => &mut self.agent_line,
        };
        let text = line.trim();
        if !text.is_empty() {
            let text = text.to_owned();
            self.outputs.push_back(Output::Transcript(speaker, text));
        }
        line.clear();
    }

    fn resume_now(&mut self) {
        if self.phase != Phase::Live || !self.resume_wanted && self.resume_deadline.is_none() {
            return;
        }
        self.cut_agent_turn();
        self.outputs.push_back(Output::CloseGemini);
        self.request_resume();
    }

    /// Plays out what the model already said: an unfinished turn cannot be resumed, and the
    /// new session starts clean.
    fn cut_agent_turn(&mut self) {
        if self.agent_speaking {
            self.downlink.finish_turn();
            self.drain_frames();
            self.agent_speaking = false;
        }
    }

    fn request_resume(&mut self) {
        self.cut_agent_turn();
        let Some(setup) = &self.setup else {
            return self.end(EndReason::GeminiUnavailable("no session to resume".into()));
        };
        let message = setup.to_message(self.resume_handle.as_deref());
        self.reconnect_attempts += 1;
        self.resume_wanted = false;
        self.resume_deadline = None;
        self.phase = Phase::Reconnecting;
        self.outputs.push_back(Output::ConnectGemini(message));
    }

    fn end(&mut self, reason: EndReason) {
        if self.phase == Phase::Ended {
            return;
        }
        self.flush_line(Speaker::Caller);
        self.flush_line(Speaker::Agent);
        self.phase = Phase::Ended;
        self.start_deadline = None;
        self.resume_deadline = None;
        self.call_deadline = None;
        self.playout_deadline = None;
        self.silence_check = None;
        self.downlink.clear();
        self.pending_uplink = Vec::new();
        self.outputs.push_back(Output::End(reason));
    }

    fn note_bad_message(&mut self) -> u32 {
        self.bad_messages = self.bad_messages.saturating_add(1);
        self.bad_messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GeminiConfig, Secret};
    use crate::telephony::{Provider, twilio::Twilio};
    use base64::Engine as _;
    use serde_json::{Value, json};

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"from":"+1555"}},"streamSid":"MZ1"}"#;

    fn media(frame: &[u8]) -> String {
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        format!(
            r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{payload}"}},"streamSid":"MZ1"}}"#
        )
    }

    fn model_audio(samples: usize) -> Vec<u8> {
        let pcm: Vec<u8> = (0..samples)
            .flat_map(|i| (((i as f64 * 0.1).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        let data = base64::engine::general_purpose::STANDARD.encode(pcm);
        json!({"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":data}}]}}})
            .to_string()
            .into_bytes()
    }

    fn setup() -> SessionSetup {
        let config = GeminiConfig {
            api_key: Secret::new("k"),
            model: "gemini-3.8-live".into(),
            voice: "Kore".into(),
            language: None,
            live_url: "ws://127.0.0.1:1".into(),
            setup_timeout: Duration::from_secs(1),
        };
        SessionSetup::new(&config, "Be brief.".into())
    }

    fn drain(machine: &mut CallMachine) -> Vec<Output> {
        std::iter::from_fn(|| machine.poll_output()).collect()
    }

    fn kinds(outputs: &[Output]) -> Vec<&'static str> {
        outputs
            .iter()
            .map(|o| match o {
                Output::Started(_) => "started",
                Output::Phone(text) => match serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(str::to_owned))
                    .as_deref()
                {
                    Some("media") => "play",
                    Some("clear") => "clear",
                    Some("mark") => "mark",
                    _ => "phone?",
                },
                Output::Gemini(text) if text.contains("\"audio\"") => "audio-up",
                Output::Gemini(_) => "gemini",
                Output::CloseGemini => "close-gemini",
                Output::ConnectGemini(_) => "connect",
                Output::Transcript(..) => "transcript",
                Output::ToolCalls(_) => "tools",
                Output::CancelToolCalls(_) => "cancel",
                Output::PlayedOut(_) => "played-out",
                Output::End(_) => "end",
            })
            .collect()
    }

    /// A Gemini-mode machine that is live (session open, greeting sent).
    fn live() -> CallMachine {
        let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
        m.handle_phone_text(START);
        assert_eq!(kinds(&drain(&mut m)), ["started"]);
        m.open_session(setup());
        assert_eq!(kinds(&drain(&mut m)), ["connect"]);
        m.gemini_ready();
        assert_eq!(kinds(&drain(&mut m)), ["gemini"], "greeting cue");
        m
    }

    #[test]
    fn caller_audio_is_held_while_connecting_and_sent_after_the_greeting() {
        let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
        m.handle_phone_text(START);
        m.open_session(setup());
        drain(&mut m);
        for _ in 0..5 {
            m.handle_phone_text(&media(&[0xFF; 160]));
        }
        assert!(
            drain(&mut m).is_empty(),
            "nothing may reach Gemini before setupComplete"
        );
        m.gemini_ready();
        let out = drain(&mut m);
        assert_eq!(kinds(&out), ["gemini", "audio-up"]);
        let Output::Gemini(text) = &out[1] else {
            unreachable!()
        };
        let msg: Value = serde_json::from_str(text).unwrap();
        let data = msg["realtimeInput"]["audio"]["data"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(bytes.len(), 5 * 160 * 4, "100 ms of 16 kHz PCM16");
    }

    #[test]
    fn every_phone_frame_goes_up_at_once() {
        let mut m = live();
        m.handle_phone_text(&media(&[0x7F; 160]));
        assert_eq!(kinds(&drain(&mut m)), ["audio-up"]);
    }

    #[test]
    fn model_audio_becomes_frames_and_a_mark_ends_the_turn() {
        let mut m = live();
        // 250 ms at 24 kHz: 12 whole frames and a partial one.
        m.handle_gemini_frame(&model_audio(6_000), Instant::now());
        let out = drain(&mut m);
        assert_eq!(kinds(&out), ["play"; 12]);
        assert!(m.agent_speaking());
        m.handle_gemini_frame(
            br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"totalTokenCount":5}}"#,
            Instant::now(),
        );
        let out = drain(&mut m);
        let k = kinds(&out);
        assert_eq!(k.last(), Some(&"mark"));
        assert!(
            k[..k.len() - 1].iter().all(|&x| x == "play") && k.len() >= 2,
            "{k:?}"
        );
        assert!(!m.agent_speaking());
    }

    #[test]
    fn interruption_clears_and_drops_the_partial_frame() {
        let mut m = live();
        m.handle_gemini_frame(&model_audio(6_000), Instant::now());
        drain(&mut m);
        m.handle_gemini_frame(br#"{"serverContent":{"interrupted":true}}"#, Instant::now());
        assert_eq!(kinds(&drain(&mut m)), ["clear"]);
        m.handle_gemini_frame(
            br#"{"serverContent":{"turnComplete":true}}"#,
            Instant::now(),
        );
        assert!(
            drain(&mut m).is_empty(),
            "no stale audio and no mark after a barge-in"
        );
        m.handle_gemini_frame(&model_audio(480), Instant::now());
        assert_eq!(kinds(&drain(&mut m)), ["play"], "the next answer plays");
    }

    #[test]
    fn several_fields_in_one_message_are_all_handled() {
        let mut m = live();
        let mut msg: Value = serde_json::from_slice(&model_audio(480)).unwrap();
        msg["serverContent"]["outputTranscription"] = json!({"text": "Hello!"});
        msg["serverContent"]["turnComplete"] = json!(true);
        msg["sessionResumptionUpdate"] = json!({"newHandle": "h9", "resumable": true});
        m.handle_gemini_frame(msg.to_string().as_bytes(), Instant::now());
        let out = drain(&mut m);
        assert!(
            out.contains(&Output::Transcript(Speaker::Agent, "Hello!".into())),
            "{out:?}"
        );
        assert!(kinds(&out).contains(&"play") && kinds(&out).contains(&"mark"));
        m.gemini_closed(1011, "Internal error encountered.".into());
        let out = drain(&mut m);
        let Some(Output::ConnectGemini(setup)) =
            out.iter().find(|o| matches!(o, Output::ConnectGemini(_)))
        else {
            panic!("no resumption: {out:?}");
        };
        assert!(setup.contains("\"handle\":\"h9\""));
    }

    #[test]
    fn transcripts_are_whole_lines_per_turn() {
        let mut m = live();
        m.handle_gemini_frame(
            br#"{"serverContent":{"inputTranscription":{"text":"what's the "}}}"#,
            Instant::now(),
        );
        m.handle_gemini_frame(
            br#"{"serverContent":{"inputTranscription":{"text":"weather"}}}"#,
            Instant::now(),
        );
        assert!(drain(&mut m).is_empty());
        m.handle_gemini_frame(&model_audio(480), Instant::now());
        let out = drain(&mut m);
        assert_eq!(
            out[0],
            Output::Transcript(Speaker::Caller, "what's the weather".into())
        );
        m.handle_gemini_frame(
            br#"{"serverContent":{"outputTranscription":{"text":" Sunny"}}}"#,
            Instant::now(),
        );
        m.handle_gemini_frame(
            br#"{"serverContent":{"outputTranscription":{"text":" today."}}}"#,
            Instant::now(),
        );
        m.handle_gemini_frame(
            br#"{"serverContent":{"turnComplete":true}}"#,
            Instant::now(),
        );
        let out = drain(&mut m);
        assert!(out.contains(&Output::Transcript(Speaker::Agent, "Sunny today.".into())));
    }

    #[test]
    fn go_away_waits_for_the_end_of_the_turn() {
        let mut m = live();
        m.handle_gemini_frame(
            br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
            Instant::now(),
        );
        m.handle_gemini_frame(&model_audio(4_800), Instant::now());
        drain(&mut m);
        m.handle_gemini_frame(br#"{"goAway":{"timeLeft":"50s"}}"#, Instant::now());
        assert!(
            drain(&mut m).is_empty(),
            "must not cut the agent off mid-sentence"
        );
        assert!(
            m.poll_timeout().is_some(),
            "a deadline guards against a turn that never ends"
        );
        m.handle_gemini_frame(
            br#"{"serverContent":{"turnComplete":true}}"#,
            Instant::now(),
        );
        let out = drain(&mut m);
        let k = kinds(&out);
        assert_eq!(&k[k.len() - 2..], ["close-gemini", "connect"]);
        // While the new session opens, caller audio waits; then it flows again.
        m.handle_phone_text(&media(&[0xFF; 160]));
        assert!(drain(&mut m).is_empty());
        m.gemini_ready();
        assert_eq!(kinds(&drain(&mut m)), ["audio-up"], "no second greeting");
    }

    #[test]
    fn go_away_deadline_forces_the_resumption() {
        let mut m = live();
        m.handle_gemini_frame(&model_audio(4_800), Instant::now());
        m.handle_gemini_frame(br#"{"goAway":{"timeLeft":"6s"}}"#, Instant::now());
        drain(&mut m);
        let deadline = m.poll_timeout().expect("deadline");
        m.handle_timeout(deadline);
        let k = kinds(&drain(&mut m));
        assert!(k.ends_with(&["close-gemini", "connect"]), "{k:?}");
    }

    #[test]
    fn failed_resumptions_end_the_call_after_a_few_tries() {
        let mut m = live();
        m.handle_gemini_frame(
            br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
            Instant::now(),
        );
        m.gemini_closed(
            1011,
            "Deadline expired before operation could complete.".into(),
        );
        drain(&mut m);
        for _ in 1..MAX_RECONNECT_ATTEMPTS {
            m.gemini_failed("refused".into());
            assert_eq!(kinds(&drain(&mut m)), ["connect"]);
        }
        m.gemini_failed("refused".into());
        let out = drain(&mut m);
        assert!(
            matches!(
                out.last(),
                Some(Output::End(EndReason::GeminiUnavailable(_)))
            ),
            "{out:?}"
        );
        assert!(m.is_ended());
    }

    #[test]
    fn fatal_closes_end_the_call_with_the_reason() {
        let mut m = live();
        m.handle_gemini_frame(
            br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
            Instant::now(),
        );
        m.gemini_closed(
            1007,
            "API key not valid. Please pass a valid API key.".into(),
        );
        let out = drain(&mut m);
        assert_eq!(
            out,
            [Output::End(EndReason::GeminiClosed {
                code: 1007,
                reason: "API key not valid. Please pass a valid API key.".into()
            })]
        );
        m.handle_phone_text(&media(&[0; 160]));
        m.handle_gemini_frame(&model_audio(480), Instant::now());
        assert!(drain(&mut m).is_empty(), "nothing happens after the end");
    }

    #[test]
    fn no_start_ends_the_call() {
        let now = Instant::now();
        let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), now);
        m.handle_phone_text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
        assert_eq!(m.poll_timeout(), Some(now + START_TIMEOUT));
        m.handle_timeout(now + START_TIMEOUT);
        assert_eq!(drain(&mut m), [Output::End(EndReason::NoStart)]);
    }

    #[test]
    fn the_call_ends_at_its_deadline() {
        let mut m = live();
        let deadline = Instant::now() + Duration::from_secs(1800);
        m.set_call_deadline(deadline);
        // The caller keeps talking, so only the call deadline can end the call.
        m.handle_phone_text(&media(&[0xFF; 160]));
        drain(&mut m);
        m.handle_timeout(deadline - Duration::from_millis(1));
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(deadline));
        m.handle_phone_text(&media(&[0xFF; 160]));
        drain(&mut m);
        m.handle_timeout(deadline);
        assert_eq!(drain(&mut m), [Output::End(EndReason::MaxDuration)]);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn a_hang_up_waits_for_the_goodbye_to_play() {
        let mut m = live();
        let now = Instant::now();
        m.handle_gemini_frame(&model_audio(4_800), Instant::now());
        drain(&mut m);
        m.after_playout(AfterPlayout::HangUp, now);
        assert!(drain(&mut m).is_empty(), "the goodbye is still being said");
        m.handle_gemini_frame(&model_audio(2_400), Instant::now());
        m.handle_gemini_frame(
            br#"{"serverContent":{"turnComplete":true}}"#,
            Instant::now(),
        );
        let out = drain(&mut m);
        let Some(Output::Phone(last)) = out.last() else {
            panic!("{out:?}")
        };
        assert!(
            last.contains("\"mark\"") && last.contains("playout"),
            "{last}"
        );
        assert!(
            kinds(&out)[..out.len() - 2].iter().all(|&k| k == "play"),
            "{:?}",
            kinds(&out)
        );
        m.handle_phone_text(
            r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"turn-1"}}"#,
        );
        assert!(drain(&mut m).is_empty(), "other marks do not count");
        m.handle_phone_text(
            r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"playout"}}"#,
        );
        assert_eq!(drain(&mut m), [Output::PlayedOut(AfterPlayout::HangUp)]);
        m.finish(EndReason::AgentHungUp);
        assert_eq!(drain(&mut m), [Output::End(EndReason::AgentHungUp)]);
    }

    #[test]
    fn a_hang_up_goes_ahead_when_the_mark_never_comes_back() {
        let mut m = live();
        let now = Instant::now();
        m.after_playout(AfterPlayout::HangUp, now);
        assert_eq!(
            kinds(&drain(&mut m)),
            ["mark"],
            "silent agent: mark at once"
        );
        assert_eq!(m.poll_timeout(), Some(now + PLAYOUT_TIMEOUT));
        m.handle_timeout(now + PLAYOUT_TIMEOUT);
        assert_eq!(drain(&mut m), [Output::PlayedOut(AfterPlayout::HangUp)]);
    }

    #[test]
    fn a_phone_stream_that_goes_quiet_is_ended() {
        let opened = Instant::now();
        let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), opened);
        m.handle_phone_text(START);
        drain(&mut m);
        let first = opened + PHONE_SILENCE_TIMEOUT;
        assert_eq!(m.poll_timeout(), Some(first));
        m.handle_phone_text(&media(&[0xFF; 160]));
        m.handle_timeout(first);
        assert!(drain(&mut m).is_empty(), "audio arrived in time");
        let second = m.poll_timeout().expect("next check");
        assert_eq!(second, first + PHONE_SILENCE_TIMEOUT);
        m.handle_timeout(second);
        assert_eq!(drain(&mut m), [Output::End(EndReason::PhoneSilent)]);
    }

    #[test]
    fn audio_is_held_while_a_blocking_model_waits_for_a_tool() {
        let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
        m.handle_phone_text(START);
        let mut old_model = setup();
        old_model.model = "models/gemini-2.5-flash-native-audio-latest".into();
        m.open_session(old_model);
        m.gemini_ready();
        drain(&mut m);
        m.handle_gemini_frame(
            br#"{"toolCall":{"functionCalls":[{"id":"a","name":"f"},{"id":"b","name":"g"}]}}"#,
            Instant::now(),
        );
        drain(&mut m);
        m.handle_phone_text(&media(&[0xFF; 160]));
        assert!(
            drain(&mut m).is_empty(),
            "audio during a blocking call risks a 1008 close"
        );
        m.tool_answered("a");
        m.handle_phone_text(&media(&[0xFF; 160]));
        assert!(drain(&mut m).is_empty(), "one call is still pending");
        m.handle_gemini_frame(br#"{"toolCallCancellation":{"ids":["b"]}}"#, Instant::now());
        let out = drain(&mut m);
        assert_eq!(
            kinds(&out),
            ["audio-up", "cancel"],
            "held audio flows once nothing is pending"
        );
        m.handle_phone_text(&media(&[0xFF; 160]));
        assert_eq!(kinds(&drain(&mut m)), ["audio-up"]);
    }

    #[test]
    fn audio_keeps_flowing_while_a_non_blocking_model_runs_tools() {
        let mut m = live();
        m.handle_gemini_frame(
            br#"{"toolCall":{"functionCalls":[{"id":"a","name":"f"}]}}"#,
            Instant::now(),
        );
        drain(&mut m);
        m.handle_phone_text(&media(&[0xFF; 160]));
        assert_eq!(kinds(&drain(&mut m)), ["audio-up"]);
    }

    #[test]
    fn stop_ends_the_call() {
        let mut m = live();
        m.handle_phone_text(r#"{"event":"stop","sequenceNumber":"9","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#);
        assert_eq!(drain(&mut m), [Output::End(EndReason::CallerHungUp)]);
    }

    #[test]
    fn echo_mode_reframes_the_callers_audio() {
        let mut m = CallMachine::new(Mode::Echo, Twilio.media_stream(), Instant::now());
        m.handle_phone_text(START);
        drain(&mut m);
        m.handle_phone_text(&media(&[1; 100]));
        assert!(drain(&mut m).is_empty(), "a partial frame waits");
        m.handle_phone_text(&media(&[2; 100]));
        let out = drain(&mut m);
        assert_eq!(kinds(&out), ["play"]);
    }

    #[test]
    fn tool_calls_and_cancellations_are_passed_on() {
        let mut m = live();
        m.handle_gemini_frame(br#"{"toolCall":{"functionCalls":[{"id":"a","name":"f","args":{"x":1}},{"id":"b","name":"g"}]}}"#, Instant::now());
        let out = drain(&mut m);
        let [Output::ToolCalls(calls)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].args, json!({"x": 1}));
        m.handle_gemini_frame(br#"{"toolCallCancellation":{"ids":["a"]}}"#, Instant::now());
        assert_eq!(drain(&mut m), [Output::CancelToolCalls(vec!["a".into()])]);
    }

    #[test]
    fn garbage_from_either_side_changes_nothing() {
        let mut m = live();
        for junk in [
            "",
            "{",
            "null",
            "[]",
            r#"{"event":7}"#,
            r#"{"event":"media","media":{"payload":"*"}}"#,
        ] {
            m.handle_phone_text(junk);
        }
        m.handle_phone_binary();
        for junk in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            br#"{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"@@"}}]}}}"#,
        ] {
            m.handle_gemini_frame(junk, Instant::now());
        }
        assert!(drain(&mut m).is_empty());
        assert!(!m.is_ended());
    }
}
