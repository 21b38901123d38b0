//! The agent's audio on its way down: 24 kHz PCM to 20 ms μ-law frames, turn marks,
//! barge-in, and actions (hang-up, transfer) that wait until the last words have played.

use std::time::{Duration, Instant};

use crate::audio::PHONE_FRAME_BYTES;

use super::outbox::Outbox;
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

/// The agent's side of the audio path.
#[derive(Default)]
pub struct Playout {
    downlink: Downlink,
    /// Reused so the per-frame path does not allocate.
    pcm24k: Vec<u8>,
    speaking: bool,
    after: Option<AfterPlayout>,
    mark_sent: bool,
    turns: u32,
    /// Some model audio has arrived in this call.
    has_spoken: bool,
}

impl Playout {
    /// True while the agent's audio is being sent and has not finished or been cut off.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Decodes one base64 chunk of model audio and queues the whole frames it completes.
    pub fn push_audio(
        &mut self,
        base64: &str,
        out: &mut Outbox,
    ) -> Result<(), base64::DecodeError> {
        protocol::decode_audio(base64, &mut self.pcm24k)?;
        self.speaking = true;
        self.has_spoken = true;
        self.downlink.push(&self.pcm24k);
        self.drain_frames(out);
        Ok(())
    }

    /// True once the model has sent any audio in this call.
    pub fn has_spoken(&self) -> bool {
        self.has_spoken
    }

    /// Barge-in: nothing the model said before this may still reach the caller.
    pub fn interrupt(&mut self, out: &mut Outbox) {
        self.downlink.clear();
        out.phone(PhoneCommand::Clear);
        self.speaking = false;
    }

    /// The model's turn is complete: the last partial frame is padded and sent, with a mark
    /// after it; a pending action's mark follows.
    pub fn finish_turn(&mut self, out: &mut Outbox) {
        if self.speaking {
            self.downlink.finish_turn();
            self.drain_frames(out);
            self.turns += 1;
            let mark = format!("turn-{}", self.turns);
            out.phone(PhoneCommand::Mark(&mark));
        }
        self.speaking = false;
        if self.after.is_some() && !self.mark_sent {
            self.send_playout_mark(out);
        }
    }

    /// Plays out what the model already said without waiting for its turn to end (before a
    /// resumption: an unfinished turn cannot be resumed, and the new session starts clean).
    pub fn cut(&mut self, out: &mut Outbox) {
        if self.speaking {
            self.downlink.finish_turn();
            self.drain_frames(out);
            self.speaking = false;
        }
    }

    /// Carries out `action` once what the agent is saying has played: after the current
    /// turn, a mark, and the provider's acknowledgement of it (or `deadline`). An action
    /// already waiting keeps its place.
    pub fn after(
        &mut self,
        action: AfterPlayout,
        deadline: Instant,
        timers: &mut Timers,
        out: &mut Outbox,
    ) {
        if self.after.is_some() {
            return;
        }
        self.after = Some(action);
        timers.set(Timer::Playout, deadline);
        if !self.speaking {
            self.send_playout_mark(out);
        }
    }

    /// Forgets a waiting action (the call took another turn).
    pub fn cancel_after(&mut self, timers: &mut Timers) {
        self.after = None;
        self.mark_sent = false;
        timers.clear(Timer::Playout);
    }

    /// Stops the agent's audio (queued here and at the provider) and plays `mulaw` instead.
    pub fn play_clip(&mut self, mulaw: &[u8], out: &mut Outbox) {
        if self.speaking {
            self.interrupt(out);
        }
        self.downlink.clear();
        self.queue_mulaw(mulaw, out);
    }

    /// Queues `mulaw` (8 kHz) after what the agent has sent so far, as 20 ms frames (the
    /// last padded with silence); a barge-in's clear drops it with the agent's audio.
    pub fn queue_mulaw(&mut self, mulaw: &[u8], out: &mut Outbox) {
        let mut frames = mulaw.chunks_exact(PHONE_FRAME_BYTES);
        for frame in &mut frames {
            out.phone(PhoneCommand::Play(frame));
        }
        let rest = frames.remainder();
        if !rest.is_empty() {
            let mut last = [MULAW_SILENCE; PHONE_FRAME_BYTES];
            last[..rest.len()].copy_from_slice(rest);
            out.phone(PhoneCommand::Play(&last));
        }
    }

    /// The provider played up to mark `name`; returns the action that was waiting for it.
    pub fn mark_played(&mut self, name: &str, timers: &mut Timers) -> Option<AfterPlayout> {
        if name != PLAYOUT_MARK || !self.mark_sent {
            return None;
        }
        self.timed_out(timers)
    }

    /// The wait is over either way; returns the action that was waiting.
    pub fn timed_out(&mut self, timers: &mut Timers) -> Option<AfterPlayout> {
        timers.clear(Timer::Playout);
        self.after.take()
    }

    /// Forgets queued audio (the call ended).
    pub fn clear(&mut self) {
        self.downlink.clear();
        self.speaking = false;
    }

    fn send_playout_mark(&mut self, out: &mut Outbox) {
        self.mark_sent = true;
        out.phone(PhoneCommand::Mark(PLAYOUT_MARK));
    }

    fn drain_frames(&mut self, out: &mut Outbox) {
        while let Some(frame) = self.downlink.pop_frame() {
            out.phone(PhoneCommand::Play(&frame));
        }
    }
}
