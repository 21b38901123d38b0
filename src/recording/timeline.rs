//! Puts the caller and the agent on one timeline, as the phone heard them.
//!
//! The caller's audio is the clock: providers send it continuously at the phone's pace
//! (silence included), 8000 samples a second, and they play the agent's audio on that same
//! clock. The agent's audio, though, reaches the provider faster than real time and waits in
//! its playout buffer. So an agent frame queued when the caller has sent `t` samples plays
//! from `max(t, end of what is already queued)`; a barge-in `clear` drops whatever has not
//! played by then. The timeline keeps exactly that queue — the agent audio not yet played, as
//! μ-law — and writes a stereo sample frame (left the caller, right the agent or silence) for
//! each caller sample that arrives.
//!
//! Memory is bounded: the queue holds at most [`MAX_AGENT_LEAD`] of audio. An agent more
//! than that ahead of the caller's clock means the caller's audio has stopped arriving (a
//! stalled stream), so the clock is moved on instead: the oldest queued agent audio is
//! written out against silence on the caller's side, and the caller's audio, should it come
//! after all, follows it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::audio::codec;

/// How far the agent's audio may be queued ahead of the caller's clock (160 KB of μ-law).
pub const MAX_AGENT_LEAD: Duration = Duration::from_secs(20);
const MAX_LEAD_SAMPLES: usize = MAX_AGENT_LEAD.as_secs() as usize * 8_000;
/// Queue capacity kept once the agent has caught up (the rest is given back).
const IDLE_QUEUE_CAPACITY: usize = 8 * 1_024;

/// One call's two channels on one clock.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Agent μ-law queued at the provider and not yet played; its first byte plays at the
    /// next caller sample.
    queued: VecDeque<u8>,
    /// Agent samples written against silence because the caller's audio fell too far behind.
    pub overrun_samples: u64,
}

impl Timeline {
    /// The caller sent `mulaw`: writes one stereo sample frame (16-bit LE) per sample to `out`.
    pub fn caller(&mut self, mulaw: &[u8], out: &mut Vec<u8>) {
        for &byte in mulaw {
            self.write_frame(codec::decode(byte), out);
        }
        self.give_back_memory();
    }

    /// `samples` of the caller's audio went missing (dropped on the way to the writer):
    /// silence on the left keeps the clock right.
    pub fn caller_gap(&mut self, samples: usize, out: &mut Vec<u8>) {
        for _ in 0..samples {
            self.write_frame(0, out);
        }
    }

    /// The agent's frame was queued for the phone. Writes to `out` only when the queue
    /// would exceed [`MAX_AGENT_LEAD`].
    pub fn agent(&mut self, mulaw: &[u8], out: &mut Vec<u8>) {
        self.queued.extend(mulaw);
        self.enforce_lead(out);
    }

    /// `samples` of the agent's audio went missing on the way to the writer: they still
    /// took their time at the provider, so silence takes their place in the queue.
    pub fn agent_gap(&mut self, samples: usize, out: &mut Vec<u8>) {
        self.queued
            .extend(std::iter::repeat_n(crate::audio::MULAW_SILENCE, samples));
        self.enforce_lead(out);
    }

    /// Barge-in: the provider drops everything it has not played.
    pub fn clear(&mut self) {
        self.queued.clear();
        self.give_back_memory();
    }

    /// Agent audio queued and not yet played, in samples.
    pub fn queued_samples(&self) -> usize {
        self.queued.len()
    }

    fn write_frame(&mut self, left: i16, out: &mut Vec<u8>) {
        let right = self.queued.pop_front().map_or(0, codec::decode);
        out.extend_from_slice(&left.to_le_bytes());
        out.extend_from_slice(&right.to_le_bytes());
    }

    fn enforce_lead(&mut self, out: &mut Vec<u8>) {
        let over = self.queued.len().saturating_sub(MAX_LEAD_SAMPLES);
        if over > 0 {
            self.overrun_samples += over as u64;
            self.caller_gap(over, out);
        }
    }

    /// A long answer grows the queue; once it has played, most of that memory goes back.
    fn give_back_memory(&mut self) {
        if self.queued.is_empty() && self.queued.capacity() > IDLE_QUEUE_CAPACITY {
            self.queued.shrink_to(IDLE_QUEUE_CAPACITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (left, right) pairs of what was written.
    fn frames(out: &[u8]) -> Vec<(i16, i16)> {
        out.chunks_exact(4)
            .map(|f| {
                (
                    i16::from_le_bytes([f[0], f[1]]),
                    i16::from_le_bytes([f[2], f[3]]),
                )
            })
            .collect()
    }

    /// μ-law bytes whose decoded values are distinct and non-zero.
    const CALLER: u8 = 0x10;
    const AGENT: u8 = 0x20;

    #[test]
    fn agent_audio_queued_ahead_plays_on_the_callers_clock() {
        let mut timeline = Timeline::default();
        let mut out = Vec::new();
        timeline.caller(&[CALLER; 160], &mut out);
        // Three frames arrive at once (faster than real time): they play one after another
        // from the next caller sample on, not at once.
        for _ in 0..3 {
            timeline.agent(&[AGENT; 160], &mut out);
        }
        assert_eq!(out.len(), 160 * 4, "nothing is written ahead of the clock");
        for _ in 0..4 {
            timeline.caller(&[CALLER; 160], &mut out);
        }
        let written = frames(&out);
        let (caller, agent) = (codec::decode(CALLER), codec::decode(AGENT));
        assert!(written.iter().all(|(l, _)| *l == caller));
        let right: Vec<i16> = written.iter().map(|(_, r)| *r).collect();
        assert!(right[..160].iter().all(|r| *r == 0), "silence before");
        assert!(right[160..640].iter().all(|r| *r == agent), "three frames");
        assert!(right[640..].iter().all(|r| *r == 0), "silence after");
    }

    #[test]
    fn a_clear_cuts_what_has_not_played() {
        let mut timeline = Timeline::default();
        let mut out = Vec::new();
        for _ in 0..10 {
            timeline.agent(&[AGENT; 160], &mut out);
        }
        timeline.caller(&[CALLER; 320], &mut out);
        timeline.clear();
        assert_eq!(timeline.queued_samples(), 0);
        timeline.caller(&[CALLER; 320], &mut out);
        let right: Vec<i16> = frames(&out).iter().map(|(_, r)| *r).collect();
        assert!(right[..320].iter().all(|r| *r != 0));
        assert!(right[320..].iter().all(|r| *r == 0));
    }

    #[test]
    fn gaps_keep_both_channels_in_place() {
        let mut timeline = Timeline::default();
        let mut out = Vec::new();
        timeline.agent_gap(160, &mut out);
        timeline.agent(&[AGENT; 160], &mut out);
        timeline.caller_gap(160, &mut out);
        timeline.caller(&[CALLER; 160], &mut out);
        let written = frames(&out);
        assert_eq!(written.len(), 320);
        assert!(
            written[..160]
                .iter()
                .all(|(l, r)| *l == 0 && *r == codec::decode(crate::audio::MULAW_SILENCE))
        );
        assert!(written[160..].iter().all(|(l, r)| *l != 0 && *r != 0));
    }

    #[test]
    fn an_agent_far_ahead_of_a_stalled_caller_is_written_against_silence() {
        let mut timeline = Timeline::default();
        let mut out = Vec::new();
        let frames_over = 5;
        for _ in 0..(MAX_LEAD_SAMPLES / 160 + frames_over) {
            timeline.agent(&[AGENT; 160], &mut out);
        }
        assert_eq!(timeline.queued_samples(), MAX_LEAD_SAMPLES);
        assert_eq!(timeline.overrun_samples, (frames_over * 160) as u64);
        let written = frames(&out);
        assert_eq!(written.len(), frames_over * 160);
        assert!(written.iter().all(|(l, r)| *l == 0 && *r != 0));
        // Once played, the queue's memory goes back.
        timeline.caller(&vec![CALLER; MAX_LEAD_SAMPLES], &mut out);
        assert!(timeline.queued.capacity() <= IDLE_QUEUE_CAPACITY * 2);
    }
}
