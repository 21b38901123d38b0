//! Audio path between a phone call (G.711 μ-law, 8 kHz) and Gemini Live (PCM16 LE, 16 kHz up,
//! 24 kHz down).

pub mod clip;
pub mod codec;
mod design;
pub mod dtmf;
pub mod endpoint;
pub mod report;
pub mod resample;

use std::collections::VecDeque;
use std::sync::LazyLock;

use resample::{Downsampler3x, Upsampler2x};

/// Bytes in one 20 ms μ-law frame at 8 kHz.
pub const PHONE_FRAME_BYTES: usize = 160;
/// μ-law byte for silence (used to pad the last frame of a turn).
pub const MULAW_SILENCE: u8 = 0xFF;

/// Samples converted per pass, so scratch buffers stay small whatever the push size.
const CHUNK: usize = 960;

/// μ-law → f32 in 16-bit scale, so decoding for the filter costs one load.
static DECODE_F32: LazyLock<[f32; 256]> =
    LazyLock::new(|| std::array::from_fn(|i| f32::from(codec::decode(i as u8))));

/// Rounds half away from zero and saturates; `f32::round` is a libm call on baseline x86-64.
#[inline(always)]
fn to_i16(s: f32) -> i16 {
    (s + 0.5f32.copysign(s)) as i16
}

/// Caller → Gemini: μ-law 8 kHz in, PCM16 little-endian 16 kHz out. Stateful across frames.
#[derive(Debug, Clone)]
pub struct Uplink {
    resampler: Upsampler2x,
    pcm: Vec<f32>,
    resampled: Vec<f32>,
}

impl Uplink {
    /// Creates an uplink with silent filter history.
    pub fn new() -> Self {
        LazyLock::force(&DECODE_F32);
        Self {
            resampler: Upsampler2x::new(),
            pcm: Vec::with_capacity(CHUNK),
            resampled: Vec::with_capacity(2 * CHUNK),
        }
    }

    /// Decodes μ-law bytes (any length) and appends resampled 16 kHz PCM16 LE bytes to `out`
    /// (2 output samples per input sample once the pipeline is primed; total output over a
    /// stream = 2 × total input, apart from whatever the filter holds back).
    ///
    /// In this implementation every push yields exactly `4 * mulaw.len()` bytes; the filter's
    /// hold-back shows up as [`Upsampler2x::DELAY_MS`] of delay instead.
    pub fn push(&mut self, mulaw: &[u8], out: &mut Vec<u8>) {
        let table = &*DECODE_F32;
        out.reserve(4 * mulaw.len());
        for chunk in mulaw.chunks(CHUNK) {
            self.pcm.clear();
            self.pcm.extend(chunk.iter().map(|&b| table[b as usize]));
            self.resampled.clear();
            self.resampler.process(&self.pcm, &mut self.resampled);
            let start = out.len();
            out.resize(start + 2 * self.resampled.len(), 0);
            for (dst, &s) in out[start..].chunks_exact_mut(2).zip(&self.resampled) {
                dst.copy_from_slice(&to_i16(s).to_le_bytes());
            }
        }
    }

    /// Forgets the filter history (e.g. before reusing the uplink for another call).
    pub fn reset(&mut self) {
        self.resampler.reset();
    }
}

impl Default for Uplink {
    fn default() -> Self {
        Self::new()
    }
}

/// Gemini → caller: PCM16 LE 24 kHz in (any byte length; an odd trailing byte is carried to
/// the next push), exact 160-byte μ-law frames out.
#[derive(Debug, Clone)]
pub struct Downlink {
    resampler: Downsampler3x,
    /// Low byte of a sample split across pushes.
    carry: Option<u8>,
    pcm: Vec<f32>,
    resampled: Vec<f32>,
    partial: [u8; PHONE_FRAME_BYTES],
    partial_len: usize,
    frames: VecDeque<[u8; PHONE_FRAME_BYTES]>,
    /// Audio went in since the last flush or clear, so `finish_turn` has a tail to emit.
    pending: bool,
}

impl Downlink {
    /// Creates an empty downlink.
    pub fn new() -> Self {
        Self {
            resampler: Downsampler3x::new(),
            carry: None,
            pcm: Vec::with_capacity(CHUNK),
            resampled: Vec::with_capacity(CHUNK / 3 + 1),
            partial: [MULAW_SILENCE; PHONE_FRAME_BYTES],
            partial_len: 0,
            frames: VecDeque::with_capacity(64),
            pending: false,
        }
    }

    /// Appends audio; completed frames become available through `pop_frame`.
    pub fn push(&mut self, pcm24k_le: &[u8]) {
        let mut bytes = pcm24k_le;
        if bytes.is_empty() {
            return;
        }
        self.pending = true;
        if let Some(lo) = self.carry.take() {
            let (&hi, rest) = match bytes.split_first() {
                Some(split) => split,
                None => return,
            };
            self.pcm.clear();
            self.pcm.push(f32::from(i16::from_le_bytes([lo, hi])));
            self.run_filter();
            bytes = rest;
        }
        // Even-sized chunks keep sample pairs intact; only the very last one can be odd.
        for chunk in bytes.chunks(2 * CHUNK) {
            let pairs = chunk.chunks_exact(2);
            if let [lo] = pairs.remainder() {
                self.carry = Some(*lo);
            }
            self.pcm.clear();
            self.pcm
                .extend(pairs.map(|p| f32::from(i16::from_le_bytes([p[0], p[1]]))));
            self.run_filter();
        }
    }

    /// Resamples `self.pcm` and packs the result into frames.
    fn run_filter(&mut self) {
        self.resampled.clear();
        self.resampler.process(&self.pcm, &mut self.resampled);
        self.pack_resampled();
    }

    /// Encodes `self.resampled` into the partial frame, queueing each frame as it fills.
    fn pack_resampled(&mut self) {
        let mut src = &self.resampled[..];
        while !src.is_empty() {
            let Some(room) = self.partial.get_mut(self.partial_len..) else {
                self.partial_len = 0;
                continue;
            };
            let n = room.len().min(src.len());
            for (dst, &s) in room.iter_mut().zip(&src[..n]) {
                *dst = codec::encode(to_i16(s));
            }
            self.partial_len += n;
            src = &src[n..];
            if self.partial_len == PHONE_FRAME_BYTES {
                self.frames.push_back(self.partial);
                self.partial_len = 0;
            }
        }
    }

    /// Next complete 160-byte frame, if any.
    pub fn pop_frame(&mut self) -> Option<[u8; PHONE_FRAME_BYTES]> {
        self.frames.pop_front()
    }

    /// End of a model turn: flush what the filter and the partial frame hold so the last words
    /// are not cut, padding the final frame with MULAW_SILENCE; after this pop_frame drains them.
    ///
    /// The filter is left reset, so the next turn starts on a frame boundary with clean history.
    /// A half sample still carried is dropped: it cannot be played.
    pub fn finish_turn(&mut self) {
        self.carry = None;
        if !self.pending {
            return;
        }
        self.pending = false;
        self.resampled.clear();
        self.resampler.flush(&mut self.resampled);
        self.pack_resampled();
        if self.partial_len > 0 {
            self.partial[self.partial_len..].fill(MULAW_SILENCE);
            self.frames.push_back(self.partial);
            self.partial_len = 0;
        }
    }

    /// Barge-in: drop all buffered audio (queued frames, partial frame, filter history) at once.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.partial_len = 0;
        self.carry = None;
        self.pending = false;
        self.resampler.reset();
    }

    /// Number of complete frames waiting.
    pub fn queued_frames(&self) -> usize {
        self.frames.len()
    }
}

impl Default for Downlink {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_mulaw(n: usize, freq: f64, amp: f64) -> Vec<u8> {
        (0..n)
            .map(|i| {
                let s = amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin();
                codec::encode(s.round() as i16)
            })
            .collect()
    }

    fn pcm_bytes(samples: impl IntoIterator<Item = i16>) -> Vec<u8> {
        samples.into_iter().flat_map(i16::to_le_bytes).collect()
    }

    fn tone_pcm24(n: usize, freq: f64, amp: f64) -> Vec<u8> {
        pcm_bytes((0..n).map(|i| {
            (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 24_000.0).sin()).round() as i16
        }))
    }

    fn drain(d: &mut Downlink) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(f) = d.pop_frame() {
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn uplink_output_is_twice_the_input_and_framing_independent() {
        let input = tone_mulaw(8000, 1000.0, 8000.0);
        let mut whole = Vec::new();
        Uplink::new().push(&input, &mut whole);
        assert_eq!(whole.len(), 4 * input.len());

        let mut framed = Vec::new();
        let mut up = Uplink::default();
        for frame in input.chunks(PHONE_FRAME_BYTES) {
            let before = framed.len();
            up.push(frame, &mut framed);
            assert_eq!(framed.len() - before, 4 * frame.len());
        }
        assert_eq!(whole, framed);

        let mut odd = Vec::new();
        let mut up = Uplink::new();
        for piece in input.chunks(37) {
            up.push(piece, &mut odd);
        }
        up.push(&[], &mut odd);
        assert_eq!(whole, odd);
    }

    #[test]
    fn uplink_silence_stays_silent_and_full_scale_saturates() {
        let mut out = Vec::new();
        let mut up = Uplink::new();
        up.push(&[MULAW_SILENCE; 400], &mut out);
        assert!(out.iter().all(|&b| b == 0));
        // Alternating full-scale codes overshoot in the filter; the output must clamp, not wrap.
        let harsh: Vec<u8> = (0..4000)
            .map(|i| if i % 7 < 3 { 0x00 } else { 0x80 })
            .collect();
        out.clear();
        up.push(&harsh, &mut out);
        assert_eq!(out.len(), 16_000);
    }

    #[test]
    fn downlink_framing_is_independent_of_push_sizes() {
        let pcm = tone_pcm24(24_000 / 2 + 1, 1000.0, 10_000.0);
        let mut reference = Downlink::new();
        reference.push(&pcm);
        reference.finish_turn();
        let expected = drain(&mut reference);
        assert_eq!(expected.len() % PHONE_FRAME_BYTES, 0);

        for sizes in [&[960usize][..], &[1], &[3, 1, 1001, 2, 0]] {
            let mut d = Downlink::new();
            let mut rest = &pcm[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
            d.finish_turn();
            assert_eq!(drain(&mut d), expected, "sizes {sizes:?}");
        }
    }

    #[test]
    fn downlink_frames_count_and_finish_turn_pads() {
        let mut d = Downlink::new();
        assert_eq!(d.pop_frame(), None);
        d.finish_turn();
        assert_eq!(d.queued_frames(), 0, "nothing pushed, nothing to flush");

        // 20 ms at 24 kHz makes exactly one frame.
        d.push(&tone_pcm24(480, 440.0, 5000.0));
        assert_eq!(d.queued_frames(), 1);
        // 10 ms more leaves half a frame pending until the turn ends.
        d.push(&tone_pcm24(240, 440.0, 5000.0));
        assert_eq!(d.queued_frames(), 1);
        d.finish_turn();
        // 80 pending + 42 flushed samples fit in one padded frame.
        assert_eq!(d.queued_frames(), 2);
        let _ = d.pop_frame();
        let last = d.pop_frame().unwrap_or([0; PHONE_FRAME_BYTES]);
        assert!(last[..80].iter().any(|&b| b != MULAW_SILENCE));
        assert!(last[122..].iter().all(|&b| b == MULAW_SILENCE));
        assert_eq!(d.queued_frames(), 0);
        d.finish_turn();
        assert_eq!(d.queued_frames(), 0, "a second finish adds nothing");
    }

    #[test]
    fn finish_turn_keeps_the_last_words() {
        // A tone that ends exactly on a frame boundary: its filter tail must still come out.
        let mut d = Downlink::new();
        d.push(&tone_pcm24(4800, 1000.0, 10_000.0));
        assert_eq!(d.queued_frames(), 10);
        d.finish_turn();
        assert_eq!(d.queued_frames(), 11);
        let frames = drain(&mut d);
        // Delayed by 21 samples, the tone's last 21 samples are in the flushed frame.
        let tail: Vec<i16> = frames[1600..1621]
            .iter()
            .map(|&b| codec::decode(b))
            .collect();
        assert!(tail.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0) > 5000);
    }

    #[test]
    fn clear_drops_everything_at_once() {
        let mut d = Downlink::new();
        d.push(&tone_pcm24(4801, 1000.0, 10_000.0)); // 10 frames, a partial one, an odd byte
        d.push(&[0x12]);
        assert!(d.queued_frames() > 0);
        d.clear();
        assert_eq!(d.queued_frames(), 0);
        assert_eq!(d.pop_frame(), None);
        d.finish_turn();
        assert_eq!(d.queued_frames(), 0);
        // After a clear the downlink behaves exactly like a new one.
        let pcm = tone_pcm24(1000, 700.0, 3000.0);
        d.push(&pcm);
        d.finish_turn();
        let mut fresh = Downlink::new();
        fresh.push(&pcm);
        fresh.finish_turn();
        assert_eq!(drain(&mut d), drain(&mut fresh));
    }

    #[test]
    fn odd_byte_is_carried() {
        let samples = [1000i16, -2000, 3000, -4000, 5000, -6000];
        let bytes = pcm_bytes(samples);
        let mut a = Downlink::new();
        a.push(&bytes);
        a.finish_turn();
        let mut b = Downlink::new();
        for byte in &bytes {
            b.push(std::slice::from_ref(byte));
        }
        b.finish_turn();
        assert_eq!(drain(&mut a), drain(&mut b));
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let mut d = Downlink::new();
        d.push(&[]);
        d.push(&[0xFF]);
        d.push(&[]);
        d.finish_turn();
        d.push(&vec![0x80; 1_000_001]); // i16::MIN-ish garbage, odd length, 20 s of audio
        assert!(d.queued_frames() > 900);
        d.clear();
        let mut up = Uplink::new();
        let mut out = Vec::new();
        up.push(&[], &mut out);
        up.push(&vec![0u8; 100_000], &mut out);
        assert_eq!(out.len(), 400_000);
    }
}
