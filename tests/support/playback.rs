//! A provider's playout, emulated: what our server sends a fake phone is played the way
//! Twilio and Plivo play it — 20 ms per frame, in order, starting when a frame arrives if
//! nothing is playing — marks are acknowledged when the audio before them has played, and a
//! clear drops what has not played yet (Twilio also echoes the pending marks; whether Plivo
//! does is unconfirmed, so this fake does not, the stricter case).
//!
//! From it tests read what a caller would have heard, and when: how much audio the provider
//! held at any moment, and how much played after a given instant. `Caller::play` runs a
//! call's phone through it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::phone::{Outbound, Provider};

/// Length of one μ-law frame.
pub const FRAME: Duration = Duration::from_millis(20);

/// The playout of one call's phone.
#[derive(Debug)]
pub struct Playback {
    provider: Provider,
    /// When everything received so far will have played.
    plays_until: Option<Instant>,
    /// Play intervals of the frames received, cut short by clears.
    intervals: Vec<(Instant, Instant)>,
    /// Marks waiting for the audio before them: (when it will have played, name).
    pending_marks: VecDeque<(Instant, String)>,
    /// The most audio held (received, not yet played) just after a frame arrived.
    pub max_held: Duration,
    /// When the most was held.
    pub max_held_at: Option<Instant>,
    /// Frames received.
    pub frames: usize,
    /// Clears received, and when.
    pub clears: Vec<Instant>,
    /// Marks acknowledged, in order.
    pub marks_played: Vec<String>,
}

impl Playback {
    /// Nothing received yet.
    pub fn new(provider: Provider) -> Self {
        Self {
            provider,
            plays_until: None,
            intervals: Vec::new(),
            pending_marks: VecDeque::new(),
            max_held: Duration::ZERO,
            max_held_at: None,
            frames: 0,
            clears: Vec::new(),
            marks_played: Vec::new(),
        }
    }

    /// A frame arrived at `at`.
    pub fn media(&mut self, at: Instant) {
        let begin = self.plays_until.map_or(at, |until| until.max(at));
        let end = begin + FRAME;
        self.intervals.push((begin, end));
        self.plays_until = Some(end);
        self.frames += 1;
        let held = end - at;
        if held > self.max_held {
            self.max_held = held;
            self.max_held_at = Some(at);
        }
    }

    /// A mark arrived at `at`: it is due when the audio before it has played.
    pub fn mark(&mut self, name: String, at: Instant) {
        let due = self.plays_until.map_or(at, |until| until.max(at));
        self.pending_marks.push_back((due, name));
    }

    /// A clear arrived at `at`: what has not played is dropped; returns the marks the
    /// provider echoes at once.
    pub fn clear(&mut self, at: Instant) -> Vec<String> {
        self.clears.push(at);
        self.intervals.retain(|&(begin, _)| begin < at);
        if let Some(last) = self.intervals.last_mut() {
            last.1 = last.1.min(at);
        }
        self.plays_until = Some(at);
        let pending: Vec<String> = self.pending_marks.drain(..).map(|(_, n)| n).collect();
        match self.provider {
            Provider::Twilio => pending,
            Provider::Plivo => Vec::new(),
        }
    }

    /// Takes one message from the server at `at`; returns the marks to echo now (a clear's).
    pub fn take(&mut self, event: Outbound, at: Instant) -> Vec<String> {
        match event {
            Outbound::Media(_) => self.media(at),
            Outbound::Mark(name) => self.mark(name, at),
            Outbound::Clear => return self.clear(at),
            Outbound::Other(v) => panic!("{:?}: unexpected message {v}", self.provider),
        }
        Vec::new()
    }

    /// Audio received and not yet played at `at`.
    pub fn held_at(&self, at: Instant) -> Duration {
        self.plays_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(at))
    }

    /// Audio that plays (or played) between `from` and `to`.
    pub fn heard_between(&self, from: Instant, to: Instant) -> Duration {
        self.intervals
            .iter()
            .map(|&(begin, end)| {
                let (begin, end) = (begin.max(from), end.min(to));
                end.saturating_duration_since(begin)
            })
            .sum()
    }

    /// Audio heard over the whole call so far (up to `now`).
    pub fn heard_until(&self, now: Instant) -> Duration {
        self.intervals
            .first()
            .map_or(Duration::ZERO, |&(first, _)| self.heard_between(first, now))
    }

    /// When the next mark is due, if one waits.
    pub fn next_mark_due(&self) -> Option<Instant> {
        self.pending_marks.front().map(|(due, _)| *due)
    }

    /// Marks due by `now`, oldest first.
    pub fn marks_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.pending_marks.front()
            && *at <= now
        {
            if let Some((_, name)) = self.pending_marks.pop_front() {
                due.push(name);
            }
        }
        due
    }
}
