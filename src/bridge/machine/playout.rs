//! The agent's audio on its way down: 24 kHz PCM to 20 ms μ-law frames, paced to the
//! provider through the [`Pacer`], turn marks, barge-in, how much of a turn the caller heard,
//! and actions (hang-up, transfer) that wait until the last words have played.

use std::time::{Duration, Instant};

use crate::audio::PHONE_FRAME_BYTES;

use super::outbox::Outbox;
use super::pacer::{self, Pacer, QueuedMark};
use super::timers::{Timer, Timers};
use super::types::AfterPlayout;
use crate::audio::Downlink;
use crate::gemini::protocol;
use crate::telephony::PhoneCommand;

/// How long the last words of the agent may take to play before a hang-up or transfer
/// goes ahead anyway.
pub const PLAYOUT_TIMEOUT: Duration = Duration::from_secs(15);
/// μ-law for a zero sample, to pad the last frame of a clip.
const MULAW_SILENCE: u8 = 0xFF;
/// Name of the mark that tells us the agent's last words have played.
const PLAYOUT_MARK: &str = "playout";
/// How long after the last queued audio should have played its mark may take to come back
/// before a waiting action goes ahead anyway (when that is later than [`PLAYOUT_TIMEOUT`]
/// from the request: a long answer still queued here).
const MARK_ECHO_GRACE: Duration = Duration::from_secs(2);
/// The pacing timer fires this long after a top-up is due: a caller frame (one every 20 ms)
/// usually does the top-up first, so the task is not woken just for it.
const PACE_TIMER_SLACK: Duration = Duration::from_millis(20);

/// How much of an agent turn's audio the caller heard before it was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnHeard {
    /// Frames played to the caller.
    pub heard: u64,
    /// Frames the model had produced.
    pub produced: u64,
}

impl TurnHeard {
    /// The share heard, 0 to 1.
    pub fn share(self) -> f64 {
        match self.produced {
            0 => 0.0,
            produced => self.heard as f64 / produced as f64,
        }
    }

    /// Milliseconds heard and produced.
    pub fn millis(self) -> (u64, u64) {
        let ms = pacer::FRAME.as_millis() as u64;
        (self.heard * ms, self.produced * ms)
    }
}

/// The agent's side of the audio path.
#[derive(Default)]
pub struct Playout {
    downlink: Downlink,
    pacer: Pacer,
    /// Reused so the per-frame path does not allocate.
    pcm24k: Vec<u8>,
    /// Where (in frames over the call) the audio of the turn the model is producing began;
    /// `None` when it is not speaking.
    turn_began_at: Option<u64>,
    after: Option<AfterPlayout>,
    /// The playout mark for `after` is queued or sent.
    mark_queued: bool,
    turns: u32,
    /// Some model audio has arrived in this call.
    has_spoken: bool,
}

impl Playout {
    /// Audio is sent at most `lead` ahead of real time (`None`: as soon as it is produced).
    pub fn set_lead(&mut self, lead: Option<Duration>) {
        self.pacer = Pacer::new(lead);
    }

    /// True while the model is producing a turn (its audio may play on for a while after).
    pub fn speaking(&self) -> bool {
        self.turn_began_at.is_some()
    }

    /// True while the caller is hearing, or is about to hear, the agent at `now`.
    pub fn audible(&self, now: Instant) -> bool {
        self.speaking() || self.pacer.audible_until(now).is_some()
    }

    /// When the caller will have heard all the agent audio sent or waiting, if after `now`.
    pub fn audible_until(&self, now: Instant) -> Option<Instant> {
        self.pacer.audible_until(now)
    }

    /// Decodes one base64 chunk of model audio at `now` and queues the whole frames it
    /// completes.
    pub fn push_audio(
        &mut self,
        base64: &str,
        now: Instant,
        timers: &mut Timers,
        out: &mut Outbox,
    ) -> Result<(), base64::DecodeError> {
        protocol::decode_audio(base64, &mut self.pcm24k)?;
        if !self.speaking() {
            self.turn_began_at = Some(self.pacer.queued_frames());
        }
        self.has_spoken = true;
        self.downlink.push(&self.pcm24k);
        self.move_frames();
        self.pump(now, timers, out);
        Ok(())
    }

    /// True once the model has sent any audio in this call.
    pub fn has_spoken(&self) -> bool {
        self.has_spoken
    }

    /// How much of the current turn's audio the caller has heard by `now`, if a turn is
    /// under way.
    pub fn heard_of_turn(&self, now: Instant) -> Option<TurnHeard> {
        let began = self.turn_began_at?;
        let produced = self.pacer.queued_frames().saturating_sub(began);
        let heard = self
            .pacer
            .played_frames(now)
            .saturating_sub(began)
            .min(produced);
        Some(TurnHeard { heard, produced })
    }

    /// Barge-in at `now`: nothing the model said before this may still reach the caller.
    /// The provider drops at most the lead.
    pub fn interrupt(&mut self, now: Instant, timers: &mut Timers, out: &mut Outbox) {
        self.downlink.clear();
        // Marks waiting with the audio go with it; the playout mark is sent again below.
        self.pacer.clear(now);
        out.phone(PhoneCommand::Clear);
        if self.after.is_some() {
            // Nothing is left to play, so the provider acknowledges this one at once (a
            // playout mark sent before the clear may or may not be echoed by it).
            self.mark_queued = true;
            out.phone(PhoneCommand::Mark(PLAYOUT_MARK));
        }
        timers.clear(Timer::Pace);
        self.turn_began_at = None;
    }

    /// The model's turn is complete at `now`: the last partial frame is padded and queued,
    /// with a mark after it; a pending action's mark follows.
    pub fn finish_turn(&mut self, now: Instant, timers: &mut Timers, out: &mut Outbox) {
        if self.speaking() {
            self.downlink.finish_turn();
            self.move_frames();
            self.turns += 1;
            self.pacer.push_mark(QueuedMark::TurnEnd(self.turns));
        }
        self.turn_began_at = None;
        if self.after.is_some() && !self.mark_queued {
            self.queue_playout_mark(now, timers);
        }
        self.pump(now, timers, out);
    }

    /// Plays out what the model already said without waiting for its turn to end (before a
    /// resumption: an unfinished turn cannot be resumed, and the new session starts clean).
    pub fn cut(&mut self, now: Instant, timers: &mut Timers, out: &mut Outbox) {
        if self.speaking() {
            self.downlink.finish_turn();
            self.move_frames();
            self.turn_began_at = None;
            self.pump(now, timers, out);
        }
    }

    /// Carries out `action` once what the agent is saying has played: after the current
    /// turn, a mark, and the provider's acknowledgement of it (or `deadline`). An action
    /// already waiting keeps its place.
    pub fn after(
        &mut self,
        action: AfterPlayout,
        deadline: Instant,
        now: Instant,
        timers: &mut Timers,
        out: &mut Outbox,
    ) {
        if self.after.is_some() {
            return;
        }
        self.after = Some(action);
        timers.set(Timer::Playout, deadline);
        if !self.speaking() {
            self.queue_playout_mark(now, timers);
            self.pump(now, timers, out);
        }
    }

    /// Forgets a waiting action (the call took another turn).
    pub fn cancel_after(&mut self, timers: &mut Timers) {
        self.after = None;
        self.mark_queued = false;
        timers.clear(Timer::Playout);
    }

    /// Stops the agent's audio (waiting here and at the provider) and plays `mulaw` instead.
    pub fn play_clip(&mut self, mulaw: &[u8], now: Instant, timers: &mut Timers, out: &mut Outbox) {
        if self.audible(now) || self.pacer.has_waiting() {
            self.interrupt(now, timers, out);
        }
        self.queue_mulaw(mulaw, now, timers, out);
    }

    /// Queues `mulaw` (8 kHz) after what the agent has said so far, as 20 ms frames (the
    /// last padded with silence); a barge-in's clear drops it with the agent's audio.
    pub fn queue_mulaw(
        &mut self,
        mulaw: &[u8],
        now: Instant,
        timers: &mut Timers,
        out: &mut Outbox,
    ) {
        let mut frames = mulaw.chunks_exact(PHONE_FRAME_BYTES);
        for frame in &mut frames {
            let mut whole = [MULAW_SILENCE; PHONE_FRAME_BYTES];
            whole.copy_from_slice(frame);
            self.push_frame(whole);
        }
        let rest = frames.remainder();
        if !rest.is_empty() {
            let mut last = [MULAW_SILENCE; PHONE_FRAME_BYTES];
            last[..rest.len()].copy_from_slice(rest);
            self.push_frame(last);
        }
        self.pump(now, timers, out);
    }

    /// A caller frame arrived at `now`: frames due go out with it, so pacing rarely needs a
    /// wake-up of its own.
    pub fn caller_frame(&mut self, now: Instant, timers: &mut Timers, out: &mut Outbox) {
        if self.pacer.next_due().is_some_and(|due| due <= now) {
            self.pump(now, timers, out);
        }
    }

    /// The pacing timer fired.
    pub fn pace(&mut self, now: Instant, timers: &mut Timers, out: &mut Outbox) {
        self.pump(now, timers, out);
    }

    /// The provider played up to mark `name` at `now`; returns the action that was waiting
    /// for it.
    pub fn mark_played(
        &mut self,
        name: &str,
        now: Instant,
        timers: &mut Timers,
        out: &mut Outbox,
    ) -> Option<AfterPlayout> {
        if self.pacer.position_played(name, now) {
            // The provider may be behind our estimate: the next top-up moves.
            self.pump(now, timers, out);
            return None;
        }
        if name != PLAYOUT_MARK || !self.mark_queued {
            return None;
        }
        self.timed_out(timers)
    }

    /// The wait is over either way; returns the action that was waiting.
    pub fn timed_out(&mut self, timers: &mut Timers) -> Option<AfterPlayout> {
        timers.clear(Timer::Playout);
        self.mark_queued = false;
        self.after.take()
    }

    /// Forgets queued audio (the call ended).
    pub fn clear(&mut self) {
        self.downlink.clear();
        self.pacer.reset();
        self.turn_began_at = None;
    }

    /// Queues the playout mark after everything waiting; the action's deadline is pushed
    /// back if that audio plays past it.
    fn queue_playout_mark(&mut self, now: Instant, timers: &mut Timers) {
        self.mark_queued = true;
        self.pacer.push_mark(QueuedMark::Playout);
        if let Some(until) = self.pacer.audible_until(now)
            && timers
                .get(Timer::Playout)
                .is_some_and(|deadline| deadline < until + MARK_ECHO_GRACE)
        {
            timers.set(Timer::Playout, until + MARK_ECHO_GRACE);
        }
    }

    fn move_frames(&mut self) {
        while let Some(frame) = self.downlink.pop_frame() {
            self.push_frame(frame);
        }
    }

    fn push_frame(&mut self, frame: [u8; PHONE_FRAME_BYTES]) {
        if !self.pacer.push_frame(frame) && self.pacer.overflowed_frames == 1 {
            tracing::warn!(
                max_frames = pacer::MAX_QUEUED_FRAMES,
                "the model sent audio far ahead of real time for too long; dropping some"
            );
        }
    }

    /// Sends what is due at `now` and sets the pacing timer for the next top-up.
    fn pump(&mut self, now: Instant, timers: &mut Timers, out: &mut Outbox) {
        self.pacer.send_due(now, |send| match send {
            pacer::Outgoing::Frame(frame) => out.phone(PhoneCommand::Play(&frame)),
            pacer::Outgoing::Mark(QueuedMark::Playout) => {
                out.phone(PhoneCommand::Mark(PLAYOUT_MARK))
            }
            pacer::Outgoing::Mark(QueuedMark::TurnEnd(n)) => {
                out.phone(PhoneCommand::Mark(&format!("turn-{n}")))
            }
            pacer::Outgoing::Position(sent) => {
                out.phone(PhoneCommand::Mark(&pacer::position_mark_name(sent)))
            }
        });
        match self.pacer.next_due() {
            Some(due) => timers.set(Timer::Pace, due.max(now) + PACE_TIMER_SLACK),
            None => timers.clear(Timer::Pace),
        }
    }
}
