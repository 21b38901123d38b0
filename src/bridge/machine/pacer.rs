//! Paced playout: the agent's frames wait here and go to the provider at real time plus a
//! small lead, so the provider never holds more than the lead. That is what makes a barge-in
//! drop little, and what lets the call know how much of a turn the caller actually heard.
//!
//! The model of the provider's buffer is simple: it plays 20 ms per frame, starting when a
//! frame arrives if it has nothing else to play. While audio waits here, a position mark
//! every [`POSITION_MARK_EVERY`] frames comes back when the provider has played up to it,
//! and corrects the model when the provider is behind it (a slow network, a busy moment).
//!
//! Where the provider starts playing after a pause is the one thing the model cannot know:
//! the first frame reaches it some milliseconds after we send it. So the first frame after
//! a pause carries a position mark of its own, and until one comes back the buffer is
//! topped up only once the model says it is nearly empty.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::audio::PHONE_FRAME_BYTES;

/// Length of one phone frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// A position mark goes out after this many frames (200 ms of audio).
pub const POSITION_MARK_EVERY: u64 = 10;
/// Frames are topped up once the provider's buffer has drained this far below the lead, so
/// a call sends two frames per write rather than one.
const TOP_UP_BELOW_LEAD: Duration = Duration::from_millis(40);
/// Until the provider has confirmed where it is after a pause, the buffer is topped up only
/// once the model says it holds this little (it may hold more: it started late).
const UNCONFIRMED_TOP_UP_AT: Duration = Duration::from_millis(60);
/// The most audio kept waiting (two minutes): a model that generates far faster than real
/// time for that long is misbehaving, and memory per call stays bounded.
pub const MAX_QUEUED_FRAMES: usize = 6_000;
/// Position marks remembered while they are out; a provider that never echoes them (or a
/// long stretch of waiting audio) drops the oldest, so memory per call stays bounded.
const MAX_POSITIONS_OUT: usize = 64;
/// Prefix of position-mark names; the rest is the frame count the mark follows.
const POSITION_PREFIX: &str = "p";

/// A named marker waiting for its place in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedMark {
    /// The end of the agent's turn number `n`.
    TurnEnd(u32),
    /// Everything before it has played: a waiting hang-up or transfer may go ahead.
    Playout,
}

/// What the pacer wants sent to the provider now, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// One μ-law frame.
    Frame([u8; PHONE_FRAME_BYTES]),
    /// A mark of ours.
    Mark(QueuedMark),
    /// A position mark, named with [`position_mark_name`].
    Position(u64),
}

/// The name of the position mark that follows frame number `sent` (counted over the call).
pub fn position_mark_name(sent: u64) -> String {
    format!("{POSITION_PREFIX}{sent}")
}

/// Agent frames on their way to the provider, and where the provider has got to.
#[derive(Debug)]
pub struct Pacer {
    /// How far ahead of real time the provider may be fed; `None` sends at once (unpaced).
    lead: Option<Duration>,
    waiting: VecDeque<[u8; PHONE_FRAME_BYTES]>,
    /// Marks waiting for the frame count (over the call) they follow.
    marks: VecDeque<(u64, QueuedMark)>,
    /// Frames sent over the call.
    sent: u64,
    /// When the provider will have played everything sent so far.
    plays_until: Option<Instant>,
    /// Position marks sent and not yet played (nor cleared), oldest first.
    positions_out: VecDeque<u64>,
    /// A position mark has come back since the provider last started from empty.
    confirmed: bool,
    /// Frames dropped because the queue was full.
    pub overflowed_frames: u64,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Pacer {
    /// A pacer that keeps the provider at most `lead` ahead of real time (`None`: unpaced).
    pub fn new(lead: Option<Duration>) -> Self {
        Self {
            lead,
            waiting: VecDeque::new(),
            marks: VecDeque::new(),
            sent: 0,
            plays_until: None,
            positions_out: VecDeque::new(),
            confirmed: false,
            overflowed_frames: 0,
        }
    }

    /// Queues one frame; false (and the frame is dropped) when the queue is full.
    pub fn push_frame(&mut self, frame: [u8; PHONE_FRAME_BYTES]) -> bool {
        if self.waiting.len() >= MAX_QUEUED_FRAMES {
            self.overflowed_frames += 1;
            return false;
        }
        self.waiting.push_back(frame);
        true
    }

    /// Queues a mark after the frames queued so far.
    pub fn push_mark(&mut self, mark: QueuedMark) {
        self.marks.push_back((self.queued_frames(), mark));
    }

    /// The position the next frame queued will take: frames sent over the call and those
    /// waiting (frames a clear dropped never had a position).
    pub fn queued_frames(&self) -> u64 {
        self.sent + self.waiting.len() as u64
    }

    /// True while frames or marks wait to be sent.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.marks.is_empty()
    }

    /// What the provider holds and has not played at `now`.
    pub fn buffered(&self, now: Instant) -> Duration {
        self.plays_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// Frames (counted over the call) the caller has heard by `now`, as far as we know.
    pub fn played_frames(&self, now: Instant) -> u64 {
        let unplayed = self.buffered(now).as_micros().div_ceil(FRAME.as_micros());
        self.sent.saturating_sub(unplayed as u64)
    }

    /// When the caller will have heard everything sent and queued so far, if that is after
    /// `now`.
    pub fn audible_until(&self, now: Instant) -> Option<Instant> {
        let from = self.plays_until.filter(|&until| until > now);
        if self.waiting.is_empty() {
            return from;
        }
        Some(from.unwrap_or(now) + FRAME * self.waiting.len() as u32)
    }

    /// Takes what should be sent at `now`: when the provider is idle or due a top-up, frames
    /// until it holds the lead; each mark once the frames before it are out; and a position
    /// mark every [`POSITION_MARK_EVERY`] frames. Returns them through `send`.
    pub fn send_due(&mut self, now: Instant, mut send: impl FnMut(Outgoing)) {
        // Topping up only when due (not on every chunk the model sends) keeps writes few and
        // lets the provider confirm where it is after a pause.
        let top_up = self.lead.is_none()
            || self.plays_until.is_none_or(|until| until <= now)
            || self.top_up_time().is_some_and(|due| due <= now);
        loop {
            if let Some(position) = self.marks.front().map(|(at, _)| *at)
                && position <= self.sent
                && let Some((_, mark)) = self.marks.pop_front()
            {
                send(Outgoing::Mark(mark));
                continue;
            }
            if !top_up || !self.room_for_a_frame(now) {
                return;
            }
            let Some(frame) = self.waiting.pop_front() else {
                return;
            };
            // A batch that restarts an idle provider: where it starts playing is unknown
            // until a mark after its first frame comes back. (A lone frame restarting it,
            // audio arriving at real time, needs no such care.)
            let restarts =
                self.plays_until.is_none_or(|until| until <= now) && !self.waiting.is_empty();
            if restarts {
                self.confirmed = false;
            }
            let from = self.plays_until.map_or(now, |until| until.max(now));
            self.plays_until = Some(from + FRAME);
            self.sent += 1;
            send(Outgoing::Frame(frame));
            // Positions matter while audio waits here (the lead is in use); audio arriving at
            // real time is played as it is sent.
            let every = self.sent.is_multiple_of(POSITION_MARK_EVERY) && !self.waiting.is_empty();
            if self.lead.is_some() && (restarts || every) {
                if self.positions_out.len() >= MAX_POSITIONS_OUT {
                    self.positions_out.pop_front();
                }
                self.positions_out.push_back(self.sent);
                send(Outgoing::Position(self.sent));
            }
        }
    }

    /// When [`Self::send_due`] next has something to send, if frames are waiting.
    pub fn next_due(&self) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        self.top_up_time()
    }

    /// When the provider's buffer will have drained enough for a top-up.
    fn top_up_time(&self) -> Option<Instant> {
        let lead = self.lead?;
        // The buffer has drained to `lead - TOP_UP_BELOW_LEAD` (or nearly out, unconfirmed).
        let top_up_at = match self.confirmed {
            true => lead.saturating_sub(TOP_UP_BELOW_LEAD),
            false => UNCONFIRMED_TOP_UP_AT.min(lead),
        };
        let until = self.plays_until?;
        until.checked_sub(top_up_at)
    }

    /// The provider played up to position mark `name` at `now`: our model of its buffer is
    /// moved later if the provider is behind it. False when `name` is not a position mark
    /// of ours still out (a mark echoed by a clear, say).
    pub fn position_played(&mut self, name: &str, now: Instant) -> bool {
        let Some(position) = name
            .strip_prefix(POSITION_PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return false;
        };
        let Some(index) = self.positions_out.iter().position(|&p| p == position) else {
            return false;
        };
        // Marks come back in order; anything older than this one will not now.
        self.positions_out.drain(..=index);
        self.confirmed = true;
        let behind = self.sent.saturating_sub(position) as u32;
        let provider_plays_until = now + FRAME * behind;
        if self
            .plays_until
            .is_none_or(|until| until < provider_plays_until)
        {
            self.plays_until = Some(provider_plays_until);
        }
        true
    }

    /// Forgets everything (the call ended); the lead stays.
    pub fn reset(&mut self) {
        *self = Self::new(self.lead);
    }

    /// Barge-in at `now`: everything waiting (frames and marks) is dropped, and the provider
    /// is being told to drop what it holds. Position marks already sent no longer mean
    /// anything.
    pub fn clear(&mut self, now: Instant) {
        self.waiting.clear();
        self.marks.clear();
        self.positions_out.clear();
        self.plays_until = Some(now);
    }

    fn room_for_a_frame(&self, now: Instant) -> bool {
        let Some(lead) = self.lead else {
            return true;
        };
        self.buffered(now) + FRAME <= lead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: Duration = Duration::from_millis(200);

    fn frame(n: u8) -> [u8; PHONE_FRAME_BYTES] {
        [n; PHONE_FRAME_BYTES]
    }

    fn take(pacer: &mut Pacer, now: Instant) -> Vec<Outgoing> {
        let mut sent = Vec::new();
        pacer.send_due(now, |s| sent.push(s));
        sent
    }

    fn frames_in(sent: &[Outgoing]) -> usize {
        sent.iter()
            .filter(|s| matches!(s, Outgoing::Frame(_)))
            .count()
    }

    #[test]
    fn a_burst_goes_out_at_real_time_plus_the_lead() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Some(LEAD));
        for n in 0..150 {
            assert!(pacer.push_frame(frame(n)));
        }
        // The first words go out at once, up to the lead.
        assert_eq!(frames_in(&take(&mut pacer, start)), 10);
        assert_eq!(pacer.buffered(start), LEAD);
        // Until the provider says where it is, no more than that.
        assert_eq!(pacer.next_due(), Some(start + LEAD - UNCONFIRMED_TOP_UP_AT));
        assert!(pacer.position_played("p1", start + FRAME));
        // Then a few at a time, woken when the buffer has drained 40 ms below the lead.
        let mut now = start;
        let mut total = 10;
        while let Some(due) = pacer.next_due() {
            assert!(due > now, "the pacer must not ask to be woken in the past");
            now = due;
            let sent = take(&mut pacer, now);
            assert!(
                pacer.buffered(now) <= LEAD,
                "held {:?}",
                pacer.buffered(now)
            );
            total += frames_in(&sent);
        }
        assert_eq!(total, 150);
        // Three seconds of audio, sent over 3 s minus the lead.
        let sending_took = now - start;
        assert!(
            sending_took >= Duration::from_millis(2_760)
                && sending_took <= Duration::from_millis(2_800),
            "{sending_took:?}"
        );
    }

    #[test]
    fn unpaced_sends_everything_at_once_without_position_marks() {
        let now = Instant::now();
        let mut pacer = Pacer::new(None);
        for n in 0..30 {
            pacer.push_frame(frame(n));
        }
        pacer.push_mark(QueuedMark::TurnEnd(1));
        let sent = take(&mut pacer, now);
        assert_eq!(frames_in(&sent), 30);
        assert_eq!(sent.last(), Some(&Outgoing::Mark(QueuedMark::TurnEnd(1))));
        assert_eq!(pacer.next_due(), None);
    }

    #[test]
    fn marks_go_out_after_the_frames_before_them_and_positions_every_200_ms() {
        let now = Instant::now();
        let mut pacer = Pacer::new(Some(LEAD));
        for n in 0..5 {
            pacer.push_frame(frame(n));
        }
        pacer.push_mark(QueuedMark::TurnEnd(1));
        for n in 5..12 {
            pacer.push_frame(frame(n));
        }
        pacer.push_mark(QueuedMark::Playout);
        let sent = take(&mut pacer, now);
        let order: Vec<String> = sent
            .iter()
            .map(|s| match s {
                Outgoing::Frame(f) => format!("f{}", f[0]),
                Outgoing::Mark(m) => format!("{m:?}"),
                Outgoing::Position(p) => position_mark_name(*p),
            })
            .collect();
        assert_eq!(
            order,
            [
                "f0",
                "p1",
                "f1",
                "f2",
                "f3",
                "f4",
                "TurnEnd(1)",
                "f5",
                "f6",
                "f7",
                "f8",
                "f9",
                "p10"
            ]
        );
        // The playout mark waits for frames 10 and 11, sent at the next top-up.
        assert!(take(&mut pacer, now + Duration::from_millis(40)).is_empty());
        let later = take(&mut pacer, now + LEAD - UNCONFIRMED_TOP_UP_AT);
        assert_eq!(later.len(), 3, "{later:?}");
        assert_eq!(later[2], Outgoing::Mark(QueuedMark::Playout));
    }

    #[test]
    fn played_position_follows_real_time_and_position_marks_correct_a_late_provider() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Some(LEAD));
        for n in 0..40 {
            pacer.push_frame(frame(n));
        }
        take(&mut pacer, start);
        assert_eq!(pacer.played_frames(start), 0);
        assert_eq!(pacer.played_frames(start + Duration::from_millis(100)), 5);
        // The provider started 100 ms late: frame 10 played at 300 ms, not 200 ms.
        let late = start + Duration::from_millis(300);
        assert!(pacer.position_played("p10", late));
        assert_eq!(pacer.played_frames(late), 10);
        assert_eq!(pacer.buffered(late), Duration::ZERO);
        // A stale or foreign name changes nothing.
        assert!(!pacer.position_played("p10", late));
        assert!(!pacer.position_played("turn-1", late));
    }

    #[test]
    fn a_clear_drops_what_waits_and_forgets_sent_positions() {
        let now = Instant::now();
        let mut pacer = Pacer::new(Some(LEAD));
        for n in 0..30 {
            pacer.push_frame(frame(n));
        }
        pacer.push_mark(QueuedMark::Playout);
        take(&mut pacer, now);
        pacer.clear(now);
        assert!(!pacer.has_waiting());
        assert_eq!(pacer.buffered(now), Duration::ZERO);
        assert_eq!(pacer.played_frames(now), 10, "ten frames were sent");
        // The position mark sent before the clear is echoed by it: not a played position.
        assert!(!pacer.position_played("p10", now));
        // What is queued next takes its place after what was sent, not after what was
        // dropped: its marks go out with it.
        pacer.push_frame(frame(1));
        pacer.push_mark(QueuedMark::TurnEnd(2));
        let sent = take(&mut pacer, now);
        assert_eq!(sent.last(), Some(&Outgoing::Mark(QueuedMark::TurnEnd(2))));
    }

    #[test]
    fn audio_arriving_at_real_time_goes_straight_out_without_marks() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Some(LEAD));
        let mut marks = 0;
        for n in 0..50u32 {
            let now = start + FRAME * n;
            pacer.push_frame(frame(0));
            let sent = take(&mut pacer, now);
            assert_eq!(frames_in(&sent), 1, "frame {n} waited");
            marks += sent.len() - 1;
        }
        assert_eq!(marks, 0, "played as sent: no position to learn");
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut pacer = Pacer::new(Some(LEAD));
        for _ in 0..MAX_QUEUED_FRAMES {
            assert!(pacer.push_frame(frame(0)));
        }
        assert!(!pacer.push_frame(frame(0)));
        assert_eq!(pacer.overflowed_frames, 1);
    }

    #[test]
    fn audible_until_counts_what_waits_and_what_the_provider_holds() {
        let now = Instant::now();
        let mut pacer = Pacer::new(Some(LEAD));
        assert_eq!(pacer.audible_until(now), None);
        for n in 0..50 {
            pacer.push_frame(frame(n));
        }
        take(&mut pacer, now);
        assert_eq!(pacer.audible_until(now), Some(now + Duration::from_secs(1)));
    }
}
