//! In-band DTMF: keypad tones mixed into the agent's μ-law stream, so the agent can work a
//! phone menu on any provider (no provider-specific "send digits" command needed).
//!
//! Each key is the sum of one low-group and one high-group sine (ITU-T Q.23). Timing and
//! levels are chosen to be recognised by receivers built to Q.24: 100 ms of tone and 100 ms of
//! silence per key (receivers must accept 40 ms), the high tone 2 dB above the low one
//! ("twist", compensating the line's loss at higher frequencies), and both well inside
//! μ-law's range so nothing clips: −7.3 dBm0 and −5.3 dBm0.

use super::codec;

/// Tone length per key.
pub const TONE_MS: u32 = 100;
/// Silence after each key.
pub const GAP_MS: u32 = 100;
/// Most keys one request may send (6.4 s of tones): a menu choice or an account number,
/// not a flood that keeps the line busy.
pub const MAX_KEYS: usize = 32;

/// Low-group (row) frequencies, Hz.
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies, Hz.
const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad, row by row.
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Peak amplitudes as a fraction of full scale: 0.30 is −7.3 dBm0 and 0.38 is −5.3 dBm0
/// (a full-scale μ-law sine is +3.17 dBm0); together they peak at 0.68, below clipping.
const LOW_AMPLITUDE: f32 = 0.30;
const HIGH_AMPLITUDE: f32 = 0.38;
const SAMPLE_RATE: f32 = 8_000.0;

/// Why a key string was refused, worded for the model that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// Nothing to send.
    #[error("no keys given; send digits such as \"1\" or \"4021#\"")]
    Empty,
    /// More than [`MAX_KEYS`].
    #[error("{0} keys is too many; send at most {MAX_KEYS} at a time")]
    TooMany(usize),
    /// A character that is not a keypad key.
    #[error("`{0}` is not a keypad key; use 0-9, *, # and A-D")]
    NotAKey(char),
}

/// The keys in `digits` (spaces and dashes between them are allowed and dropped; `a`–`d`
/// are read as `A`–`D`).
pub fn parse_keys(digits: &str) -> Result<Vec<char>, KeysError> {
    let mut keys = Vec::new();
    for c in digits.chars().filter(|c| !matches!(c, ' ' | '-')) {
        let key = c.to_ascii_uppercase();
        if position(key).is_none() {
            return Err(KeysError::NotAKey(c));
        }
        keys.push(key);
    }
    match keys.len() {
        0 => Err(KeysError::Empty),
        n if n > MAX_KEYS => Err(KeysError::TooMany(n)),
        _ => Ok(keys),
    }
}

/// μ-law at 8 kHz for `keys`: each key's tone then its gap. The length is a whole number of
/// 20 ms frames.
pub fn tones(keys: &[char]) -> Vec<u8> {
    let tone_samples = samples(TONE_MS);
    let gap_samples = samples(GAP_MS);
    let mut pcm = Vec::with_capacity(keys.len() * (tone_samples + gap_samples));
    for &key in keys {
        let Some((row, column)) = position(key) else {
            continue;
        };
        let (low, high) = (ROWS[row], COLUMNS[column]);
        pcm.extend((0..tone_samples).map(|n| {
            let t = n as f32 / SAMPLE_RATE;
            let s = LOW_AMPLITUDE * (std::f32::consts::TAU * low * t).sin()
                + HIGH_AMPLITUDE * (std::f32::consts::TAU * high * t).sin();
            (s * f32::from(i16::MAX)) as i16
        }));
        pcm.extend(std::iter::repeat_n(0i16, gap_samples));
    }
    let mut mulaw = Vec::with_capacity(pcm.len());
    codec::encode_into(&pcm, &mut mulaw);
    mulaw
}

/// How long `keys` take to play.
pub fn duration(keys: usize) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(TONE_MS + GAP_MS) * keys as u64)
}

fn samples(ms: u32) -> usize {
    (SAMPLE_RATE as u32 * ms / 1000) as usize
}

/// Row and column of `key` on the keypad.
fn position(key: char) -> Option<(usize, usize)> {
    KEYPAD.iter().enumerate().find_map(|(row, keys)| {
        keys.iter()
            .position(|&k| k == key)
            .map(|column| (row, column))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::PHONE_FRAME_BYTES;

    /// Power of `freq` in `pcm` (Goertzel).
    fn power(pcm: &[f32], freq: f32) -> f32 {
        let coeff = 2.0 * (std::f32::consts::TAU * freq / SAMPLE_RATE).cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in pcm {
            let s = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    #[test]
    fn each_key_is_its_row_and_column_tone_and_nothing_else() {
        for (row, keys) in KEYPAD.iter().enumerate() {
            for (column, &key) in keys.iter().enumerate() {
                let audio = tones(&[key]);
                assert_eq!(audio.len() % PHONE_FRAME_BYTES, 0);
                let pcm: Vec<f32> = audio[..samples(TONE_MS)]
                    .iter()
                    .map(|&b| f32::from(codec::decode(b)))
                    .collect();
                let strongest = |freqs: &[f32; 4]| {
                    (0..4)
                        .max_by(|&a, &b| power(&pcm, freqs[a]).total_cmp(&power(&pcm, freqs[b])))
                        .unwrap()
                };
                assert_eq!(
                    (strongest(&ROWS), strongest(&COLUMNS)),
                    (row, column),
                    "{key}"
                );
                let gap = &audio[samples(TONE_MS)..];
                assert!(
                    gap.iter().all(|&b| codec::decode(b) == 0),
                    "{key}: silent gap"
                );
            }
        }
    }

    #[test]
    fn levels_survive_mu_law_without_clipping() {
        let pcm: Vec<i16> = tones(&['D']).iter().map(|&b| codec::decode(b)).collect();
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak < 24_000, "peak {peak}");
        assert!(peak > 18_000, "loud enough for a receiver: peak {peak}");
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(
            parse_keys("12-34 #a"),
            Ok(vec!['1', '2', '3', '4', '#', 'A'])
        );
        assert_eq!(parse_keys(" "), Err(KeysError::Empty));
        assert_eq!(parse_keys("12e"), Err(KeysError::NotAKey('e')));
        assert_eq!(
            parse_keys(&"1".repeat(MAX_KEYS + 1)),
            Err(KeysError::TooMany(MAX_KEYS + 1))
        );
        assert_eq!(duration(3), std::time::Duration::from_millis(600));
    }
}
