//! The per-call state machine, free of I/O.
//!
//! It takes inputs — a text frame from the phone, a frame from Gemini, a session opened or
//! lost, a tool's result, a timer, the shutdown signal — and queues commands: frames for the
//! phone, messages for Gemini, "open a session", "end the call". The task in
//! [`super::task`] only pumps sockets, jobs and timers, so barge-in, turn-taking,
//! reconnects and watchdogs are tested here without a socket.
//!
//! The machine is made of sub-machines, one per concern — [`caller::CallerAudio`],
//! [`playout::Playout`], [`session::Session`], [`transcript::Transcript`],
//! [`timeline::Timeline`] — sharing one
//! [`outbox::Outbox`] of commands and one [`timers::Timers`] table.

mod caller;
mod conversation;
mod gemini_side;
mod greeting;
mod idle;
mod keypad;
mod outbox;
mod pacer;
mod playout;
mod session;
mod tap;
mod timeline;
mod timers;
mod transcript;
mod types;
mod voicemail;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use caller::{INPUT_WINDOW, MAX_FRAME_BYTES};
pub use playout::PLAYOUT_TIMEOUT;
pub use session::{DEFAULT_STALL_TIMEOUT, MAX_RECONNECT_ATTEMPTS, Resumptions};
pub use tap::AudioTap;
pub use timeline::{MAX_EVENTS, Timeline};
pub use timers::Timer;
pub use types::{AfterPlayout, EndReason, Mode, Output, Speaker};

use caller::{CallerAudio, Route, WindowVerdict};
use greeting::Greeting;
use idle::Idle;
use keypad::Keypad;
use outbox::Outbox;
use playout::{Playout, TurnHeard};
use session::{GO_AWAY_MARGIN, ResumeCause, Session};
use timers::Timers;
use transcript::Transcript;
use voicemail::Voicemail;

use crate::audio::PHONE_FRAME_BYTES;
use crate::gemini::SessionSetup;
use crate::gemini::protocol::{self, ServerContent, ServerMessage};
use crate::telephony::{MediaStream, PhoneCommand, PhoneEvent, StreamStart};

/// How long the provider may take to send `start` after the socket opens.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A live provider streams audio every 20 ms; this long with no message means the stream
/// is dead even if its socket is not closed.
pub const PHONE_SILENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long past the goodbye's length a shutting-down server waits for the provider to
/// confirm it played: the drain deadline is close.
const SHUTDOWN_PLAYOUT_MARGIN: Duration = Duration::from_secs(2);
/// Bad messages logged per call before the log is sampled.
const LOGGED_BAD_MESSAGES: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingStart,
    /// `start` arrived; the task is checking it and choosing the session setup.
    AwaitingSetup,
    Connecting,
    Live,
    Reconnecting,
    /// Gemini failed; the fallback message is playing, then the call is transferred or
    /// hung up.
    FallingBack,
    Ended,
}

/// One call's bridge logic.
pub struct CallMachine {
    mode: Mode,
    phase: Phase,
    out: Outbox,
    timers: Timers,
    caller: CallerAudio,
    playout: Playout,
    session: Session,
    transcript: Transcript,
    keypad: Keypad,
    idle: Idle,
    timeline: Timeline,
    /// Who speaks first, and the wait for the callee's first words.
    greeting: Greeting,
    /// The message left on an answering machine.
    voicemail: Voicemail,
    /// Ids of blocking tool calls not yet answered; caller audio is held meanwhile.
    blocking_tools: Vec<String>,
    /// Whether the phone sent anything since the last silence check (cheaper than reading
    /// the clock on every frame).
    phone_heard: bool,
    /// μ-law played to the caller when Gemini fails, instead of dead air.
    fallback: Option<Arc<[u8]>>,
    bad_messages: u32,
}

impl CallMachine {
    /// A machine for a stream that has just opened at `now`.
    pub fn new(mode: Mode, stream: Box<dyn MediaStream>, now: Instant) -> Self {
        let mut timers = Timers::default();
        timers.set(Timer::Start, now + START_TIMEOUT);
        timers.set(Timer::PhoneSilence, now + PHONE_SILENCE_TIMEOUT);
        timers.set(Timer::InputWindow, now + INPUT_WINDOW);
        Self {
            mode,
            phase: Phase::AwaitingStart,
            out: Outbox::new(stream),
            timers,
            caller: CallerAudio::default(),
            playout: Playout::default(),
            session: Session::default(),
            transcript: Transcript::default(),
            keypad: Keypad::default(),
            idle: Idle::default(),
            timeline: Timeline::default(),
            greeting: Greeting::default(),
            voicemail: Voicemail::default(),
            blocking_tools: Vec::new(),
            phone_heard: false,
            fallback: None,
            bad_messages: 0,
        }
    }

    /// Ends the call at `deadline` whatever is happening then.
    pub fn set_call_deadline(&mut self, deadline: Instant) {
        self.timers.set(Timer::CallLimit, deadline);
    }

    /// Plays `mulaw` (8 kHz) to the caller when Gemini fails, then asks for a transfer or
    /// hang-up ([`AfterPlayout::Fallback`]); without one the call simply ends.
    pub fn set_fallback_clip(&mut self, mulaw: Arc<[u8]>) {
        self.fallback = Some(mulaw);
    }

    /// Lets `tap` hear the call's audio from now on (call recording).
    pub fn set_audio_tap(&mut self, tap: Box<dyn AudioTap>) {
        self.out.tap = Some(tap);
    }

    /// Sends agent audio to the provider at most `lead` ahead of real time (`None`: as
    /// soon as the model produces it).
    pub fn set_playout_lead(&mut self, lead: Option<Duration>) {
        self.playout.set_lead(lead);
    }

    /// How long the model may stay silent when it owes the caller an answer.
    pub fn set_stall_timeout(&mut self, timeout: Duration) {
        self.session.stall_timeout = timeout;
    }

    /// The next queued command, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// True once the call has ended; nothing more will be queued.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// True while the model is producing a turn that has not finished or been cut off.
    pub fn agent_speaking(&self) -> bool {
        self.playout.speaking()
    }

    /// Live sessions resumed so far, by cause.
    pub fn resumptions(&self) -> Resumptions {
        self.session.resumptions
    }

    /// True once any agent audio has been queued for the phone in this call (the fallback
    /// message and echoed audio are not the agent's).
    pub fn agent_has_spoken(&self) -> bool {
        self.playout.has_spoken()
    }

    /// Caller frames dropped so far for being oversized or over the real-time budget.
    pub fn dropped_caller_frames(&self) -> u64 {
        self.caller.guard.dropped_frames
    }

    /// The call's timeline, for what the task alone sees (Gemini's handshake, tool calls)
    /// and for handing over when the call ends.
    pub fn timeline_mut(&mut self) -> &mut Timeline {
        &mut self.timeline
    }

    /// A text frame from the phone, received at `now`.
    pub fn handle_phone_text(&mut self, text: &str, now: Instant) {
        if self.is_ended() {
            return;
        }
        self.phone_heard = true;
        let route = self.caller_route();
        let event = match self.out.stream.parse(text) {
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
                if let Some(tap) = &mut self.out.tap {
                    tap.caller_audio(mulaw);
                }
                // One level check serves every sub-machine that listens for the caller.
                let sound = idle::is_sound(mulaw);
                self.idle.caller_frame(sound);
                let over_the_agent = self.playout.audible(now);
                self.timeline.caller_audio(mulaw, now, over_the_agent);
                let greet = self.greeting.caller_frame(sound);
                let machine_done = self.voicemail.caller_frame(sound);
                if let Some(message) = self.caller.accept(mulaw, route) {
                    self.out.gemini(message);
                } else if route == Route::Echo {
                    self.play_echo();
                }
                self.after_turns_frame(greet, machine_done, now);
                self.playout
                    .caller_frame(now, &mut self.timers, &mut self.out);
            }
            PhoneEvent::Started(start) => self.on_started(start, now),
            PhoneEvent::Dtmf(digit) => {
                self.timeline.dtmf(&digit, now);
                self.on_keypress(&digit, now);
            }
            PhoneEvent::MarkPlayed(name) => {
                tracing::debug!(%name, "playback reached mark");
                let action = self
                    .playout
                    .mark_played(&name, now, &mut self.timers, &mut self.out);
                if let Some(action) = action {
                    self.out.push(Output::PlayedOut(action));
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

    /// The phone socket ended or failed (a failed or timed-out write included).
    pub fn handle_phone_closed(&mut self, error: Option<String>) {
        self.end(match error {
            Some(e) => EndReason::PhoneError(e),
            None => EndReason::CallerHungUp,
        });
    }

    /// The task has checked the stream and chosen the session's setup (Gemini mode).
    pub fn handle_session_setup(&mut self, setup: SessionSetup) {
        if self.phase != Phase::AwaitingSetup {
            return;
        }
        self.session.setup = Some(setup);
        self.phase = Phase::Connecting;
        self.connect();
    }

    /// A tool call finished at `now`: its response goes to the model (with `scheduling`, e.g.
    /// `SILENT`, for non-blocking models), and audio held for blocking calls flows again once
    /// none is pending.
    pub fn handle_tool_result(
        &mut self,
        id: &str,
        name: &str,
        response: &Value,
        scheduling: Option<&str>,
        now: Instant,
    ) {
        if self.phase == Phase::Live {
            self.out.gemini(protocol::tool_response_message(
                id, name, response, scheduling,
            ));
            if scheduling != Some("SILENT") {
                // The model owes the caller what it learned.
                self.arm_stall(now);
            }
        }
        self.unblock_tool(id);
    }

    /// Carries out `action` once what the agent is saying has played to the caller.
    pub fn handle_after_playout(&mut self, action: AfterPlayout, now: Instant) {
        if matches!(self.phase, Phase::Ended | Phase::FallingBack) {
            return;
        }
        self.playout.after(
            action,
            now + PLAYOUT_TIMEOUT,
            now,
            &mut self.timers,
            &mut self.out,
        );
    }

    /// The server is shutting down at `now`: the caller hears the fallback message as a
    /// goodbye (and is transferred, if a number is set), or the call ends at once; either
    /// way its record says `server shutdown`.
    pub fn handle_shutdown(&mut self, now: Instant) {
        if matches!(self.phase, Phase::AwaitingStart | Phase::AwaitingSetup) {
            return self.end(EndReason::ServerShutdown);
        }
        self.fall_back(EndReason::ServerShutdown, now, SHUTDOWN_PLAYOUT_MARGIN);
    }

    /// Ends the call for `reason` (the task's verdict: a refused stream, a hang-up or
    /// transfer carried out).
    pub fn finish(&mut self, reason: EndReason) {
        self.end(reason);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while !self.is_ended()
            && let Some(timer) = self.timers.pop_due(now)
        {
            self.on_timer(timer, now);
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Start => {
                if self.phase == Phase::AwaitingStart {
                    self.end(EndReason::NoStart);
                }
            }
            Timer::CallLimit => self.end(EndReason::MaxDuration),
            Timer::PhoneSilence => {
                if !std::mem::take(&mut self.phone_heard) {
                    self.end(EndReason::PhoneSilent);
                } else {
                    self.timers
                        .set(Timer::PhoneSilence, now + PHONE_SILENCE_TIMEOUT);
                }
            }
            Timer::InputWindow => {
                if self.caller.guard.close_window() == WindowVerdict::Flood {
                    tracing::warn!(
                        dropped_frames = self.caller.guard.dropped_frames,
                        "the phone stream keeps sending audio far faster than real time"
                    );
                    self.end(EndReason::AudioFlood);
                } else {
                    self.timers.set(Timer::InputWindow, now + INPUT_WINDOW);
                }
            }
            Timer::GoAway => {
                if self.session.resume_wanted {
                    self.resume(ResumeCause::GoAway, now);
                }
            }
            Timer::ResumeRetry => {
                if self.phase == Phase::Reconnecting {
                    self.connect();
                }
            }
            Timer::Stall => self.on_stall(now),
            Timer::Keypad => self.on_keypad_pause(now),
            Timer::Idle => self.on_idle_check(now),
            Timer::Greeting => self.on_greeting_timer(now),
            Timer::Voicemail => self.on_voicemail_timer(now),
            Timer::Pace => self.playout.pace(now, &mut self.timers, &mut self.out),
            Timer::Playout => {
                tracing::warn!("no playback acknowledgement in time; going ahead");
                if let Some(action) = self.playout.timed_out(&mut self.timers) {
                    self.out.push(Output::PlayedOut(action));
                }
            }
        }
    }

    fn on_started(&mut self, start: StreamStart, now: Instant) {
        if self.phase != Phase::AwaitingStart {
            return;
        }
        self.timeline.stream_started(now);
        self.timers.clear(Timer::Start);
        self.greeting.note_stream_params(&start.params);
        self.phase = match self.mode {
            Mode::Echo => Phase::Live,
            Mode::Gemini => Phase::AwaitingSetup,
        };
        self.out.push(Output::Started(start));
    }

    fn caller_route(&self) -> Route {
        if self.mode == Mode::Gemini && self.turns_hold_caller_audio() {
            // Before the greeting, and while a machine is on the line: the model must not
            // answer what it hears.
            return Route::Drop;
        }
        match (self.mode, self.phase) {
            (Mode::Echo, Phase::Live) => Route::Echo,
            (Mode::Gemini, Phase::Live) if self.blocking_tools.is_empty() => Route::Send,
            // Held while a session opens, and while a blocking tool call is pending
            // (models that block on tools close the session with 1008 otherwise).
            (
                Mode::Gemini,
                Phase::Live | Phase::Connecting | Phase::Reconnecting | Phase::AwaitingSetup,
            ) => Route::Hold,
            _ => Route::Drop,
        }
    }

    fn play_echo(&mut self) {
        let whole = self.caller.echo_frames_len();
        for frame in self.caller.echo[..whole].chunks_exact(PHONE_FRAME_BYTES) {
            self.out.phone(PhoneCommand::Play(frame));
        }
        self.caller.echo.drain(..whole);
    }

    fn release_held_audio(&mut self) {
        for message in self.caller.release_held() {
            self.out.gemini(message);
        }
        self.release_keypad_groups();
    }

    fn unblock_tool(&mut self, id: &str) {
        let before = self.blocking_tools.len();
        self.blocking_tools.retain(|pending| pending != id);
        if before > 0 && self.blocking_tools.is_empty() && self.phase == Phase::Live {
            self.release_held_audio();
        }
    }

    fn end(&mut self, reason: EndReason) {
        if self.phase == Phase::Ended {
            return;
        }
        self.transcript.flush_both(&mut self.out);
        self.phase = Phase::Ended;
        self.timers.clear_all();
        self.playout.clear();
        self.caller.clear();
        self.out.push(Output::End(reason));
    }

    fn note_bad_message(&mut self) -> u32 {
        self.bad_messages = self.bad_messages.saturating_add(1);
        self.bad_messages
    }
}
