//! The two fixed-ratio resamplers of the phone bridge: 8 kHz → 16 kHz and 24 kHz → 8 kHz.
//!
//! Both are polyphase FIR filters whose taps are designed once per process (near-equiripple,
//! see `design.rs`) and then run as plain f32 multiply-adds over a history buffer, about 1 µs per
//! 20 ms frame per direction. The crate resamplers were measured with the same code
//! (`benches/resamplers.rs`, `report::measure`): dasp's sinc does not filter before decimating
//! (aliases at 0 dB) and costs ~0.4 ms per frame; rubato's FFT resampler is excellent but needs
//! 10 ms of delay (at ≤ 3 ms its cutoff drops far below 3.4 kHz); rubato's sinc resampler tuned
//! to the 3 ms budget is down 75 dB from 4.6 kHz but only 6 dB at 4 kHz, at 6–10 µs per frame.
//! These filters reject everything from 4 kHz by ≥ 66 dB with 2.625 ms of delay.
//!
//! Every output sample is one dot product over a contiguous window of past input, always summed
//! in the same order, so the result does not depend on how the input was split into pushes.

use std::sync::LazyLock;

use super::design::{LowPassSpec, design_low_pass};

/// A streaming, single-channel, fixed-ratio resampler (lets `report.rs` measure any candidate).
pub trait StreamResampler {
    /// Input sample rate in Hz.
    fn input_rate(&self) -> u32;
    /// Output sample rate in Hz.
    fn output_rate(&self) -> u32;
    /// Consumes `input` and appends every output sample it makes available to `out`.
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>);
    /// Forgets all history, as if newly created.
    fn reset(&mut self);
}

/// Input samples handled per pass; bounds the history buffers whatever the push size.
const BLOCK: usize = 1024;

/// Upper edge of the telephone passband kept flat.
const PASS_EDGE_HZ: f64 = 3400.0;
/// Everything from here up is rejected (the phone channel's Nyquist frequency).
const STOP_EDGE_HZ: f64 = 4000.0;
/// Stopband vs passband error weight: ±0.03 dB ripple against ≥ 66 dB rejection.
const STOP_WEIGHT: f64 = 8.0;

/// Half-length of the 8 → 16 kHz filter (85 taps at 16 kHz); even, so the delay is whole 8 kHz samples.
const UP_HALF_LEN: usize = 42;
/// Half-length of the 24 → 8 kHz filter (127 taps at 24 kHz); a multiple of 3 for the same reason.
const DOWN_HALF_LEN: usize = 63;

/// Taps per polyphase branch, both directions: ⌈85 / 2⌉ = ⌈127 / 3⌉ = 43.
const BRANCH: usize = 43;
/// Past samples each branch keeps.
const HISTORY: usize = BRANCH - 1;
const _: () = assert!(BRANCH == (2 * UP_HALF_LEN + 1).div_ceil(2));
const _: () = assert!(BRANCH == (2 * DOWN_HALF_LEN + 1).div_ceil(3));

/// Outputs computed together (per upsampler phase, or by the downsampler). A group keeps that
/// many independent accumulators in flight, which is what lets the multiply-adds vectorize and
/// overlap instead of waiting on each other.
const GROUP: usize = 32;

/// Prototype low-pass of the upsampler, at 16 kHz, unity passband gain.
pub(crate) static UP_PROTOTYPE: LazyLock<Vec<f64>> = LazyLock::new(|| {
    design_low_pass(&LowPassSpec {
        sample_rate: 16_000.0,
        pass_edge: PASS_EDGE_HZ,
        stop_edge: STOP_EDGE_HZ,
        stop_weight: STOP_WEIGHT,
        half_len: UP_HALF_LEN,
    })
});

/// Prototype low-pass of the downsampler, at 24 kHz, unity passband gain.
pub(crate) static DOWN_PROTOTYPE: LazyLock<Vec<f64>> = LazyLock::new(|| {
    design_low_pass(&LowPassSpec {
        sample_rate: 24_000.0,
        pass_edge: PASS_EDGE_HZ,
        stop_edge: STOP_EDGE_HZ,
        stop_weight: STOP_WEIGHT,
        half_len: DOWN_HALF_LEN,
    })
});

/// Polyphase branch `r` of `proto` decimated by `m`, scaled, in window order (oldest sample
/// first) and zero-padded to `BRANCH` taps.
fn branch(proto: &[f64], m: usize, r: usize, gain: f64) -> [f32; BRANCH] {
    std::array::from_fn(|j| {
        let q = BRANCH - 1 - j; // how many branch samples back
        proto.get(m * q + r).map_or(0.0, |&h| (gain * h) as f32)
    })
}

/// The two upsampler phases (even and odd output samples); gain 2 restores the level that
/// zero-stuffing halves.
static UP_PHASES: LazyLock<[[f32; BRANCH]; 2]> =
    LazyLock::new(|| std::array::from_fn(|p| branch(&UP_PROTOTYPE, 2, p, 2.0)));

/// The three downsampler branches; branch `r` filters the input samples `x[3m - r]`.
static DOWN_BRANCHES: LazyLock<[[f32; BRANCH]; 3]> =
    LazyLock::new(|| std::array::from_fn(|r| branch(&DOWN_PROTOTYPE, 3, r, 1.0)));

/// `acc[o] += Σ_j taps[j] · x[o + j]` for `W` consecutive outputs, summed over `j` in order.
///
/// Every output is a plain sequential sum in the same order whatever `W` it is computed with,
/// so results are bit-identical however the input was split into pushes.
#[inline(always)]
fn convolve<const W: usize>(taps: &[f32; BRANCH], x: &[f32], acc: &mut [f32; W]) {
    for (&t, xs) in taps.iter().zip(x.windows(W)) {
        let Ok(xs) = <&[f32; W]>::try_from(xs) else {
            continue;
        };
        for o in 0..W {
            acc[o] += t * xs[o];
        }
    }
}

/// Silence fed through a filter to push out what it still holds.
const ZEROS: [f32; 128] = [0.0; 128];

/// 8 kHz → 16 kHz interpolator (caller → Gemini).
///
/// Passband 0–3.4 kHz within ±0.03 dB; images of everything below 4 kHz (i.e. 4–8 kHz at the
/// output) at least 66 dB down. Linear phase with [`Upsampler2x::DELAY_MS`] of delay.
#[derive(Debug, Clone)]
pub struct Upsampler2x {
    /// The last `HISTORY` inputs, then the block being processed.
    buf: Vec<f32>,
}

impl Upsampler2x {
    /// Group delay in milliseconds (42 samples at 16 kHz, exactly 21 at 8 kHz).
    pub const DELAY_MS: f64 = UP_HALF_LEN as f64 * 1000.0 / 16_000.0;

    /// Creates the resampler; the filter is designed on the first call in the process.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(HISTORY + BLOCK);
        buf.resize(HISTORY, 0.0);
        LazyLock::force(&UP_PHASES);
        Self { buf }
    }

    /// Group delay in milliseconds.
    pub fn delay_ms() -> f64 {
        Self::DELAY_MS
    }

    /// Forgets the filter history.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(HISTORY, 0.0);
    }

    /// Appends exactly two output samples per input sample to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let phases = &*UP_PHASES;
        for block in input.chunks(BLOCK) {
            self.buf.extend_from_slice(block);
            out.reserve(2 * block.len());
            let mut t = 0;
            // One phase at a time: sharing the input loads between phases tempts the compiler
            // to vectorize across the two phases instead of across outputs, which is slower.
            while t + GROUP <= block.len() {
                let (mut even, mut odd) = ([0.0f32; GROUP], [0.0f32; GROUP]);
                convolve(&phases[0], &self.buf[t..], &mut even);
                convolve(&phases[1], &self.buf[t..], &mut odd);
                for (&e, &o) in even.iter().zip(&odd) {
                    out.extend_from_slice(&[e, o]);
                }
                t += GROUP;
            }
            while t < block.len() {
                let (mut even, mut odd) = ([0.0f32; 1], [0.0f32; 1]);
                convolve(&phases[0], &self.buf[t..], &mut even);
                convolve(&phases[1], &self.buf[t..], &mut odd);
                out.extend_from_slice(&[even[0], odd[0]]);
                t += 1;
            }
            self.buf.drain(..block.len());
        }
    }

    /// Feeds silence until the last input has fully left the filter, then resets.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        self.process(&ZEROS[..UP_HALF_LEN], out);
        self.reset();
    }
}

impl Default for Upsampler2x {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamResampler for Upsampler2x {
    fn input_rate(&self) -> u32 {
        8_000
    }
    fn output_rate(&self) -> u32 {
        16_000
    }
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        Upsampler2x::process(self, input, out);
    }
    fn reset(&mut self) {
        Upsampler2x::reset(self);
    }
}

/// 24 kHz → 8 kHz decimator (Gemini → caller).
///
/// Passband 0–3.4 kHz within ±0.03 dB; every input tone from 4 kHz to 12 kHz (anything that
/// would fold into 0–4 kHz) at least 66 dB down. Linear phase with [`Downsampler3x::DELAY_MS`]
/// of delay.
///
/// Output `m` falls on input `3m` (the first input of a stream makes one). The input is dealt
/// into three branches, `x[3m]`, `x[3m - 1]` and `x[3m - 2]`, so each branch is an ordinary
/// convolution over contiguous samples.
#[derive(Debug, Clone)]
pub struct Downsampler3x {
    /// Per branch: `HISTORY` past samples, then the samples for the pending outputs. Branches 1
    /// and 2 run one output ahead of branch 0 once their sample for the next output arrived.
    branches: [Vec<f32>; 3],
    /// Input index of the next sample, modulo 3.
    phase: usize,
}

impl Downsampler3x {
    /// Group delay in milliseconds (63 samples at 24 kHz, exactly 21 at 8 kHz).
    pub const DELAY_MS: f64 = DOWN_HALF_LEN as f64 * 1000.0 / 24_000.0;

    /// Creates the resampler; the filter is designed on the first call in the process.
    pub fn new() -> Self {
        LazyLock::force(&DOWN_BRANCHES);
        let mut this = Self {
            branches: std::array::from_fn(|_| Vec::with_capacity(HISTORY + 2 + BLOCK.div_ceil(3))),
            phase: 0,
        };
        this.reset();
        this
    }

    /// Group delay in milliseconds.
    pub fn delay_ms() -> f64 {
        Self::DELAY_MS
    }

    /// Forgets the filter history and the decimation phase.
    pub fn reset(&mut self) {
        for (r, b) in self.branches.iter_mut().enumerate() {
            b.clear();
            // Branches 1 and 2 already hold output 0's samples, x[-1] and x[-2]: silence.
            b.resize(HISTORY + usize::from(r != 0), 0.0);
        }
        self.phase = 0;
    }

    /// Appends one output sample per three input samples to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let taps = &*DOWN_BRANCHES;
        for block in input.chunks(BLOCK) {
            self.deal(block);
            let [b0, b1, b2] = &self.branches;
            let ready = b0.len() - HISTORY;
            out.reserve(ready);
            let mut m = 0;
            while m + GROUP <= ready {
                let mut acc = [0.0f32; GROUP];
                convolve(&taps[0], &b0[m..], &mut acc);
                convolve(&taps[1], &b1[m..], &mut acc);
                convolve(&taps[2], &b2[m..], &mut acc);
                out.extend_from_slice(&acc);
                m += GROUP;
            }
            while m < ready {
                let mut acc = [0.0f32; 1];
                convolve(&taps[0], &b0[m..], &mut acc);
                convolve(&taps[1], &b1[m..], &mut acc);
                convolve(&taps[2], &b2[m..], &mut acc);
                out.push(acc[0]);
                m += 1;
            }
            for b in &mut self.branches {
                b.drain(..ready);
            }
        }
    }

    /// Deals input samples to their branches: x[i] with i ≡ 0, 1, 2 (mod 3) is x[3m], x[3m - 2],
    /// x[3m - 1] of its output m. Whole triples go in bulk; per-sample pushes cost more than the
    /// filtering.
    fn deal(&mut self, block: &[f32]) {
        let mut rest = block;
        while self.phase != 0 {
            let Some((&x, tail)) = rest.split_first() else {
                return;
            };
            self.deal_one(x);
            rest = tail;
        }
        let triples = rest.chunks_exact(3);
        let tail = triples.remainder();
        let [b0, b1, b2] = &mut self.branches;
        b0.extend(triples.clone().map(|t| t[0]));
        b2.extend(triples.clone().map(|t| t[1]));
        b1.extend(triples.map(|t| t[2]));
        for &x in tail {
            self.deal_one(x);
        }
    }

    fn deal_one(&mut self, x: f32) {
        let r = [0, 2, 1][self.phase];
        self.branches[r].push(x);
        self.phase = if self.phase == 2 { 0 } else { self.phase + 1 };
    }

    /// Feeds silence until the last input has fully left the filter, then resets.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        self.process(&ZEROS[..2 * DOWN_HALF_LEN], out);
        self.reset();
    }
}

impl Default for Downsampler3x {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamResampler for Downsampler3x {
    fn input_rate(&self) -> u32 {
        24_000
    }
    fn output_rate(&self) -> u32 {
        8_000
    }
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        Downsampler3x::process(self, input, out);
    }
    fn reset(&mut self) {
        Downsampler3x::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::super::design::magnitude;
    use super::*;

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    /// Worst passband deviation and worst stopband gain of a prototype on a 1 Hz grid.
    fn dense_response(proto: &[f64], fs: f64) -> (f64, f64) {
        let mut ripple: f64 = 0.0;
        let mut stop = f64::NEG_INFINITY;
        for f in 0..=(fs as usize / 2) {
            let g = db(magnitude(proto, f as f64, fs));
            if f as f64 <= PASS_EDGE_HZ {
                ripple = ripple.max(g.abs());
            } else if f as f64 >= STOP_EDGE_HZ {
                stop = stop.max(g);
            }
        }
        (ripple, stop)
    }

    #[test]
    fn designed_filters_meet_spec_on_dense_grid() {
        let (ripple, stop) = dense_response(&UP_PROTOTYPE, 16_000.0);
        assert!(
            ripple < 0.05 && stop < -65.0,
            "up: ripple {ripple} dB, stop {stop} dB"
        );
        let (ripple, stop) = dense_response(&DOWN_PROTOTYPE, 24_000.0);
        assert!(
            ripple < 0.05 && stop < -65.0,
            "down: ripple {ripple} dB, stop {stop} dB"
        );
    }

    #[test]
    fn delays_are_within_budget_and_whole_phone_samples() {
        for d in [Upsampler2x::delay_ms(), Downsampler3x::delay_ms()] {
            assert!(d <= 3.0);
            assert_eq!((d * 8.0).fract(), 0.0);
        }
        assert_eq!(UP_PROTOTYPE.len(), 2 * UP_HALF_LEN + 1);
        assert_eq!(DOWN_PROTOTYPE.len(), 2 * DOWN_HALF_LEN + 1);
    }

    fn test_signal(n: usize) -> Vec<f32> {
        // Deterministic pseudo-noise, full scale, so every tap matters.
        let mut state = 0x1234_5678u32;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 16) as i16) as f32
            })
            .collect()
    }

    fn run_split<R: StreamResampler>(r: &mut R, x: &[f32], sizes: &[usize]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut rest = x;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            r.process(&rest[..n], &mut out);
            rest = &rest[n..];
            i += 1;
        }
        out
    }

    #[test]
    fn framing_does_not_change_output() {
        let x = test_signal(24_000 / 5 * 3 + 7);
        let split_sizes: [&[usize]; 4] = [&[x.len()], &[160], &[480], &[1, 0, 7, 2000, 3, 333]];
        let mut up_ref: Option<Vec<f32>> = None;
        let mut down_ref: Option<Vec<f32>> = None;
        for sizes in split_sizes {
            let up = run_split(&mut Upsampler2x::new(), &x, sizes);
            assert_eq!(up.len(), 2 * x.len());
            assert_eq!(up_ref.get_or_insert_with(|| up.clone()), &up);
            let down = run_split(&mut Downsampler3x::new(), &x, sizes);
            assert_eq!(down.len(), x.len().div_ceil(3));
            assert_eq!(down_ref.get_or_insert_with(|| down.clone()), &down);
        }
    }

    #[test]
    fn reset_restores_initial_state() {
        let x = test_signal(1000);
        let mut up = Upsampler2x::new();
        let mut first = Vec::new();
        up.process(&x, &mut first);
        up.reset();
        let mut second = Vec::new();
        up.process(&x, &mut second);
        assert_eq!(first, second);

        let mut down = Downsampler3x::new();
        let mut first = Vec::new();
        down.process(&x[..100], &mut first);
        down.reset();
        first.clear();
        down.process(&x, &mut first);
        let mut second = Vec::new();
        Downsampler3x::new().process(&x, &mut second);
        assert_eq!(first, second);
    }

    #[test]
    fn impulse_peaks_at_the_stated_delay() {
        let mut x = vec![0.0f32; 400];
        x[0] = 1.0;
        let mut up = Vec::new();
        Upsampler2x::new().process(&x, &mut up);
        let peak = (0..up.len())
            .max_by(|&a, &b| up[a].total_cmp(&up[b]))
            .unwrap_or(0);
        assert_eq!(peak as f64, Upsampler2x::DELAY_MS * 16.0);

        // An impulse on the decimation grid, delayed by exactly the filter delay.
        let mut down = Vec::new();
        Downsampler3x::new().process(&x, &mut down);
        let peak = (0..down.len())
            .max_by(|&a, &b| down[a].total_cmp(&down[b]))
            .unwrap_or(0);
        assert_eq!(peak as f64, Downsampler3x::DELAY_MS * 8.0);
    }

    #[test]
    fn flush_emits_the_tail_and_resets() {
        let x = test_signal(480);
        let mut down = Downsampler3x::new();
        let mut out = Vec::new();
        down.process(&x, &mut out);
        let before = out.len();
        down.flush(&mut out);
        assert_eq!(out.len() - before, 2 * DOWN_HALF_LEN / 3);
        assert!(out[before..].iter().any(|&s| s != 0.0));
        let mut again = Vec::new();
        down.process(&x, &mut again);
        assert_eq!(again, out[..before]);

        let mut up = Upsampler2x::new();
        let mut out = Vec::new();
        up.process(&x, &mut out);
        up.flush(&mut out);
        assert_eq!(out.len(), 2 * (480 + UP_HALF_LEN));
    }

    #[test]
    fn empty_and_large_inputs() {
        let mut up = Upsampler2x::new();
        let mut down = Downsampler3x::new();
        let mut out = Vec::new();
        up.process(&[], &mut out);
        down.process(&[], &mut out);
        assert!(out.is_empty());
        let big = vec![1000.0f32; 50_000];
        up.process(&big, &mut out);
        assert_eq!(out.len(), 100_000);
        assert!(up.buf.capacity() <= HISTORY + BLOCK);
        out.clear();
        down.process(&big, &mut out);
        assert_eq!(out.len(), 50_000usize.div_ceil(3));
        // The DC gain is within the passband ripple once the filter is primed.
        assert!((out[out.len() - 1] - 1000.0).abs() < 1000.0 * 0.004);
        assert!(
            down.branches
                .iter()
                .all(|b| b.capacity() <= HISTORY + 2 + BLOCK.div_ceil(3))
        );
    }
}
