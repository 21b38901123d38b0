//! Where the caller stopped speaking: a cheap end-of-speech (endpoint) detector on the
//! caller's 8 kHz μ-law, used to time how long callers wait for the agent.
//!
//! # The algorithm
//!
//! The audio is cut into **5 ms blocks** (40 samples). For each block the detector computes
//! its power (mean square of the decoded samples) and its **zero-crossing rate** (sign
//! changes per sample), then classifies it:
//!
//! - **speech** when its power is at least [`LOUD_OVER_FLOOR`] (9 dB) above the noise floor:
//!   vowels and voiced consonants, which carry most of speech's energy;
//! - **speech** too when its power is only [`SOFT_OVER_FLOOR`] (4 dB) above the floor but it
//!   crosses zero often ([`FRICATIVE_ZCR`], and clearly more often than the line noise does):
//!   the hiss of fricatives (`s`, `f`, `sh`), which is weak but high-pitched. Without this rule
//!   a turn ending in "yes" would end at the vowel, up to a tenth of a second early;
//! - never speech below [`MIN_SPEECH_DBFS`], however quiet the line: near digital silence every
//!   tiny noise would otherwise be "far above the floor".
//!
//! The **noise floor** adapts by *minimum statistics*: the floor is the lowest 20 ms power
//! seen over the last four seconds (kept as eight half-second minima, so no per-frame
//! allocation or sort), times a small bias because a minimum of noisy measurements sits
//! below their mean. Speech has pauses between words far more often than every four
//! seconds, so the minimum finds the line noise under it; and when the caller moves
//! somewhere louder the floor follows within four seconds instead of mistaking the new noise
//! for endless speech.
//!
//! A **turn** starts at the first speech block. It ends once [`HANGOVER`] (250 ms) passes
//! without a speech block, so the gaps between syllables and words (typically 50–200 ms) do
//! not split it; a turn with less than [`MIN_SPEECH`] (100 ms) of speech in all is dropped as
//! a click, a cough or a burst of line noise. The end is reported as the moment the last
//! speech block ended — when the caller stopped, not when the hangover ran out — stamped from
//! the arrival time of the frame that carried it (see [`EndpointDetector::push`]), so late or
//! bunched frames during the hangover do not move it.
//!
//! The floor starts as the lowest power heard so far, so a caller who speaks from the very
//! first frame is heard from their first pause on (before the greeting, which is timed from
//! the stream's start anyway).
//!
//! The detector does no I/O and reads no clock: frames come in with their arrival time, turn
//! ends come out. Per frame it costs a table lookup, a multiply-add and a compare per sample.

use std::time::{Duration, Instant};

use super::codec;

/// Samples per analysis block: 5 ms at 8 kHz, fine enough to place an end within ±5 ms.
const BLOCK_SAMPLES: u32 = 40;
/// Blocks per noise-floor measurement (20 ms): longer than a block so one measurement of
/// steady noise varies little, which keeps its minimum close to the noise's true level.
const FLOOR_BLOCKS: u32 = 4;
/// Floor measurements per minimum kept: 25 × 20 ms = half a second.
const SUB_WINDOW_MEASUREMENTS: u32 = 25;
/// Half-second minima kept: the floor is the lowest power of the last 4 s.
const SUB_WINDOWS: usize = 8;

/// The minimum of several noisy power measurements of steady noise sits below their mean;
/// this factor (2 dB) brings it back up, so the thresholds below are relative to the noise's
/// mean level.
const FLOOR_BIAS: f32 = 1.58;
/// A block this far above the floor (9 dB, as a power ratio) is speech.
pub const LOUD_OVER_FLOOR: f32 = 7.94;
/// A block this far above the floor (4 dB) is speech if it also crosses zero often.
pub const SOFT_OVER_FLOOR: f32 = 2.51;
/// Zero crossings per sample from which a weak block sounds like a fricative (a 1.2 kHz
/// dominant frequency; voiced speech at 8 kHz crosses about 0.05–0.2 times per sample).
pub const FRICATIVE_ZCR: f32 = 0.3;
/// A fricative must also cross zero this much more often than the line noise.
const FRICATIVE_ZCR_OVER_NOISE: f32 = 0.1;
/// How fast the line noise's zero-crossing rate is learnt (per non-speech block).
const NOISE_ZCR_RATE: f32 = 0.02;
/// Zero-crossing rate assumed for the line noise until some has been heard.
const INITIAL_NOISE_ZCR: f32 = 0.2;

/// Nothing quieter than this (dBFS) is speech, however quiet the line.
pub const MIN_SPEECH_DBFS: f32 = -55.0;
/// The floor never drops below this (dBFS), so digital silence does not make it zero.
const MIN_FLOOR_DBFS: f32 = -75.0;

/// Non-speech that must follow the last speech block before a turn ends.
pub const HANGOVER: Duration = Duration::from_millis(250);
/// Speech a turn must contain in all to count.
pub const MIN_SPEECH: Duration = Duration::from_millis(100);

/// Samples per second of the phone audio.
const RATE: u32 = 8_000;
/// Microseconds per sample at 8 kHz.
const MICROS_PER_SAMPLE: u64 = 125;

/// The 0 dBFS power reference: the mean square of a full-scale square wave, 32768².
const FULL_SCALE_POWER: f32 = 32_768.0 * 32_768.0;

/// A caller's turn that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnEnd {
    /// When the caller stopped speaking (the end of the last speech block).
    pub at: Instant,
    /// How much speech the turn held.
    pub speech: Duration,
}

/// The turn being heard, if any.
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// Speech blocks heard in the turn.
    speech_blocks: u32,
    /// Non-speech blocks since the last speech block (the hangover so far).
    quiet_blocks: u32,
    /// When the last speech block ended.
    last_speech_end: Instant,
}

/// The noise floor by minimum statistics (see the module documentation).
#[derive(Debug, Clone)]
struct NoiseFloor {
    /// Lowest 20 ms power of each of the last [`SUB_WINDOWS`] half-seconds.
    minima: [f32; SUB_WINDOWS],
    next: usize,
    /// Lowest 20 ms power of the half-second being measured.
    current_min: f32,
    measurements: u32,
    /// Lowest of `minima` (kept so the floor is not searched per block).
    window_min: f32,
    /// Power summed over the blocks of the 20 ms being measured.
    sum: f32,
    blocks: u32,
    /// The floor: mean block power of the line noise, as estimated.
    power: f32,
}

impl NoiseFloor {
    fn new() -> Self {
        Self {
            // Unknown at first: the floor is the lowest power heard so far.
            minima: [f32::INFINITY; SUB_WINDOWS],
            next: 0,
            current_min: f32::INFINITY,
            measurements: 0,
            window_min: f32::INFINITY,
            sum: 0.0,
            blocks: 0,
            power: dbfs_to_power(MIN_SPEECH_DBFS),
        }
    }

    /// Adds one block's mean power; the floor moves once per 20 ms.
    fn add(&mut self, block_power: f32) {
        self.sum += block_power;
        self.blocks += 1;
        if self.blocks < FLOOR_BLOCKS {
            return;
        }
        let measured = self.sum / FLOOR_BLOCKS as f32;
        self.sum = 0.0;
        self.blocks = 0;
        self.current_min = self.current_min.min(measured);
        self.measurements += 1;
        if self.measurements == SUB_WINDOW_MEASUREMENTS {
            self.minima[self.next] = self.current_min;
            self.next = (self.next + 1) % SUB_WINDOWS;
            self.window_min = self.minima.iter().copied().fold(f32::INFINITY, f32::min);
            self.current_min = f32::INFINITY;
            self.measurements = 0;
        }
        let lowest = self.window_min.min(self.current_min);
        self.power = (lowest * FLOOR_BIAS).max(dbfs_to_power(MIN_FLOOR_DBFS));
    }
}

/// Finds where the caller's turns end; one per call, fed every caller frame in order.
#[derive(Debug, Clone)]
pub struct EndpointDetector {
    floor: NoiseFloor,
    noise_zcr: f32,
    /// Squares summed over the block being filled.
    block_energy: u64,
    block_crossings: u32,
    block_samples: u32,
    /// Whether the previous sample was negative (for zero crossings across frames).
    previous_negative: bool,
    turn: Option<Turn>,
    min_speech_power: f32,
}

impl Default for EndpointDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointDetector {
    /// A detector that has heard nothing yet.
    pub fn new() -> Self {
        Self {
            floor: NoiseFloor::new(),
            noise_zcr: INITIAL_NOISE_ZCR,
            block_energy: 0,
            block_crossings: 0,
            block_samples: 0,
            previous_negative: false,
            turn: None,
            min_speech_power: dbfs_to_power(MIN_SPEECH_DBFS),
        }
    }

    /// Analyses one payload of μ-law (any length; providers send 160 bytes, 20 ms) that
    /// arrived at `arrived`, taken as the time its last sample was spoken: a provider sends a
    /// frame once it has been captured. Returns the turn that ended within it, if one did.
    pub fn push(&mut self, mulaw: &[u8], arrived: Instant) -> Option<TurnEnd> {
        let mut ended = None;
        let mut left = mulaw.len() as u64;
        for &byte in mulaw {
            left -= 1;
            let sample = i32::from(codec::decode(byte));
            let negative = sample < 0;
            self.block_crossings += u32::from(negative != self.previous_negative);
            self.previous_negative = negative;
            self.block_energy += (sample * sample) as u64;
            self.block_samples += 1;
            if self.block_samples == BLOCK_SAMPLES {
                // The block ends `left` samples before the payload's last one.
                let end = arrived
                    .checked_sub(Duration::from_micros(left * MICROS_PER_SAMPLE))
                    .unwrap_or(arrived);
                if let Some(turn) = self.close_block(end) {
                    ended = Some(turn);
                }
            }
        }
        ended
    }

    /// True while the caller is speaking: the latest block was speech.
    pub fn speaking(&self) -> bool {
        self.turn.is_some_and(|turn| turn.quiet_blocks == 0)
    }

    /// Ends the turn now if the caller has stopped speaking but the hangover has not run
    /// out yet (the agent started answering within it, which settles that the turn is
    /// over). Returns `None` when no turn is under way, it is too short to count, or the
    /// caller is still speaking.
    pub fn end_turn_early(&mut self) -> Option<TurnEnd> {
        let turn = self.turn?;
        if turn.quiet_blocks == 0 {
            return None;
        }
        self.turn = None;
        counted(turn)
    }

    /// Classifies the block just filled, which ended at `end`, and moves the turn along.
    fn close_block(&mut self, end: Instant) -> Option<TurnEnd> {
        let power = self.block_energy as f32 / BLOCK_SAMPLES as f32;
        let zcr = self.block_crossings as f32 / BLOCK_SAMPLES as f32;
        self.block_energy = 0;
        self.block_crossings = 0;
        self.block_samples = 0;

        let speech = self.is_speech(power, zcr);
        self.floor.add(power);
        if speech {
            let turn = self.turn.get_or_insert(Turn {
                speech_blocks: 0,
                quiet_blocks: 0,
                last_speech_end: end,
            });
            turn.speech_blocks += 1;
            turn.quiet_blocks = 0;
            turn.last_speech_end = end;
            return None;
        }
        let Some(turn) = &mut self.turn else {
            // Only blocks outside any turn teach what the line noise sounds like.
            self.noise_zcr += (zcr - self.noise_zcr) * NOISE_ZCR_RATE;
            return None;
        };
        turn.quiet_blocks += 1;
        if turn.quiet_blocks < blocks_in(HANGOVER) {
            return None;
        }
        let turn = *turn;
        self.turn = None;
        counted(turn)
    }

    fn is_speech(&self, power: f32, zcr: f32) -> bool {
        if power < self.min_speech_power {
            return false;
        }
        let floor = self.floor.power;
        power >= floor * LOUD_OVER_FLOOR
            || (power >= floor * SOFT_OVER_FLOOR
                && zcr >= FRICATIVE_ZCR
                && zcr >= self.noise_zcr + FRICATIVE_ZCR_OVER_NOISE)
    }
}

/// The turn's end, if it held enough speech to count.
fn counted(turn: Turn) -> Option<TurnEnd> {
    (turn.speech_blocks >= blocks_in(MIN_SPEECH)).then(|| TurnEnd {
        at: turn.last_speech_end,
        speech: Duration::from_micros(
            u64::from(turn.speech_blocks * BLOCK_SAMPLES) * MICROS_PER_SAMPLE,
        ),
    })
}

/// Whole blocks in `span`.
const fn blocks_in(span: Duration) -> u32 {
    (span.as_millis() as u32 * RATE / 1_000) / BLOCK_SAMPLES
}

/// The mean square of 16-bit samples at `dbfs`.
fn dbfs_to_power(dbfs: f32) -> f32 {
    FULL_SCALE_POWER * 10f32.powf(dbfs / 10.0)
}

#[cfg(test)]
mod tests;
