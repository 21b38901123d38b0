//! Leaving a message on an answering machine (`ON_MACHINE=message`).
//!
//! The task reports the machine with [`CallMachine::handle_machine_answered`]: at once when
//! the provider detected it before the stream started (Twilio's `DetectMessageEnd` answers
//! after the beep), or when a detection callback arrives mid-call (Plivo). From then on the
//! machine's audio is kept from the model (it must not answer the greeting) and anything
//! the model was saying is cleared. Once the machine's greeting is over — said by the
//! provider, or [`GREETING_END_QUIET_FRAMES`] of quiet on the line after the beep, or
//! [`MAX_GREETING_WAIT`] at the latest — the model is asked, as text, to speak the rendered
//! message; when that turn is complete the call is hung up after playout.

use std::time::{Duration, Instant};

use super::idle::Idle;
use super::playout::TurnHeard;
use super::timers::{Timer, Timers};
use super::{AfterPlayout, CallMachine, Phase};

/// Quiet frames (20 ms) that end a machine's greeting: 1.2 s, longer than the pauses
/// between a greeting's sentences, and what follows the beep while the machine records.
const GREETING_END_QUIET_FRAMES: u16 = 60;
/// Longest wait for a machine's greeting to end before the message is left regardless.
const MAX_GREETING_WAIT: Duration = Duration::from_secs(20);
/// A message due while the session is being (re)opened, or while the model finishes a turn
/// meant for a person, is tried again after this. A turn that has not ended by then is
/// not waited for any longer (its tail may precede the message).
const RETRY_WHEN_BLOCKED: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No machine on the line.
    Off,
    /// The machine's greeting is playing.
    AwaitingGreetingEnd,
    /// The greeting is over: the message goes as soon as the model can take it.
    Due,
    /// The model was asked for the message; `spoke` once its audio arrived.
    Leaving { spoke: bool },
    /// The message has been spoken; the hang-up is under way.
    Left,
}

/// The voicemail of one call.
#[derive(Debug)]
pub struct Voicemail {
    stage: Stage,
    message: String,
    /// Quiet caller frames since the last loud one.
    quiet_run: u16,
    /// The model is in the middle of a turn whose audio is being dropped.
    muted_turn_open: bool,
}

impl Default for Voicemail {
    fn default() -> Self {
        Self {
            stage: Stage::Off,
            message: String::new(),
            quiet_run: 0,
            muted_turn_open: false,
        }
    }
}

impl Voicemail {
    /// True once a machine has answered.
    pub fn is_active(&self) -> bool {
        self.stage != Stage::Off
    }

    /// A machine answered; `greeting_over` when the provider waited for its beep. False
    /// when one was already reported.
    fn machine_answered(
        &mut self,
        message: String,
        greeting_over: bool,
        now: Instant,
        timers: &mut Timers,
    ) -> bool {
        if self.stage != Stage::Off {
            return false;
        }
        self.message = message;
        self.stage = if greeting_over {
            Stage::Due
        } else {
            timers.set(Timer::Voicemail, now + MAX_GREETING_WAIT);
            Stage::AwaitingGreetingEnd
        };
        true
    }

    /// One caller frame (`sound`: whether it is louder than a quiet line); true when it
    /// ends the machine's greeting.
    pub fn caller_frame(&mut self, sound: bool) -> bool {
        if self.stage != Stage::AwaitingGreetingEnd {
            return false;
        }
        if sound {
            self.quiet_run = 0;
            return false;
        }
        self.quiet_run = self.quiet_run.saturating_add(1);
        if self.quiet_run < GREETING_END_QUIET_FRAMES {
            return false;
        }
        self.stage = Stage::Due;
        true
    }

    /// The voicemail timer fired: the longest wait for the greeting's end is over, or a
    /// due message was blocked for [`RETRY_WHEN_BLOCKED`]. True when the message is due.
    fn timer_fired(&mut self) -> bool {
        match self.stage {
            Stage::AwaitingGreetingEnd => self.stage = Stage::Due,
            Stage::Due => self.muted_turn_open = false,
            _ => return false,
        }
        true
    }

    /// True when the message should go as soon as it can.
    fn is_due(&self) -> bool {
        self.stage == Stage::Due
    }

    /// Model audio arrived: true when it must be dropped (it was meant for a person, or
    /// it is the end of a turn begun before the machine was known).
    pub fn drops_agent_audio(&mut self) -> bool {
        match self.stage {
            Stage::AwaitingGreetingEnd | Stage::Due => {
                self.muted_turn_open = true;
                true
            }
            Stage::Leaving { .. } => {
                self.stage = Stage::Leaving { spoke: true };
                false
            }
            Stage::Off | Stage::Left => false,
        }
    }

    /// The model's turn ended (complete or interrupted).
    fn model_turn_ended(&mut self) {
        self.muted_turn_open = false;
    }

    /// The message, when it is due and the model is not mid-turn; the stage moves on.
    fn take_due_message(&mut self, timers: &mut Timers) -> Option<String> {
        if self.stage != Stage::Due || self.muted_turn_open {
            return None;
        }
        timers.clear(Timer::Voicemail);
        self.stage = Stage::Leaving { spoke: false };
        Some(std::mem::take(&mut self.message))
    }

    /// A model turn completed: true when it was the message.
    fn message_spoken(&mut self) -> bool {
        if self.stage == (Stage::Leaving { spoke: true }) {
            self.stage = Stage::Left;
            return true;
        }
        false
    }
}

/// What the model is asked to say to the machine.
fn message_request(message: &str) -> String {
    format!(
        "[An answering machine picked up and is recording now. Do not greet or ask anything: say exactly the following message once, in your own voice, then stop.]\n{message}"
    )
}

impl CallMachine {
    /// An answering machine answered this call: leave `message` (already rendered) once
    /// its greeting is over (`greeting_over`: the provider waited for the beep), then hang
    /// up. A second report is ignored.
    pub fn handle_machine_answered(&mut self, message: String, greeting_over: bool, now: Instant) {
        if self.is_ended()
            || !self
                .voicemail
                .machine_answered(message, greeting_over, now, &mut self.timers)
        {
            return;
        }
        tracing::info!(
            greeting_over,
            "an answering machine answered; leaving a message after its greeting"
        );
        // No greeting, no nudges: nobody is there to answer them.
        self.greeting.finish(&mut self.timers);
        self.idle = Idle::new(None);
        self.timers.clear(Timer::Idle);
        if self.playout.audible(now) {
            let heard = self.playout.heard_of_turn(now).map(TurnHeard::share);
            self.playout.interrupt(now, &mut self.timers, &mut self.out);
            self.transcript.flush_interrupted(heard, &mut self.out);
        }
        self.leave_message_when_due(now);
    }

    /// Asks the model for the message once it is due, the session is live and the model
    /// is not finishing a turn meant for a person.
    pub(super) fn leave_message_when_due(&mut self, now: Instant) {
        if !self.voicemail.is_due() {
            return;
        }
        let message = if self.phase == Phase::Live && self.session.greeted {
            self.voicemail.take_due_message(&mut self.timers)
        } else {
            None
        };
        if message.is_none() && self.timers.get(Timer::Voicemail).is_none() {
            self.timers.set(Timer::Voicemail, now + RETRY_WHEN_BLOCKED);
        }
        if let Some(message) = message {
            tracing::info!("the machine's greeting is over; leaving the message");
            self.send_text_turn(&message_request(&message), now);
        }
    }

    /// The longest wait for the machine's greeting is over, or a due message was blocked.
    pub(super) fn on_voicemail_timer(&mut self, now: Instant) {
        if self.voicemail.timer_fired() {
            self.leave_message_when_due(now);
        }
    }

    /// The model's turn ended (`complete`: normally): the message may go now, or, when
    /// this turn was the message, the call is hung up after it has played.
    pub(super) fn voicemail_turn_ended(&mut self, complete: bool, now: Instant) {
        if !self.voicemail.is_active() {
            return;
        }
        self.voicemail.model_turn_ended();
        if complete && self.voicemail.message_spoken() {
            self.handle_after_playout(AfterPlayout::VoicemailHangUp, now);
        } else {
            self.leave_message_when_due(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::machine::idle::is_sound;

    #[test]
    fn a_machine_greeting_ends_after_a_long_quiet_not_a_short_pause() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let mut voicemail = Voicemail::default();
        assert!(voicemail.machine_answered("hi".into(), false, now, &mut timers));
        assert_eq!(timers.get(Timer::Voicemail), Some(now + MAX_GREETING_WAIT));
        let loud: Vec<u8> = (0..160)
            .map(|i| if i % 2 == 0 { 0x90 } else { 0x10 })
            .collect();
        let quiet = [0xFF; 160];
        assert!(!voicemail.caller_frame(is_sound(&loud)));
        for _ in 0..30 {
            assert!(
                !voicemail.caller_frame(is_sound(&quiet)),
                "a pause between sentences"
            );
        }
        assert!(!voicemail.caller_frame(is_sound(&loud)), "the beep");
        let ended = (0..GREETING_END_QUIET_FRAMES)
            .map(|_| voicemail.caller_frame(is_sound(&quiet)))
            .collect::<Vec<_>>();
        assert_eq!(ended.iter().filter(|e| **e).count(), 1);
        assert_eq!(ended.last(), Some(&true));
        assert_eq!(
            voicemail.take_due_message(&mut timers).as_deref(),
            Some("hi")
        );
        assert_eq!(timers.get(Timer::Voicemail), None);
    }

    #[test]
    fn the_message_waits_for_a_muted_turn_to_end_and_is_reported_once_spoken() {
        let mut timers = Timers::default();
        let mut voicemail = Voicemail::default();
        voicemail.machine_answered("msg".into(), true, Instant::now(), &mut timers);
        assert!(
            voicemail.drops_agent_audio(),
            "a greeting meant for a person"
        );
        assert_eq!(voicemail.take_due_message(&mut timers), None);
        voicemail.model_turn_ended();
        assert_eq!(
            voicemail.take_due_message(&mut timers).as_deref(),
            Some("msg")
        );
        assert!(!voicemail.message_spoken(), "no audio yet");
        assert!(!voicemail.drops_agent_audio(), "the message plays");
        assert!(voicemail.message_spoken());
        assert!(
            !voicemail.machine_answered("again".into(), true, Instant::now(), &mut timers),
            "a second report is ignored"
        );
    }
}
