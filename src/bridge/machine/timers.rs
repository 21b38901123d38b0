//! The machine's one timer table: every deadline a call can have, in one place, so that
//! `poll_timeout` and `handle_timeout` are one loop over the table rather than a hand-kept
//! list of fields.

use std::time::Instant;

/// Every kind of deadline a call has; at most one of each is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The provider must send `start` by then.
    Start,
    /// `MAX_CALL_SECONDS` reached.
    CallLimit,
    /// Check that the phone stream sent something since the last check.
    PhoneSilence,
    /// Close of the caller-audio accounting window (rate limit).
    InputWindow,
    /// A `goAway` deadline reached mid-turn: resume now.
    GoAway,
    /// Open the Gemini session again after a failed try.
    ResumeRetry,
    /// The model said nothing for `GEMINI_STALL_SECS` when it should have.
    Stall,
    /// The agent's last words did not come back as played in time.
    Playout,
    /// The caller paused after a key: their digits go to the model.
    Keypad,
    /// Time to check whether the line has gone silent.
    Idle,
    /// The callee said nothing for `GREETING_SILENCE_MS`: greet them anyway.
    Greeting,
    /// An answering machine's greeting did not end in time: leave the message anyway.
    Voicemail,
    /// The provider's buffer has drained below the playout lead: send it more agent audio.
    Pace,
}

impl Timer {
    const ALL: [Timer; 13] = [
        Timer::Start,
        Timer::CallLimit,
        Timer::PhoneSilence,
        Timer::InputWindow,
        Timer::GoAway,
        Timer::ResumeRetry,
        Timer::Stall,
        Timer::Playout,
        Timer::Keypad,
        Timer::Idle,
        Timer::Greeting,
        Timer::Voicemail,
        Timer::Pace,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Default)]
pub struct Timers {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl Timers {
    /// Arms `timer` for `at`, replacing any earlier deadline of the same kind.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn clear(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// Disarms everything (the call ended).
    pub fn clear_all(&mut self) {
        self.deadlines = Default::default();
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer due at `now`, in the order of [`Timer`] (so the
    /// call limit wins over everything but a missing `start`).
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let due = Timer::ALL
            .into_iter()
            .find(|t| self.deadlines[t.index()].is_some_and(|d| d <= now))?;
        self.clear(due);
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_timers_pop_once_in_table_order() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.set(Timer::Stall, now);
        timers.set(Timer::CallLimit, now);
        timers.set(Timer::Playout, now + Duration::from_secs(1));
        assert_eq!(timers.next(), Some(now));
        assert_eq!(timers.pop_due(now), Some(Timer::CallLimit));
        assert_eq!(timers.pop_due(now), Some(Timer::Stall));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.next(), Some(now + Duration::from_secs(1)));
        timers.clear_all();
        assert_eq!(timers.next(), None);
    }
}
