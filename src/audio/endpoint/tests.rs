//! The detector against synthetic speech whose end is known to the sample: voiced syllables
//! (harmonics of a gliding pitch under a syllable envelope), fricative noise bursts, the gaps
//! between them, and line noise at several signal-to-noise ratios.

use super::*;

/// How far a detected end may be from the true one.
const TOLERANCE: Duration = Duration::from_millis(20);
/// Samples in one provider frame.
const FRAME: usize = 160;

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Roughly Gaussian, unit variance.
    fn gaussian(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }
}

/// One piece of an utterance.
#[derive(Clone, Copy)]
enum Piece {
    /// A voiced syllable: `ms` long at pitch `f0` Hz.
    Voiced { ms: u32, f0: f32 },
    /// A fricative (`s`, `f`): high-pitched noise, 10 dB below the vowels.
    Fricative { ms: u32 },
    /// Nothing: the pause between syllables or words.
    Gap { ms: u32 },
}

fn samples(ms: u32) -> usize {
    (ms * 8) as usize
}

/// A raised-cosine fade of `ramp` samples at both ends of a piece `n` samples long.
fn envelope(i: usize, n: usize, ramp: usize) -> f32 {
    let edge = i.min(n - 1 - i);
    if edge >= ramp {
        1.0
    } else {
        0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / ramp as f32).cos()
    }
}

/// The utterance at unit scale, and which of its samples are sound (not gap).
fn utterance(pieces: &[Piece], noise: &mut Noise) -> (Vec<f32>, Vec<bool>) {
    let mut out = Vec::new();
    let mut sounding = Vec::new();
    let mut phase = 0.0f32;
    let mut previous = 0.0f32;
    for piece in pieces {
        match *piece {
            Piece::Voiced { ms, f0 } => {
                let n = samples(ms);
                for i in 0..n {
                    // The pitch falls by a tenth over the syllable, as it does in speech.
                    let pitch = f0 * (1.0 - 0.1 * i as f32 / n as f32);
                    phase += std::f32::consts::TAU * pitch / 8_000.0;
                    let harmonics = (1..=3_400 / pitch as usize)
                        .map(|k| (k as f32 * phase).sin() / k as f32)
                        .sum::<f32>();
                    // A 5 Hz tremble of loudness inside the syllable.
                    let tremble =
                        0.85 + 0.15 * (std::f32::consts::TAU * 5.0 * i as f32 / 8_000.0).sin();
                    out.push(harmonics * tremble * envelope(i, n, samples(15)));
                    sounding.push(true);
                }
            }
            Piece::Fricative { ms } => {
                let n = samples(ms);
                for i in 0..n {
                    let white = noise.gaussian();
                    // A first difference: the spectrum rises towards 4 kHz, like a hiss.
                    let hiss = (white - previous) * 0.5;
                    previous = white;
                    out.push(0.22 * hiss * envelope(i, n, samples(10)));
                    sounding.push(true);
                }
            }
            Piece::Gap { ms } => {
                let n = samples(ms);
                out.extend(std::iter::repeat_n(0.0, n));
                sounding.extend(std::iter::repeat_n(false, n));
            }
        }
    }
    (out, sounding)
}

fn rms(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.fold((0.0f64, 0usize), |(s, n), v| (s + f64::from(v * v), n + 1));
    (sum / n.max(1) as f64).sqrt() as f32
}

/// Line noise: low-passed white noise (most line hiss sits below 1 kHz), with a click every
/// `click_every` samples if given.
fn line_noise(n: usize, level: f32, noise: &mut Noise, click_every: Option<usize>) -> Vec<f32> {
    let mut state = 0.0f32;
    let mut raw: Vec<f32> = (0..n)
        .map(|_| {
            state = 0.8 * state + noise.gaussian();
            state
        })
        .collect();
    let scale = level / rms(raw.iter().copied());
    raw.iter_mut().for_each(|s| *s *= scale);
    if let Some(every) = click_every {
        for start in (every / 2..n).step_by(every) {
            for (k, s) in raw[start..(start + 16).min(n)].iter_mut().enumerate() {
                *s += 20.0 * level * if k % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
    }
    raw
}

/// A call: `lead_ms` of line noise, the utterances each followed by `after_ms` of noise, at
/// `speech_dbfs` for the voiced sound and `snr_db` over the noise. Returns the μ-law and the
/// sample index at which each utterance ends.
fn call(
    utterances: &[&[Piece]],
    lead_ms: u32,
    after_ms: u32,
    speech_dbfs: f32,
    snr_db: f32,
    seed: u64,
) -> (Vec<u8>, Vec<usize>) {
    let mut noise = Noise(seed);
    let mut speech = vec![0.0f32; samples(lead_ms)];
    let mut ends = Vec::new();
    let mut sounding_all = vec![false; speech.len()];
    for pieces in utterances {
        let (voice, sounding) = utterance(pieces, &mut noise);
        speech.extend(voice);
        sounding_all.extend(sounding);
        ends.push(speech.len());
        speech.extend(std::iter::repeat_n(0.0, samples(after_ms)));
        sounding_all.extend(std::iter::repeat_n(false, samples(after_ms)));
    }
    let speech_rms = rms(speech
        .iter()
        .zip(&sounding_all)
        .filter(|(_, s)| **s)
        .map(|(v, _)| *v));
    let gain = 32_768.0 * 10f32.powf(speech_dbfs / 20.0) / speech_rms;
    let noise_level = 32_768.0 * 10f32.powf((speech_dbfs - snr_db) / 20.0);
    let background = line_noise(speech.len(), noise_level, &mut noise, None);
    let mulaw = speech
        .iter()
        .zip(&background)
        .map(|(s, n)| codec::encode((s * gain + n).clamp(-32_768.0, 32_767.0) as i16))
        .collect();
    (mulaw, ends)
}

/// Feeds `mulaw` as 20 ms frames arriving in real time from `t0`; returns every turn end.
fn detect(mulaw: &[u8], t0: Instant) -> Vec<TurnEnd> {
    let mut detector = EndpointDetector::new();
    mulaw
        .chunks(FRAME)
        .enumerate()
        .filter_map(|(k, frame)| {
            let arrived = t0 + Duration::from_millis(20 * (k as u64 + 1));
            detector.push(frame, arrived)
        })
        .collect()
}

fn at_sample(t0: Instant, index: usize) -> Instant {
    t0 + Duration::from_micros(index as u64 * 125)
}

fn error_ms(found: Instant, truth: Instant) -> f64 {
    if found >= truth {
        (found - truth).as_secs_f64() * 1e3
    } else {
        -((truth - found).as_secs_f64() * 1e3)
    }
}

/// "Hello, how are you": voiced syllables with short gaps, ending on a vowel.
const HELLO: &[Piece] = &[
    Piece::Voiced { ms: 140, f0: 180.0 },
    Piece::Gap { ms: 40 },
    Piece::Voiced { ms: 220, f0: 170.0 },
    Piece::Gap { ms: 150 },
    Piece::Voiced { ms: 160, f0: 190.0 },
    Piece::Gap { ms: 60 },
    Piece::Voiced { ms: 260, f0: 160.0 },
];
/// "Yes, it's six": ends on a fricative.
const YES: &[Piece] = &[
    Piece::Voiced { ms: 180, f0: 120.0 },
    Piece::Fricative { ms: 110 },
    Piece::Gap { ms: 120 },
    Piece::Voiced { ms: 100, f0: 115.0 },
    Piece::Fricative { ms: 90 },
    Piece::Gap { ms: 70 },
    Piece::Fricative { ms: 80 },
    Piece::Voiced { ms: 120, f0: 110.0 },
    Piece::Fricative { ms: 130 },
];
/// "Okay": a single long vowel glide.
const OKAY: &[Piece] = &[
    Piece::Voiced { ms: 120, f0: 210.0 },
    Piece::Gap { ms: 30 },
    Piece::Voiced { ms: 300, f0: 230.0 },
];

#[test]
fn the_end_is_found_within_20_ms_at_every_snr_and_level() {
    let t0 = Instant::now();
    let mut worst = 0.0f64;
    for (u, pieces) in [HELLO, YES, OKAY].iter().enumerate() {
        for snr in [35.0, 25.0, 15.0] {
            for level in [-20.0, -32.0] {
                for seed in 1..=3u64 {
                    let (mulaw, ends) =
                        call(&[pieces], 900, 1_000, level, snr, seed * 7 + u as u64);
                    let found = detect(&mulaw, t0);
                    let case = format!("utterance {u}, SNR {snr} dB, {level} dBFS, seed {seed}");
                    assert_eq!(found.len(), 1, "{case}: one turn, not {found:?}");
                    let error = error_ms(found[0].at, at_sample(t0, ends[0]));
                    worst = worst.max(error.abs());
                    assert!(
                        error.abs() <= TOLERANCE.as_secs_f64() * 1e3,
                        "{case}: end off by {error:.1} ms"
                    );
                }
            }
        }
    }
    println!("worst end error {worst:.1} ms");
}

#[test]
fn pauses_between_words_do_not_split_a_turn_and_longer_ones_do() {
    let t0 = Instant::now();
    // Two utterances 600 ms apart: two turns, each end in place.
    let (mulaw, ends) = call(&[HELLO, YES], 700, 600, -24.0, 25.0, 11);
    let found = detect(&mulaw, t0);
    assert_eq!(found.len(), 2, "{found:?}");
    for (turn, end) in found.iter().zip(&ends) {
        let error = error_ms(turn.at, at_sample(t0, *end));
        assert!(error.abs() <= 20.0, "end off by {error:.1} ms");
    }
    // The same words with 200 ms pauses between them: one turn.
    let long_gaps: Vec<Piece> = HELLO
        .iter()
        .map(|p| match p {
            Piece::Gap { .. } => Piece::Gap { ms: 200 },
            other => *other,
        })
        .collect();
    let (mulaw, ends) = call(&[&long_gaps], 700, 800, -24.0, 25.0, 12);
    let found = detect(&mulaw, t0);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(error_ms(found[0].at, at_sample(t0, ends[0])).abs() <= 20.0);
}

#[test]
fn silence_and_line_noise_alone_are_no_turn() {
    let t0 = Instant::now();
    let silence = vec![0xFFu8; 8_000 * 10];
    assert_eq!(detect(&silence, t0), []);
    for (level_dbfs, seed) in [(-70.0f32, 1u64), (-55.0, 2), (-40.0, 3), (-30.0, 4)] {
        let mut noise = Noise(seed);
        let level = 32_768.0 * 10f32.powf(level_dbfs / 20.0);
        // Ten seconds of hiss with a click of line crackle every 0.7 s.
        let hiss = line_noise(80_000, level, &mut noise, Some(5_600));
        let mulaw: Vec<u8> = hiss.iter().map(|s| codec::encode(*s as i16)).collect();
        assert_eq!(detect(&mulaw, t0), [], "line noise at {level_dbfs} dBFS");
    }
}

#[test]
fn on_a_digitally_silent_line_every_turn_is_found() {
    // A clean line (a muted phone, silence suppression): nothing but zeros between turns.
    let t0 = Instant::now();
    let mut noise = Noise(31);
    let mut mulaw = vec![0xFFu8; samples(500)];
    let mut ends = Vec::new();
    for pieces in [HELLO, YES, OKAY] {
        let (speech, sounding) = utterance(pieces, &mut noise);
        let level = rms(speech
            .iter()
            .zip(&sounding)
            .filter(|(_, s)| **s)
            .map(|(v, _)| *v));
        let gain = 32_768.0 * 10f32.powf(-26.0 / 20.0) / level;
        mulaw.extend(speech.iter().map(|s| codec::encode((s * gain) as i16)));
        ends.push(mulaw.len());
        mulaw.extend(std::iter::repeat_n(0xFF, samples(1_500)));
    }
    let found = detect(&mulaw, t0);
    assert_eq!(found.len(), 3, "{found:?}");
    for (turn, end) in found.iter().zip(ends) {
        assert!(
            error_ms(turn.at, at_sample(t0, end)).abs() <= 20.0,
            "{turn:?}"
        );
    }
}

#[test]
fn a_blip_shorter_than_the_minimum_is_no_turn() {
    let t0 = Instant::now();
    let blip: &[Piece] = &[Piece::Voiced { ms: 60, f0: 150.0 }];
    let (mulaw, _) = call(&[blip], 800, 800, -20.0, 30.0, 5);
    assert_eq!(detect(&mulaw, t0), []);
}

#[test]
fn a_louder_line_is_learnt_within_seconds() {
    let t0 = Instant::now();
    let mut noise = Noise(9);
    // Quiet line noise, then 25 dB louder for six seconds: at most one turn while the floor
    // catches up, and it ends within the four seconds the floor needs.
    let quiet = line_noise(
        16_000,
        32_768.0 * 10f32.powf(-65.0 / 20.0),
        &mut noise,
        None,
    );
    let loud = line_noise(
        48_000,
        32_768.0 * 10f32.powf(-40.0 / 20.0),
        &mut noise,
        None,
    );
    let mulaw: Vec<u8> = quiet
        .iter()
        .chain(&loud)
        .map(|s| codec::encode(*s as i16))
        .collect();
    let found = detect(&mulaw, t0);
    assert!(found.len() <= 1, "{found:?}");
    if let Some(turn) = found.first() {
        assert!(turn.at < at_sample(t0, 16_000 + 36_000), "{turn:?}");
    }
}

#[test]
fn an_answer_within_the_hangover_ends_the_turn_where_speech_stopped() {
    let t0 = Instant::now();
    let (mulaw, ends) = call(&[OKAY], 800, 1_000, -24.0, 30.0, 21);
    let mut detector = EndpointDetector::new();
    let frames: Vec<&[u8]> = mulaw.chunks(FRAME).collect();
    let arrival = |k: usize| t0 + Duration::from_millis(20 * (k as u64 + 1));
    // Up to 100 ms after the end: the hangover is still running.
    let last = ends[0] / FRAME + 5;
    for (k, frame) in frames[..last].iter().enumerate() {
        assert_eq!(detector.push(frame, arrival(k)), None);
        if k == ends[0] / FRAME - 10 {
            assert!(detector.speaking());
            assert_eq!(
                detector.end_turn_early(),
                None,
                "the caller is still speaking"
            );
        }
    }
    assert!(!detector.speaking());
    let turn = detector.end_turn_early().expect("the turn ends early");
    assert!(
        error_ms(turn.at, at_sample(t0, ends[0])).abs() <= 20.0,
        "{turn:?}"
    );
    assert_eq!(detector.end_turn_early(), None, "only once");
    // The rest of the hangover reports nothing more.
    for (k, frame) in frames.iter().enumerate().skip(last) {
        assert_eq!(detector.push(frame, arrival(k)), None);
    }
}
