//! Who speaks first (`GREETING`).
//!
//! `agent_first`: the model is asked to greet as soon as its session is ready, which is what
//! someone who dialled us expects. `callee_first`: the model is asked only once the callee
//! has spoken (at least [`SPEECH_FRAMES`] loud frames, then a [`PAUSE_FRAMES`] pause) or has
//! stayed silent for `GREETING_SILENCE_MS` after the session was ready. Until then the
//! callee's audio is not sent to the model either, so it cannot answer by itself.
//!
//! Why wait on calls we place: the callee's "Hello?" is not talked over, and on Plivo, whose
//! machine detection runs while the call is already connected, an answering machine does
//! not record the start of the agent's greeting while detection decides.
//!
//! On Twilio, whose detection is synchronous, an answer webhook saying `human` comes only
//! after the detector heard the callee speak and pause; the webhook passes that on as a
//! stream parameter and the agent greets at once rather than waiting for a second hello.
//!
//! The speech check is the same cheap energy check the silent-line watch uses
//! ([`super::idle::is_sound`]); it counts 20 ms frames rather than reading the clock, so the
//! per-frame cost is one pass over 160 bytes.

use std::time::{Duration, Instant};

use super::timers::{Timer, Timers};
use super::{CallMachine, Phase};
use crate::config::GreetingPolicy;
use crate::telephony::{ANSWERED_BY_PARAM, StreamParams};

/// Loud frames (20 ms each) that make the callee's first words: 300 ms of speech.
pub const SPEECH_FRAMES: u16 = 15;
/// Quiet frames after them that make the pause the agent answers: 500 ms.
pub const PAUSE_FRAMES: u16 = 25;
/// How long a callee still talking when the silence limit passes is waited for beyond it.
const MAX_EXTRA_WAIT: Duration = Duration::from_secs(5);
/// A greeting due while the session is being reopened is tried again this often.
const RETRY_WHILE_RECONNECTING: Duration = Duration::from_millis(200);

/// What the model is told when the callee has spoken first.
const CUE_AFTER_CALLEE: &str = "[The call is connected and the other person has just answered with a few words. Greet them now, briefly.]";
/// What the model is told when the callee has said nothing.
const CUE_AFTER_SILENCE: &str = "[The call is connected but the other person has not said anything yet. Greet them now, briefly.]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The session is not ready yet.
    Pending,
    /// The session is ready and the callee is being listened to; `extended` once the
    /// silence limit passed while they were talking.
    Waiting { extended: bool },
    /// The greeting cue was sent, or will never be (a machine answered).
    Done,
}

/// The first-words wait of one call.
#[derive(Debug)]
pub struct Greeting {
    policy: GreetingPolicy,
    silence_limit: Duration,
    stage: Stage,
    /// Loud caller frames so far (saturating).
    speech_frames: u16,
    /// Quiet caller frames since the last loud one (saturating).
    quiet_run: u16,
    /// The provider's synchronous machine detection heard a person (speak, then pause)
    /// before the stream was connected.
    heard_by_detection: bool,
}

impl Default for Greeting {
    fn default() -> Self {
        Self::new(GreetingPolicy::AgentFirst, Duration::from_secs(3))
    }
}

/// What the greeting wait decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreetNow {
    /// The callee spoke and paused (or the agent speaks first).
    AfterCallee,
    /// The callee stayed silent.
    AfterSilence,
}

impl Greeting {
    /// A wait by `policy`; a callee silent for `silence_limit` is greeted anyway.
    pub fn new(policy: GreetingPolicy, silence_limit: Duration) -> Self {
        Self {
            policy,
            silence_limit,
            stage: Stage::Pending,
            speech_frames: 0,
            quiet_run: 0,
            heard_by_detection: false,
        }
    }

    /// Reads the stream's `start` parameters for detection's `human` verdict.
    pub fn note_stream_params(&mut self, params: &StreamParams) {
        self.heard_by_detection = params.get(ANSWERED_BY_PARAM).is_some_and(|v| v == "human");
    }

    /// True while the callee's audio must not reach the model (it would answer it).
    pub fn holds_caller_audio(&self) -> bool {
        self.policy == GreetingPolicy::CalleeFirst && self.stage != Stage::Done
    }

    /// One caller frame (`sound`: whether it is louder than a quiet line); `Some` when the
    /// callee has now spoken and paused while the session is ready.
    pub fn caller_frame(&mut self, sound: bool) -> Option<GreetNow> {
        if !self.holds_caller_audio() {
            return None;
        }
        if sound {
            self.speech_frames = self.speech_frames.saturating_add(1);
            self.quiet_run = 0;
        } else {
            self.quiet_run = self.quiet_run.saturating_add(1);
        }
        (matches!(self.stage, Stage::Waiting { .. }) && self.callee_spoke())
            .then_some(GreetNow::AfterCallee)
    }

    /// The session is ready at `now`: `Some` to greet at once, else the wait is timed.
    pub fn session_ready(&mut self, now: Instant, timers: &mut Timers) -> Option<GreetNow> {
        if self.stage != Stage::Pending {
            return None;
        }
        if self.policy == GreetingPolicy::AgentFirst
            || self.heard_by_detection
            || self.callee_spoke()
        {
            return Some(GreetNow::AfterCallee);
        }
        self.stage = Stage::Waiting { extended: false };
        timers.set(Timer::Greeting, now + self.silence_limit);
        None
    }

    /// The wait's timer fired at `now`: `Some` to greet now. A callee in mid-sentence is
    /// given up to [`MAX_EXTRA_WAIT`] more to finish.
    pub fn timer_fired(&mut self, now: Instant, timers: &mut Timers) -> Option<GreetNow> {
        match self.stage {
            Stage::Waiting { extended: false } if self.callee_talking() => {
                self.stage = Stage::Waiting { extended: true };
                timers.set(Timer::Greeting, now + MAX_EXTRA_WAIT);
                None
            }
            Stage::Waiting { .. } if self.speech_frames >= SPEECH_FRAMES => {
                Some(GreetNow::AfterCallee)
            }
            Stage::Waiting { .. } => Some(GreetNow::AfterSilence),
            Stage::Pending | Stage::Done => None,
        }
    }

    /// The wait is over: greeted, or never to greet.
    pub fn finish(&mut self, timers: &mut Timers) {
        self.stage = Stage::Done;
        timers.clear(Timer::Greeting);
    }

    fn callee_spoke(&self) -> bool {
        self.speech_frames >= SPEECH_FRAMES && self.quiet_run >= PAUSE_FRAMES
    }

    fn callee_talking(&self) -> bool {
        self.speech_frames > 0 && self.quiet_run < PAUSE_FRAMES
    }
}

impl CallMachine {
    /// Who speaks first on this call (a new machine: the agent) and how long a silent
    /// callee is waited for. Audio held for the session until now is dropped when the
    /// callee speaks first: the model must not answer it before the greeting.
    pub fn set_greeting(&mut self, policy: GreetingPolicy, silence_limit: Duration) {
        let heard_by_detection = self.greeting.heard_by_detection;
        self.greeting = Greeting::new(policy, silence_limit);
        self.greeting.heard_by_detection = heard_by_detection;
        if self.greeting.holds_caller_audio() {
            self.caller.clear();
        }
    }

    /// The session is ready for the first time: the agent greets now, or once the callee
    /// has spoken; a machine gets its message instead.
    pub(super) fn begin_conversation(&mut self, now: Instant) {
        if self.voicemail.is_active() {
            self.greeting.finish(&mut self.timers);
            return self.leave_message_when_due(now);
        }
        if let Some(when) = self.greeting.session_ready(now, &mut self.timers) {
            self.greet(when, now);
        }
    }

    /// Acts on what one caller frame decided: the callee's first words are over (`greet`),
    /// or a machine's greeting is (`machine_done`).
    pub(super) fn after_turns_frame(
        &mut self,
        greet: Option<GreetNow>,
        machine_done: bool,
        now: Instant,
    ) {
        if let Some(when) = greet {
            self.greet(when, now);
        }
        if machine_done {
            self.leave_message_when_due(now);
        }
    }

    /// The greeting wait's timer.
    pub(super) fn on_greeting_timer(&mut self, now: Instant) {
        if let Some(when) = self.greeting.timer_fired(now, &mut self.timers) {
            self.greet(when, now);
        }
    }

    /// True while the callee's audio is kept from the model (before the greeting, and
    /// while a machine is on the line).
    pub(super) fn turns_hold_caller_audio(&self) -> bool {
        self.greeting.holds_caller_audio() || self.voicemail.is_active()
    }

    fn greet(&mut self, when: GreetNow, now: Instant) {
        match self.phase {
            Phase::Live => {}
            Phase::Connecting | Phase::Reconnecting => {
                // The cue needs a live session; the wait's timer tries again shortly.
                self.timers
                    .set(Timer::Greeting, now + RETRY_WHILE_RECONNECTING);
                return;
            }
            _ => return self.greeting.finish(&mut self.timers),
        }
        let callee_first = self.greeting.holds_caller_audio();
        self.greeting.finish(&mut self.timers);
        let Some(setup) = &self.session.setup else {
            return;
        };
        let cue = match (callee_first, when) {
            (false, _) => setup.greeting_message(),
            (true, GreetNow::AfterCallee) => setup.text_turn(CUE_AFTER_CALLEE),
            (true, GreetNow::AfterSilence) => setup.text_turn(CUE_AFTER_SILENCE),
        };
        tracing::debug!(?when, callee_first, "asking the model to greet");
        self.out.gemini(cue);
        // The model owes the caller a greeting.
        self.arm_stall(now);
        // Keys pressed while the callee's audio was held go to the model now.
        self.release_keypad_groups();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::machine::idle::is_sound;

    fn speech() -> Vec<u8> {
        (0..160)
            .map(|i| if i % 2 == 0 { 0x90 } else { 0x10 })
            .collect()
    }

    fn quiet() -> Vec<u8> {
        vec![0xFF; 160]
    }

    fn frames(greeting: &mut Greeting, frame: &[u8], n: u16) -> Option<GreetNow> {
        (0..n)
            .filter_map(|_| greeting.caller_frame(is_sound(frame)))
            .last()
    }

    #[test]
    fn agent_first_greets_as_soon_as_the_session_is_ready() {
        let mut timers = Timers::default();
        let mut greeting = Greeting::new(GreetingPolicy::AgentFirst, Duration::from_secs(3));
        assert!(!greeting.holds_caller_audio());
        assert_eq!(
            greeting.session_ready(Instant::now(), &mut timers),
            Some(GreetNow::AfterCallee)
        );
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn callee_first_waits_for_speech_then_a_pause() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut greeting = Greeting::new(GreetingPolicy::CalleeFirst, Duration::from_secs(3));
        assert_eq!(greeting.session_ready(start, &mut timers), None);
        assert_eq!(
            timers.get(Timer::Greeting),
            Some(start + Duration::from_secs(3))
        );
        assert_eq!(frames(&mut greeting, &speech(), SPEECH_FRAMES), None);
        assert_eq!(
            frames(&mut greeting, &quiet(), PAUSE_FRAMES - 1),
            None,
            "a pause shorter than 500 ms is not the end of the hello"
        );
        assert_eq!(
            greeting.caller_frame(is_sound(&quiet())),
            Some(GreetNow::AfterCallee)
        );
    }

    #[test]
    fn too_little_speech_is_not_a_hello() {
        let mut timers = Timers::default();
        let mut greeting = Greeting::new(GreetingPolicy::CalleeFirst, Duration::from_secs(3));
        greeting.session_ready(Instant::now(), &mut timers);
        assert_eq!(frames(&mut greeting, &speech(), SPEECH_FRAMES - 1), None);
        assert_eq!(frames(&mut greeting, &quiet(), 200), None);
    }

    #[test]
    fn a_hello_said_before_the_session_was_ready_is_answered_at_once() {
        let mut timers = Timers::default();
        let mut greeting = Greeting::new(GreetingPolicy::CalleeFirst, Duration::from_secs(3));
        frames(&mut greeting, &speech(), 20);
        frames(&mut greeting, &quiet(), 30);
        assert_eq!(
            greeting.session_ready(Instant::now(), &mut timers),
            Some(GreetNow::AfterCallee)
        );
    }

    #[test]
    fn silence_is_greeted_at_the_limit_and_a_talker_gets_a_little_longer() {
        let start = Instant::now();
        let limit = Duration::from_secs(3);
        let mut timers = Timers::default();
        let mut greeting = Greeting::new(GreetingPolicy::CalleeFirst, limit);
        greeting.session_ready(start, &mut timers);
        assert_eq!(
            greeting.timer_fired(start + limit, &mut timers),
            Some(GreetNow::AfterSilence)
        );

        let mut greeting = Greeting::new(GreetingPolicy::CalleeFirst, limit);
        greeting.session_ready(start, &mut timers);
        frames(&mut greeting, &speech(), 5);
        assert_eq!(greeting.timer_fired(start + limit, &mut timers), None);
        assert_eq!(
            timers.get(Timer::Greeting),
            Some(start + limit + MAX_EXTRA_WAIT)
        );
        frames(&mut greeting, &speech(), 400);
        assert_eq!(
            greeting.timer_fired(start + limit + MAX_EXTRA_WAIT, &mut timers),
            Some(GreetNow::AfterCallee),
            "a callee who never pauses is greeted in the end"
        );
    }
}
