//! Fidelity measurements of the audio path, shared by the tests, the resampler bench and
//! `gemini-phone audio-report`.
//!
//! Everything is measured the way a listener would meet it: pure tones are streamed through in
//! 20 ms frames, the filter warm-up is skipped, and the amplitude and phase of each frequency of
//! interest are fitted by least squares over a long window (exact for stationary tones, no
//! leakage between a tone and an image only 50 Hz away).

use std::f64::consts::PI;
use std::fmt::Write as _;
use std::time::Instant;

use super::codec;
use super::design::solve;
use super::resample::{Downsampler3x, StreamResampler, Upsampler2x};
use super::{Downlink, PHONE_FRAME_BYTES, Uplink};

/// Upper edge of the band that must stay flat.
pub const PASSBAND_EDGE_HZ: f64 = 3400.0;
/// Allowed passband deviation either way.
pub const PASSBAND_GOAL_DB: f64 = 0.5;
/// Required rejection of images and aliases.
pub const STOPBAND_GOAL_DB: f64 = -60.0;
/// Allowed group delay of each resampler.
pub const DELAY_GOAL_MS: f64 = 3.0;
/// Required round-trip SNR against the μ-law-only path.
pub const ROUND_TRIP_GOAL_DB: f64 = 35.0;
/// Resampler budget per 20 ms frame and direction.
pub const FRAME_COST_GOAL_NS: f64 = 3000.0;

/// Tone amplitude (any scale works; the resamplers are linear).
const AMPLITUDE: f64 = 0.5;
/// Output skipped before fitting: covers the warm-up of every candidate measured.
const SKIP_MS: f64 = 40.0;
/// Output window fitted.
const WINDOW_MS: f64 = 160.0;

/// Measured figures of one resampler.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Candidate name.
    pub name: String,
    /// Input rate in Hz.
    pub input_rate: u32,
    /// Output rate in Hz.
    pub output_rate: u32,
    /// Lowest passband gain (0–3.4 kHz), dB.
    pub passband_min_db: f64,
    /// Highest passband gain (0–3.4 kHz), dB.
    pub passband_max_db: f64,
    /// Worst image/alias level over the whole stopband (4 kHz up), dB relative to the input tone.
    pub stop_worst_db: f64,
    /// Frequency at which `stop_worst_db` occurs (image frequency when upsampling, input tone
    /// frequency when downsampling), Hz.
    pub stop_worst_hz: f64,
    /// Worst level over the part of the stopband that matters at minimum: images of 0–3.4 kHz
    /// (upsampling) or tones 4.6–12 kHz that fold into 0–3.4 kHz (downsampling), dB.
    pub stop_worst_narrow_db: f64,
    /// Largest group delay measured across the passband, ms.
    pub group_delay_ms: f64,
}

impl Figures {
    /// Largest passband deviation from 0 dB either way.
    pub fn passband_ripple_db(&self) -> f64 {
        self.passband_max_db.abs().max(self.passband_min_db.abs())
    }

    /// Whether every figure meets its goal (wide stopband from 4 kHz).
    pub fn meets_goals(&self) -> bool {
        self.passband_ripple_db() <= PASSBAND_GOAL_DB
            && self.stop_worst_db <= STOPBAND_GOAL_DB
            && self.group_delay_ms <= DELAY_GOAL_MS
    }

    /// One summary line per figure with goal and PASS/FAIL.
    pub fn lines(&self) -> String {
        let narrow = if self.output_rate > self.input_rate {
            "images of 0-3.4 kHz (4.6-8 kHz)"
        } else {
            "tones 4.6-12 kHz"
        };
        let wide = if self.output_rate > self.input_rate {
            "images 4-8 kHz"
        } else {
            "tones 4-12 kHz"
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: passband 0-3.4 kHz {:+.3}..{:+.3} dB (goal within ±{PASSBAND_GOAL_DB} dB) {}",
            self.name,
            self.passband_min_db,
            self.passband_max_db,
            verdict(self.passband_ripple_db() <= PASSBAND_GOAL_DB)
        );
        let _ = writeln!(
            s,
            "{}: {wide} worst {:.1} dB at {:.0} Hz (goal <= {STOPBAND_GOAL_DB} dB) {}",
            self.name,
            self.stop_worst_db,
            self.stop_worst_hz,
            verdict(self.stop_worst_db <= STOPBAND_GOAL_DB)
        );
        let _ = writeln!(
            s,
            "{}: {narrow} worst {:.1} dB (goal <= {STOPBAND_GOAL_DB} dB) {}",
            self.name,
            self.stop_worst_narrow_db,
            verdict(self.stop_worst_narrow_db <= STOPBAND_GOAL_DB)
        );
        let _ = writeln!(
            s,
            "{}: group delay {:.3} ms (goal <= {DELAY_GOAL_MS} ms) {}",
            self.name,
            self.group_delay_ms,
            verdict(self.group_delay_ms <= DELAY_GOAL_MS)
        );
        s
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn db(x: f64) -> f64 {
    20.0 * x.max(1e-12).log10()
}

/// Least-squares fit of `Σ a_k cos(ω_k n) + b_k sin(ω_k n)` to `y`, where `n` counts from
/// `first_index`; returns (amplitude, phase lag θ) per frequency, with y ≈ A cos(ωn − θ).
/// A sine column that vanishes (DC, Nyquist) is left out rather than making the system singular.
pub fn fit_tones(
    y: &[f64],
    sample_rate: f64,
    first_index: usize,
    freqs: &[f64],
) -> Vec<(f64, f64)> {
    let cols = 2 * freqs.len();
    let basis = |i: usize, c: usize| -> f64 {
        let w = 2.0 * PI * freqs[c / 2] / sample_rate;
        let phase = w * (first_index + i) as f64;
        if c.is_multiple_of(2) {
            phase.cos()
        } else {
            phase.sin()
        }
    };
    let mut gram = vec![vec![0.0; cols]; cols];
    let mut rhs = vec![0.0; cols];
    let mut row = vec![0.0; cols];
    for (i, &v) in y.iter().enumerate() {
        for (c, r) in row.iter_mut().enumerate() {
            *r = basis(i, c);
        }
        for a in 0..cols {
            rhs[a] += row[a] * v;
            for b in 0..cols {
                gram[a][b] += row[a] * row[b];
            }
        }
    }
    let keep: Vec<usize> = (0..cols)
        .filter(|&c| gram[c][c] > 1e-6 * y.len() as f64)
        .collect();
    let reduced: Vec<Vec<f64>> = keep
        .iter()
        .map(|&a| keep.iter().map(|&b| gram[a][b]).collect())
        .collect();
    let sol = solve(reduced, keep.iter().map(|&a| rhs[a]).collect());
    let mut coef = vec![0.0; cols];
    for (&c, &v) in keep.iter().zip(&sol) {
        coef[c] = v;
    }
    coef.chunks_exact(2)
        .map(|ab| (ab[0].hypot(ab[1]), ab[1].atan2(ab[0])))
        .collect()
}

/// Streams a cosine of `freq` (phase 0 at input sample 0) through `r` in 20 ms frames and
/// returns the fitted output window together with its first output index.
fn run_tone(r: &mut dyn StreamResampler, freq: f64) -> (Vec<f64>, usize) {
    r.reset();
    let fin = f64::from(r.input_rate());
    let fout = f64::from(r.output_rate());
    let n_in = ((SKIP_MS + WINDOW_MS + 10.0) * fin / 1000.0) as usize;
    let frame = (fin / 50.0) as usize;
    let x: Vec<f32> = (0..n_in)
        .map(|n| (AMPLITUDE * (2.0 * PI * freq * n as f64 / fin).cos()) as f32)
        .collect();
    let mut out = Vec::with_capacity(n_in * 4);
    for chunk in x.chunks(frame) {
        r.process(chunk, &mut out);
    }
    let skip = (SKIP_MS * fout / 1000.0) as usize;
    let len = (WINDOW_MS * fout / 1000.0) as usize;
    let end = out.len().min(skip + len);
    let window = out
        .get(skip..end)
        .unwrap_or(&[])
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    (window, skip)
}

/// Frequency that a tone at `freq` lands on after sampling at `rate`.
fn fold(freq: f64, rate: f64) -> f64 {
    let f = freq.rem_euclid(rate);
    if f > rate / 2.0 { rate - f } else { f }
}

/// Measures passband, stopband and group delay of any streaming resampler with the same code.
///
/// Upsamplers: tones every 25 Hz across the input band, gain fitted at the tone and the image
/// at `input_rate - f` fitted jointly. Downsamplers: passband tones every 50 Hz up to 3.4 kHz and
/// stopband tones every 25 Hz from `output_rate / 2` to `input_rate / 2` (nudged 5 Hz off DC and
/// Nyquist of the output), fitted at their alias. `step_hz` scales both grids (25 is the report's).
pub fn measure(name: &str, r: &mut dyn StreamResampler, step_hz: f64) -> Figures {
    let fin = f64::from(r.input_rate());
    let fout = f64::from(r.output_rate());
    let mut fig = Figures {
        name: name.to_owned(),
        input_rate: r.input_rate(),
        output_rate: r.output_rate(),
        passband_min_db: f64::INFINITY,
        passband_max_db: f64::NEG_INFINITY,
        stop_worst_db: f64::NEG_INFINITY,
        stop_worst_hz: 0.0,
        stop_worst_narrow_db: f64::NEG_INFINITY,
        group_delay_ms: 0.0,
    };
    let pass = |fig: &mut Figures, gain_db: f64| {
        fig.passband_min_db = fig.passband_min_db.min(gain_db);
        fig.passband_max_db = fig.passband_max_db.max(gain_db);
    };
    let phase_of = |r: &mut dyn StreamResampler, f: f64| -> f64 {
        let (y, first) = run_tone(r, f);
        let mut freqs = vec![f];
        if fout > fin {
            freqs.push(fin - f);
        }
        fit_tones(&y, fout, first, &freqs)[0].1
    };

    if fout > fin {
        let nyq = fin / 2.0;
        let mut f = step_hz;
        while f < nyq {
            let (y, first) = run_tone(r, f);
            let image = fin - f;
            let fit = fit_tones(&y, fout, first, &[f, image]);
            if f <= PASSBAND_EDGE_HZ {
                pass(&mut fig, db(fit[0].0 / AMPLITUDE));
            }
            let level = db(fit[1].0 / AMPLITUDE);
            if level > fig.stop_worst_db {
                fig.stop_worst_db = level;
                fig.stop_worst_hz = image;
            }
            if image >= fin - PASSBAND_EDGE_HZ {
                fig.stop_worst_narrow_db = fig.stop_worst_narrow_db.max(level);
            }
            f += step_hz;
        }
    } else {
        let mut f = 2.0 * step_hz;
        while f <= PASSBAND_EDGE_HZ + 1e-9 {
            let (y, first) = run_tone(r, f);
            pass(
                &mut fig,
                db(fit_tones(&y, fout, first, &[f])[0].0 / AMPLITUDE),
            );
            f += 2.0 * step_hz;
        }
        let (lo, hi) = (fout / 2.0, fin / 2.0);
        let mut f = lo;
        while f <= hi + 1e-9 {
            // A tone folding onto DC or Nyquist has no sine term; its fitted size would depend on
            // phase, so measure 5 Hz beside it instead.
            let edge = fold(f, fout);
            let probe = if edge < 1.0 || edge > fout / 2.0 - 1.0 {
                if f + 5.0 > hi { f - 5.0 } else { f + 5.0 }
            } else {
                f
            };
            let (y, first) = run_tone(r, probe);
            let level = db(fit_tones(&y, fout, first, &[fold(probe, fout)])[0].0 / AMPLITUDE);
            if level > fig.stop_worst_db {
                fig.stop_worst_db = level;
                fig.stop_worst_hz = probe;
            }
            if probe >= fout - PASSBAND_EDGE_HZ {
                fig.stop_worst_narrow_db = fig.stop_worst_narrow_db.max(level);
            }
            f += step_hz;
        }
    }

    // Group delay from the phase slope between tones 5 Hz apart (unambiguous up to 200 ms).
    for f in [500.0, 1000.0, 2000.0, 3000.0] {
        let p1 = phase_of(r, f);
        let p2 = phase_of(r, f + 5.0);
        let dphi = (p2 - p1 + PI).rem_euclid(2.0 * PI) - PI;
        let delay_ms = dphi / (2.0 * PI * 5.0) * 1000.0;
        fig.group_delay_ms = fig.group_delay_ms.max(delay_ms);
    }
    fig
}

/// Result of the end-to-end test of [`round_trip`].
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    /// SNR of the full path against the μ-law-only path, dB.
    pub snr_db: f64,
    /// For scale: SNR of the μ-law-only path against the original signal, dB.
    pub mulaw_only_snr_db: f64,
    /// Delay found by the alignment search, in 8 kHz samples.
    pub delay_samples: usize,
}

/// Length of the round-trip signal in 8 kHz samples (0.5 s).
const RT_LEN: usize = 4000;
/// Samples skipped at both ends so start-up and end effects stay out of the comparison.
const RT_MARGIN: usize = 400;

/// Speech-band multitone: 12 tones log-spaced over 300–3400 Hz with Schroeder phases (low crest
/// factor), about −15 dBFS RMS.
fn multitone(t: f64) -> f64 {
    const K: usize = 12;
    let amp = 5800.0 / (K as f64 / 2.0).sqrt();
    (0..K)
        .map(|k| {
            let f = 300.0 * (3400.0f64 / 300.0).powf(k as f64 / (K - 1) as f64);
            let phase = -PI * (k * k) as f64 / K as f64;
            amp * (2.0 * PI * f * t + phase).cos()
        })
        .sum()
}

/// Zeroth-order modified Bessel function, for the Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let (mut term, mut sum) = (1.0, 1.0);
    for k in 1..40 {
        term *= (x / (2.0 * k as f64)).powi(2);
        sum += term;
    }
    sum
}

/// Stand-in for Gemini echoing the caller: band-limited (Kaiser-windowed sinc, ±32 taps, f64,
/// centred so it adds no delay) interpolation of 16 kHz PCM to 24 kHz.
fn echo_16k_to_24k(pcm16k: &[i16]) -> Vec<i16> {
    const HALF: isize = 32;
    let beta = 9.0;
    let norm = bessel_i0(beta);
    let n_out = pcm16k.len() * 3 / 2;
    (0..n_out)
        .map(|m| {
            let u = m as f64 * 2.0 / 3.0;
            let base = u.floor() as isize;
            let mut acc = 0.0;
            for k in base - HALF + 1..=base + HALF {
                let Some(&s) = usize::try_from(k).ok().and_then(|k| pcm16k.get(k)) else {
                    continue;
                };
                let d = u - k as f64;
                let sinc = if d == 0.0 {
                    1.0
                } else {
                    (PI * d).sin() / (PI * d)
                };
                let r = d / HALF as f64;
                let w = if r.abs() < 1.0 {
                    bessel_i0(beta * (1.0 - r * r).sqrt()) / norm
                } else {
                    0.0
                };
                acc += f64::from(s) * sinc * w;
            }
            acc.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// End-to-end check of both directions.
///
/// Compares what a caller would hear back from an agent that repeats them exactly:
/// original → μ-law → [`Uplink`] (16 kHz) → echoed at 24 kHz → [`Downlink`] → μ-law decode,
/// against the μ-law-only path (original → μ-law → decode), i.e. what the resamplers and the
/// second μ-law encoding add on top of the unavoidable first one. Both directions' delays are
/// removed by an alignment search (which must find their sum). The Downlink is fed in uneven,
/// odd-sized pushes.
pub fn round_trip() -> RoundTrip {
    let original: Vec<f64> = (0..RT_LEN).map(|n| multitone(n as f64 / 8000.0)).collect();
    let mulaw: Vec<u8> = original
        .iter()
        .map(|&s| codec::encode(s.round() as i16))
        .collect();
    let mulaw_only: Vec<f64> = mulaw.iter().map(|&b| f64::from(codec::decode(b))).collect();

    let mut up = Uplink::new();
    let mut bytes16 = Vec::new();
    for frame in mulaw.chunks(PHONE_FRAME_BYTES) {
        up.push(frame, &mut bytes16);
    }
    let pcm16: Vec<i16> = bytes16
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let bytes24: Vec<u8> = echo_16k_to_24k(&pcm16)
        .into_iter()
        .flat_map(i16::to_le_bytes)
        .collect();

    let mut down = Downlink::new();
    let mut rest = &bytes24[..];
    for size in [1usize, 961, 3, 1920, 7].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (*size).min(rest.len());
        down.push(&rest[..n]);
        rest = &rest[n..];
    }
    down.finish_turn();
    let mut heard = Vec::new();
    while let Some(frame) = down.pop_frame() {
        heard.extend(frame.iter().map(|&b| f64::from(codec::decode(b))));
    }

    let snr = |reference: &[f64], test: &[f64], lag: usize| -> f64 {
        let (mut sig, mut err) = (0.0, 0.0);
        let span = reference
            .iter()
            .enumerate()
            .take(RT_LEN - RT_MARGIN)
            .skip(RT_MARGIN);
        for (n, &r) in span {
            let t = test.get(n + lag).copied().unwrap_or(0.0);
            sig += r * r;
            err += (t - r).powi(2);
        }
        10.0 * (sig / err.max(1e-12)).log10()
    };
    let (delay, snr_db) = (0..RT_MARGIN)
        .map(|lag| (lag, snr(&mulaw_only, &heard, lag)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::NEG_INFINITY));
    RoundTrip {
        snr_db,
        mulaw_only_snr_db: snr(&original, &mulaw_only, 0),
        delay_samples: delay,
    }
}

/// Best-of-5 average wall time of `f` over `iters` calls, in ns.
fn time_ns(iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 4 {
        f();
    }
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Per-20 ms-frame cost of the shipped resamplers alone: (uplink ns, downlink ns).
pub fn frame_costs_ns() -> (f64, f64) {
    let x: Vec<f32> = (0..480).map(|n| (n as f32 * 0.37).sin() * 8000.0).collect();
    let mut out = Vec::with_capacity(1024);
    let mut up = Upsampler2x::new();
    let up_ns = time_ns(2000, || {
        out.clear();
        up.process(&x[..160], &mut out);
        std::hint::black_box(&out);
    });
    let mut down = Downsampler3x::new();
    let down_ns = time_ns(2000, || {
        out.clear();
        down.process(&x, &mut out);
        std::hint::black_box(&out);
    });
    (up_ns, down_ns)
}

/// Measures and prints every fidelity figure of the audio path, one per line with its goal and
/// PASS/FAIL (`gemini-phone audio-report`).
pub fn fidelity_report() -> String {
    let mut s = String::new();
    let decode_ok = (0..=255u8)
        .filter(|&b| codec::decode(b) == codec::reference::reference_decode(b))
        .count();
    let _ = writeln!(
        s,
        "mu-law decode vs G.711 reference: {decode_ok}/256 codes identical (goal 256) {}",
        verdict(decode_ok == 256)
    );
    let encode_ok = (i16::MIN..=i16::MAX)
        .filter(|&v| codec::encode(v) == codec::reference::reference_encode(v))
        .count();
    let _ = writeln!(
        s,
        "mu-law encode vs G.711 reference: {encode_ok}/65536 values identical (goal 65536) {}",
        verdict(encode_ok == 65536)
    );

    let up = measure("uplink 8->16 kHz", &mut Upsampler2x::new(), 25.0);
    let down = measure("downlink 24->8 kHz", &mut Downsampler3x::new(), 25.0);
    s.push_str(&up.lines());
    s.push_str(&down.lines());

    let rt = round_trip();
    let _ = writeln!(
        s,
        "round trip (mu-law -> uplink -> 24 kHz echo -> downlink -> mu-law) SNR vs mu-law only: {:.1} dB \
         at {} samples delay (goal >= {ROUND_TRIP_GOAL_DB} dB) {}",
        rt.snr_db,
        rt.delay_samples,
        verdict(rt.snr_db >= ROUND_TRIP_GOAL_DB)
    );
    let _ = writeln!(
        s,
        "  (for scale: mu-law alone vs the original signal: {:.1} dB)",
        rt.mulaw_only_snr_db
    );

    let (up_ns, down_ns) = frame_costs_ns();
    for (name, ns) in [("uplink", up_ns), ("downlink", down_ns)] {
        let _ = writeln!(
            s,
            "{name} resampler cost per 20 ms frame: {ns:.0} ns (goal <= {FRAME_COST_GOAL_NS} ns; \
             meaningful in release builds only) {}",
            verdict(ns <= FRAME_COST_GOAL_NS)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_amplitude_and_phase_including_dc_and_nyquist() {
        let fs = 8000.0;
        let y: Vec<f64> = (0..800)
            .map(|n| {
                let n = (n + 100) as f64;
                0.25 + 0.5 * (2.0 * PI * 1000.0 * n / fs - 0.3).cos()
                    + 0.125 * (PI * n).cos()
                    + 1e-3 * (2.0 * PI * 1050.0 * n / fs).sin()
            })
            .collect();
        let fit = fit_tones(&y, fs, 100, &[0.0, 1000.0, 4000.0, 1050.0]);
        assert!((fit[0].0 - 0.25).abs() < 1e-9);
        assert!((fit[1].0 - 0.5).abs() < 1e-9 && (fit[1].1 - 0.3).abs() < 1e-9);
        assert!((fit[2].0 - 0.125).abs() < 1e-9);
        assert!((fit[3].0 - 1e-3).abs() < 1e-9);
    }

    #[test]
    fn fold_maps_to_phone_band() {
        assert_eq!(fold(5000.0, 8000.0), 3000.0);
        assert_eq!(fold(11_000.0, 8000.0), 3000.0);
        assert_eq!(fold(8005.0, 8000.0), 5.0);
    }

    #[test]
    fn uplink_resampler_meets_tone_goals() {
        let fig = measure("up", &mut Upsampler2x::new(), 50.0);
        assert!(fig.passband_ripple_db() <= 0.05, "{fig:?}");
        assert!(fig.stop_worst_db <= -65.0, "{fig:?}");
        assert!(
            (fig.group_delay_ms - Upsampler2x::DELAY_MS).abs() < 0.01,
            "{fig:?}"
        );
        assert!(fig.meets_goals());
    }

    #[test]
    fn uplink_named_tones_and_their_images() {
        // The tones named in the acceptance criteria, each with its image at 8000 - f.
        let mut up = Upsampler2x::new();
        for f in [300.0, 1000.0, 2000.0, 3000.0, 3400.0] {
            let (y, first) = run_tone(&mut up, f);
            let fit = fit_tones(&y, 16_000.0, first, &[f, 8000.0 - f]);
            let gain = db(fit[0].0 / AMPLITUDE);
            let image = db(fit[1].0 / AMPLITUDE);
            assert!(gain.abs() <= 0.5, "{f} Hz: gain {gain} dB");
            assert!(image <= -60.0, "{f} Hz: image {image} dB");
        }
    }

    #[test]
    fn downlink_resampler_meets_tone_goals() {
        let fig = measure("down", &mut Downsampler3x::new(), 50.0);
        assert!(fig.passband_ripple_db() <= 0.05, "{fig:?}");
        // The whole 4-12 kHz, not only the 4.6-12 kHz that folds into the passband.
        assert!(fig.stop_worst_db <= -65.0, "{fig:?}");
        assert!(fig.stop_worst_narrow_db <= -65.0, "{fig:?}");
        assert!(
            (fig.group_delay_ms - Downsampler3x::DELAY_MS).abs() < 0.01,
            "{fig:?}"
        );
        assert!(fig.meets_goals());
    }

    #[test]
    fn round_trip_snr_and_delay() {
        let rt = round_trip();
        assert!(rt.snr_db >= ROUND_TRIP_GOAL_DB, "{rt:?}");
        let expected = (Upsampler2x::DELAY_MS + Downsampler3x::DELAY_MS) * 8.0;
        assert_eq!(rt.delay_samples as f64, expected, "{rt:?}");
    }
}
