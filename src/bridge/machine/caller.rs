//! The caller's audio on its way up: resampled and sent, held while no session can take it,
//! echoed in echo mode, and bounded so that a hostile stream cannot push audio faster than a
//! phone line carries it.

use std::time::Duration;

use crate::audio::{PHONE_FRAME_BYTES, Uplink};
use crate::gemini::protocol;

/// Caller audio kept while a Gemini session is being opened (16 kHz PCM16: 1 s).
const MAX_HELD_BYTES: usize = 32_000;
/// Largest `media` payload accepted: providers send 20 ms (160 bytes); 100 ms is generous.
pub const MAX_FRAME_BYTES: usize = 800;
/// Audio is accounted in windows of this length.
pub const INPUT_WINDOW: Duration = Duration::from_secs(2);
/// μ-law bytes a window may carry: 1.5 times real time (8000 bytes a second), which leaves
/// room for a provider catching up after a network hiccup.
const WINDOW_BUDGET_BYTES: usize = 24_000;
/// Consecutive windows over budget after which the call is ended.
const FLOOD_WINDOWS: u32 = 3;

/// Where caller audio goes in the call's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To Gemini now.
    Send,
    /// Kept until a session can take it.
    Hold,
    /// Back to the caller (echo mode).
    Echo,
    /// Nowhere (before `start`, after the end).
    Drop,
}

/// The verdict on an accounting window that just closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowVerdict {
    /// Within budget, or not for long.
    Fine,
    /// Over budget for too long: end the call.
    Flood,
}

/// Counts caller audio per window and refuses what is over budget.
#[derive(Debug, Default)]
pub struct InputGuard {
    used: usize,
    over_budget: bool,
    flood_windows: u32,
    /// Frames dropped over the whole call (oversized or over budget).
    pub dropped_frames: u64,
}

impl InputGuard {
    /// Whether a payload of `len` bytes may be used.
    pub fn admit(&mut self, len: usize) -> bool {
        if len > MAX_FRAME_BYTES || self.used + len > WINDOW_BUDGET_BYTES {
            self.over_budget = true;
            self.dropped_frames += 1;
            return false;
        }
        self.used += len;
        true
    }

    /// Closes the current window and opens the next.
    pub fn close_window(&mut self) -> WindowVerdict {
        self.flood_windows = if self.over_budget {
            self.flood_windows + 1
        } else {
            0
        };
        self.used = 0;
        self.over_budget = false;
        if self.flood_windows >= FLOOD_WINDOWS {
            WindowVerdict::Flood
        } else {
            WindowVerdict::Fine
        }
    }
}

/// The caller's side of the audio path.
#[derive(Default)]
pub struct CallerAudio {
    uplink: Uplink,
    /// Reused so the per-frame path does not allocate.
    pcm16k: Vec<u8>,
    /// Echo mode: μ-law waiting to fill a whole frame.
    pub echo: Vec<u8>,
    held: Vec<u8>,
    /// Rate and size bounds.
    pub guard: InputGuard,
}

impl CallerAudio {
    /// Takes one payload of μ-law; returns the Gemini message to send when routed there.
    /// `None` also when the payload was held, echoed (see [`Self::echo`]) or refused.
    pub fn accept(&mut self, mulaw: &[u8], route: Route) -> Option<String> {
        if route == Route::Drop || !self.guard.admit(mulaw.len()) {
            return None;
        }
        match route {
            Route::Send => {
                self.pcm16k.clear();
                self.uplink.push(mulaw, &mut self.pcm16k);
                let mut message = String::with_capacity(96 + self.pcm16k.len() * 4 / 3);
                protocol::write_audio_message(&self.pcm16k, &mut message);
                Some(message)
            }
            Route::Hold => {
                self.uplink.push(mulaw, &mut self.held);
                let excess = self.held.len().saturating_sub(MAX_HELD_BYTES);
                if excess > 0 {
                    // Keep the most recent second; whole samples only.
                    self.held.drain(..excess + excess % 2);
                }
                None
            }
            Route::Echo => {
                self.echo.extend_from_slice(mulaw);
                None
            }
            Route::Drop => None,
        }
    }

    /// The held audio as Gemini messages of at most 100 ms each; nothing is held afterwards.
    pub fn release_held(&mut self) -> Vec<String> {
        let held = std::mem::take(&mut self.held);
        held.chunks(3_200)
            .map(|chunk| {
                let mut message = String::new();
                protocol::write_audio_message(chunk, &mut message);
                message
            })
            .collect()
    }

    /// Whole echo frames are taken by the caller of this; returns how many bytes they span.
    pub fn echo_frames_len(&self) -> usize {
        self.echo.len() - self.echo.len() % PHONE_FRAME_BYTES
    }

    /// Forgets everything held (the call ended).
    pub fn clear(&mut self) {
        self.held = Vec::new();
        self.echo = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_payloads_are_refused() {
        let mut guard = InputGuard::default();
        assert!(guard.admit(PHONE_FRAME_BYTES));
        assert!(guard.admit(MAX_FRAME_BYTES));
        assert!(!guard.admit(MAX_FRAME_BYTES + 1));
        assert_eq!(guard.dropped_frames, 1);
    }

    #[test]
    fn real_time_passes_and_a_flood_is_cut_then_ended() {
        let mut guard = InputGuard::default();
        // Two seconds of real time: 100 frames of 20 ms, every window.
        for _ in 0..10 {
            assert!((0..100).all(|_| guard.admit(PHONE_FRAME_BYTES)));
            assert_eq!(guard.close_window(), WindowVerdict::Fine);
        }
        // Ten times real time: the budget is used up, the rest dropped, and after a few
        // such windows the verdict is a flood.
        let mut verdicts = Vec::new();
        for _ in 0..FLOOD_WINDOWS {
            let passed = (0..1000).filter(|_| guard.admit(PHONE_FRAME_BYTES)).count();
            assert_eq!(passed * PHONE_FRAME_BYTES, WINDOW_BUDGET_BYTES);
            verdicts.push(guard.close_window());
        }
        assert_eq!(verdicts.last(), Some(&WindowVerdict::Flood));
        assert!(
            verdicts[..verdicts.len() - 1]
                .iter()
                .all(|v| *v == WindowVerdict::Fine)
        );
    }

    #[test]
    fn held_audio_keeps_the_latest_second() {
        let mut caller = CallerAudio::default();
        for _ in 0..60 {
            assert_eq!(caller.accept(&[0xFF; PHONE_FRAME_BYTES], Route::Hold), None);
            caller.guard.close_window();
        }
        let messages = caller.release_held();
        assert_eq!(messages.len(), MAX_HELD_BYTES / 3_200);
        assert!(caller.release_held().is_empty());
    }
}
