//! The machine's conversation hooks: keypad digits to the model as text, and the silent-line
//! nudge and goodbye. The logic lives in [`super::keypad`] and [`super::idle`]; this is
//! where their results meet the session, the transcript and the playout.

use std::time::Instant;

use super::idle::{self, IdleAction};
use super::keypad;
use super::{AfterPlayout, CallMachine, Idle, Keypad, Mode, Output, Phase, Route, Speaker};
use crate::config::{DtmfMode, IdleLimits};

impl CallMachine {
    /// Where keypad digits go, and the silent-line limits (`None`: a silent line is left
    /// alone). A new machine passes digits to the model and leaves silence alone.
    pub fn set_conversation(&mut self, dtmf: DtmfMode, idle: Option<IdleLimits>) {
        self.keypad = Keypad::new(dtmf);
        self.idle = Idle::new(idle);
    }

    /// The provider reported a keypress.
    pub(super) fn on_keypress(&mut self, digit: &str, now: Instant) {
        if self.mode != Mode::Gemini {
            return tracing::info!(%digit, "caller pressed a key");
        }
        self.idle.caller_active();
        if let Some(group) = self.keypad.press(digit, now, &mut self.timers) {
            self.send_keypad_group(group, now);
        }
    }

    /// The caller paused after their last key.
    pub(super) fn on_keypad_pause(&mut self, now: Instant) {
        if let Some(group) = self.keypad.pause_elapsed() {
            self.send_keypad_group(group, now);
        }
    }

    /// A finished group becomes a caller line, and text for the model as soon as it can
    /// take it.
    fn send_keypad_group(&mut self, group: String, now: Instant) {
        tracing::info!(keys = %group, "caller pressed keys");
        // Words the caller said before pressing come first in the transcript.
        self.transcript.flush(Speaker::Caller, &mut self.out);
        self.out.push(Output::Transcript {
            speaker: Speaker::Caller,
            text: keypad::transcript_line(&group),
            interrupted: false,
        });
        if self.caller_route() == Route::Send {
            self.send_text_turn(&keypad::model_text(&group), now);
        } else {
            self.keypad.keep_unsent(group);
        }
    }

    /// Sends the groups kept while the model could not take text.
    pub(super) fn release_keypad_groups(&mut self) {
        let now = Instant::now();
        for group in self.keypad.take_unsent() {
            self.send_text_turn(&keypad::model_text(&group), now);
        }
    }

    /// The periodic silent-line check.
    pub(super) fn on_idle_check(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Live | Phase::Reconnecting) {
            return;
        }
        let agent_busy = self.playout.speaking() || !self.blocking_tools.is_empty();
        let can_act = self.caller_route() == Route::Send;
        let Some(limits) = self.idle.limits() else {
            return;
        };
        let audible_until = self.playout.audible_until(now);
        let checked = self
            .idle
            .check(now, agent_busy, audible_until, can_act, &mut self.timers);
        match checked {
            None => {}
            Some(IdleAction::Nudge) => {
                tracing::info!(
                    seconds = limits.nudge_after.as_secs(),
                    "the line is silent; asking the model to check on the caller"
                );
                self.send_text_turn(&idle::nudge_text(limits), now);
            }
            Some(IdleAction::Goodbye) => {
                tracing::info!(
                    seconds = limits.hang_up_after.as_secs(),
                    "the line stayed silent; asking the model for a goodbye"
                );
                self.send_text_turn(&idle::goodbye_text(limits), now);
            }
            Some(IdleAction::HangUp) => {
                tracing::warn!("no goodbye from the model; hanging up the silent line");
                self.handle_after_playout(AfterPlayout::IdleHangUp, now);
            }
        }
    }

    /// Plays keypad tones (μ-law, from [`crate::audio::dtmf::tones`]) to the other party,
    /// after what the agent has said so far and cleared with it on a barge-in.
    pub fn handle_send_dtmf(&mut self, tones: &[u8], now: Instant) {
        if self.phase != Phase::Live {
            return;
        }
        // Tones are sound on the line: the silence watch sees them through the playout.
        self.playout
            .queue_mulaw(tones, now, &mut self.timers, &mut self.out);
    }

    /// A typed turn the model answers now, through its family's text path.
    pub(super) fn send_text_turn(&mut self, text: &str, now: Instant) {
        let Some(message) = self.session.setup.as_ref().map(|s| s.text_turn(text)) else {
            return;
        };
        self.out.gemini(message);
        // The model owes an answer.
        self.arm_stall(now);
    }
}
