//! A silent line: when neither the caller nor the agent has made a sound for
//! `IDLE_NUDGE_SECONDS`, the model is asked to check whether the caller is still there;
//! after `IDLE_HANGUP_SECONDS` of silence it is asked for a short goodbye, and the call is
//! hung up once that has played.
//!
//! The caller's side is a deliberately tiny energy check on their frames (plus keypresses
//! and Gemini's transcript of their speech): it only has to tell "someone is there" from a
//! dead or muted line. The agent's side is the playout's own account of when its audio will
//! have played, so a long answer still playing to the caller is not taken for silence.

use std::time::{Duration, Instant};

use super::timers::{Timer, Timers};
use crate::audio::codec;
use crate::config::IdleLimits;

/// Mean absolute sample level above which a caller frame counts as sound: about −40 dBFS,
/// well above the noise of a quiet phone line (and μ-law's own silence, 0) and well below
/// speech.
const SOUND_LEVEL: u32 = 330;
/// Loud frames (20 ms each) needed within one check for the caller to count as present,
/// so a click or a burst of line noise does not.
const SOUND_FRAMES: u8 = 3;
/// How long the model has to start its goodbye before the call is hung up regardless.
const GOODBYE_WAIT: Duration = Duration::from_secs(8);
/// The line is checked this often at most (and at least once a second).
const MIN_CHECK: Duration = Duration::from_millis(100);
const MAX_CHECK: Duration = Duration::from_secs(1);

/// What the call should do about the silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Ask the model to check whether the caller is still there.
    Nudge,
    /// Ask the model for a short goodbye.
    Goodbye,
    /// The goodbye never came: hang up now.
    HangUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a silence long enough to nudge.
    Listening,
    /// Nudged; the call ends at `hang_up_at` unless the caller makes a sound.
    Nudged { hang_up_at: Instant },
    /// The goodbye was asked for at `asked_at`; `spoke` once its audio arrived.
    GoodbyeAsked { asked_at: Instant, spoke: bool },
    /// The hang-up is under way.
    Done,
}

/// The silent-line watch of one call.
#[derive(Debug)]
pub struct Idle {
    limits: Option<IdleLimits>,
    stage: Stage,
    /// Since when nobody made a sound (may lie ahead, while the agent's audio plays).
    quiet_since: Option<Instant>,
    /// Loud caller frames since the last check.
    loud_frames: u8,
    /// The caller pressed a key or was transcribed since the last check.
    caller_heard: bool,
}

impl Default for Idle {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Idle {
    /// A watch with `limits`, or none (`None`: a silent line is left alone).
    pub fn new(limits: Option<IdleLimits>) -> Self {
        Self {
            limits,
            stage: Stage::Listening,
            quiet_since: None,
            loud_frames: 0,
            caller_heard: false,
        }
    }

    /// The limits, when the watch is on.
    pub fn limits(&self) -> Option<IdleLimits> {
        self.limits
    }

    /// The session is live at `now`: the watch begins.
    pub fn start(&mut self, now: Instant, timers: &mut Timers) {
        if let Some(limits) = self.limits {
            self.quiet_since = Some(now);
            timers.set(Timer::Idle, now + check_every(limits));
        }
    }

    /// One frame of caller audio; `sound` is [`is_sound`] of it, worked out once per frame
    /// by the machine for every sub-machine that listens.
    pub fn caller_frame(&mut self, sound: bool) {
        if self.limits.is_some() && sound {
            self.loud_frames = self.loud_frames.saturating_add(1);
        }
    }

    /// The caller did something unmistakable (a keypress, transcribed words).
    pub fn caller_active(&mut self) {
        self.caller_heard = true;
    }

    /// The model sent audio (the goodbye, if one was asked for, is being said).
    pub fn agent_spoke(&mut self) {
        if let Stage::GoodbyeAsked { asked_at, .. } = self.stage {
            self.stage = Stage::GoodbyeAsked {
                asked_at,
                spoke: true,
            };
        }
    }

    /// The model finished a turn: true when that was the goodbye, so the call should hang
    /// up once it has played.
    pub fn goodbye_spoken(&mut self) -> bool {
        if matches!(self.stage, Stage::GoodbyeAsked { spoke: true, .. }) {
            self.stage = Stage::Done;
            return true;
        }
        false
    }

    /// The periodic check at `now`. `agent_busy`: the agent is talking or waiting on a
    /// tool; `agent_audible_until`: when the caller will have heard the agent's audio (if
    /// still playing); `can_act`: the model can take text now (it is not, e.g.,
    /// reconnecting).
    pub fn check(
        &mut self,
        now: Instant,
        agent_busy: bool,
        agent_audible_until: Option<Instant>,
        can_act: bool,
        timers: &mut Timers,
    ) -> Option<IdleAction> {
        let limits = self.limits?;
        if self.stage == Stage::Done {
            return None;
        }
        timers.set(Timer::Idle, now + check_every(limits));
        let caller_present =
            std::mem::take(&mut self.caller_heard) || self.loud_frames >= SOUND_FRAMES;
        self.loud_frames = 0;
        let agent_playing = agent_audible_until.is_some_and(|until| until > now);
        match self.stage {
            Stage::GoodbyeAsked { asked_at, spoke } => (!spoke && now >= asked_at + GOODBYE_WAIT)
                .then(|| {
                    self.stage = Stage::Done;
                    IdleAction::HangUp
                }),
            Stage::Nudged { .. } | Stage::Listening if caller_present || !can_act => {
                self.stage = Stage::Listening;
                self.quiet_since = Some(now);
                None
            }
            Stage::Nudged { hang_up_at } => (now >= hang_up_at).then(|| {
                self.stage = Stage::GoodbyeAsked {
                    asked_at: now,
                    spoke: false,
                };
                IdleAction::Goodbye
            }),
            Stage::Listening if agent_busy || agent_playing => {
                let until = agent_audible_until.unwrap_or(now).max(now);
                self.quiet_since = Some(until);
                None
            }
            Stage::Listening => {
                let quiet_since = *self.quiet_since.get_or_insert(now);
                if now.saturating_duration_since(quiet_since) < limits.nudge_after {
                    return None;
                }
                // The hang-up counts from the same start: the nudge's own answer does not
                // buy the silent line more time.
                self.stage = Stage::Nudged {
                    hang_up_at: quiet_since + limits.hang_up_after,
                };
                Some(IdleAction::Nudge)
            }
            Stage::Done => None,
        }
    }
}

/// True when a caller frame (μ-law) is louder than a quiet line: the one cheap energy
/// check shared by the silent-line watch and the wait for the callee's first words.
pub fn is_sound(mulaw: &[u8]) -> bool {
    if mulaw.is_empty() {
        return false;
    }
    let total: u32 = mulaw
        .iter()
        .map(|&b| u32::from(codec::decode(b).unsigned_abs()))
        .sum();
    total / mulaw.len() as u32 > SOUND_LEVEL
}

/// What the model is asked when the line has been silent for `limits.nudge_after`.
pub fn nudge_text(limits: IdleLimits) -> String {
    format!(
        "[Nobody has said anything for {} seconds. Briefly ask whether the caller is still there.]",
        limits.nudge_after.as_secs()
    )
}

/// What the model is asked when the line stayed silent for `limits.hang_up_after`.
pub fn goodbye_text(limits: IdleLimits) -> String {
    format!(
        "[Nobody has said anything for {} seconds. Say a short goodbye now; the call will then end.]",
        limits.hang_up_after.as_secs()
    )
}

/// A tenth of the nudge time, within [`MIN_CHECK`]..=[`MAX_CHECK`]: precise enough for
/// any setting, and at most one wake-up a second per call at the defaults.
fn check_every(limits: IdleLimits) -> Duration {
    (limits.nudge_after / 10).clamp(MIN_CHECK, MAX_CHECK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> IdleLimits {
        IdleLimits {
            nudge_after: Duration::from_secs(10),
            hang_up_after: Duration::from_secs(30),
        }
    }

    /// Runs checks every second from `from` for `seconds`, returning (second, action) pairs.
    fn run(
        idle: &mut Idle,
        timers: &mut Timers,
        from: Instant,
        seconds: u64,
    ) -> Vec<(u64, IdleAction)> {
        (1..=seconds)
            .filter_map(|s| {
                let now = from + Duration::from_secs(s);
                idle.check(now, false, None, true, timers).map(|a| (s, a))
            })
            .collect()
    }

    #[test]
    fn a_silent_line_is_nudged_then_said_goodbye_to_at_the_set_times() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut idle = Idle::new(Some(limits()));
        idle.start(start, &mut timers);
        assert_eq!(
            timers.get(Timer::Idle),
            Some(start + Duration::from_secs(1))
        );
        let actions = run(&mut idle, &mut timers, start, 45);
        assert_eq!(
            actions,
            [
                (10, IdleAction::Nudge),
                (30, IdleAction::Goodbye),
                (38, IdleAction::HangUp)
            ]
        );
    }

    #[test]
    fn the_goodbye_ends_the_watch_once_spoken() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut idle = Idle::new(Some(limits()));
        idle.start(start, &mut timers);
        run(&mut idle, &mut timers, start, 30);
        assert!(!idle.goodbye_spoken(), "no goodbye audio yet");
        idle.agent_spoke();
        assert!(idle.goodbye_spoken());
        assert_eq!(
            run(&mut idle, &mut timers, start + Duration::from_secs(31), 20),
            []
        );
    }

    #[test]
    fn caller_sound_restarts_the_wait_but_line_noise_does_not() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut idle = Idle::new(Some(limits()));
        idle.start(start, &mut timers);
        let hiss: Vec<u8> = (0..160)
            .map(|i| if i % 2 == 0 { 0xF0 } else { 0x70 })
            .collect();
        let speech: Vec<u8> = (0..160)
            .map(|i| if i % 2 == 0 { 0x90 } else { 0x10 })
            .collect();
        for s in 1..=9 {
            for _ in 0..50 {
                idle.caller_frame(is_sound(&hiss));
            }
            assert_eq!(
                idle.check(
                    start + Duration::from_secs(s),
                    false,
                    None,
                    true,
                    &mut timers
                ),
                None
            );
        }
        // Just after 9 s the caller speaks, which the check at 10 s notices: the nudge moves
        // from 10 s to 20 s.
        for _ in 0..SOUND_FRAMES {
            idle.caller_frame(is_sound(&speech));
        }
        let actions = run(&mut idle, &mut timers, start + Duration::from_secs(9), 12);
        assert_eq!(actions, [(11, IdleAction::Nudge)], "nudged at 10 + 10 s");
    }

    #[test]
    fn the_agent_talking_is_not_silence_until_its_audio_has_played() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut idle = Idle::new(Some(limits()));
        idle.start(start, &mut timers);
        // From 2 s the agent says something that plays until 8 s.
        let plays_until = start + Duration::from_secs(8);
        let actions: Vec<(u64, IdleAction)> = (1..=20)
            .filter_map(|s| {
                let now = start + Duration::from_secs(s);
                let audible = (s >= 2).then_some(plays_until).filter(|&u| u > now);
                idle.check(now, false, audible, true, &mut timers)
                    .map(|a| (s, a))
            })
            .collect();
        assert_eq!(actions, [(18, IdleAction::Nudge)]);
    }

    #[test]
    fn no_limits_no_watch() {
        let mut timers = Timers::default();
        let mut idle = Idle::new(None);
        idle.start(Instant::now(), &mut timers);
        assert_eq!(timers.next(), None);
    }
}
