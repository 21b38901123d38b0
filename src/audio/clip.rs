//! Short recorded clips played to the caller outside a Gemini session: the apology a caller
//! hears when the agent cannot be reached. Clips are converted once, at start-up, to what the
//! phone plays (μ-law, 8 kHz, mono), so playing one costs no more than forwarding frames.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::codec;

/// The built-in apology: "Sorry, we can't take your call right now. Please try again
/// later." (espeak-ng, normalised to -3 dBFS, μ-law 8 kHz).
const BUILTIN_FALLBACK: &[u8] = include_bytes!("../../assets/fallback.ulaw");
/// The phone's sample rate.
const PHONE_RATE: u32 = 8_000;
/// Longest clip accepted: an apology, not an announcement.
const MAX_CLIP: Duration = Duration::from_secs(30);

/// Why a clip file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// Not a WAV file we can read.
    #[error("{0} (use a PCM or float WAV file)")]
    Wav(#[from] hound::Error),
    /// Audio of a shape we do not convert.
    #[error("{0}")]
    Unsupported(String),
    /// No audio at all.
    #[error("the file holds no audio")]
    Empty,
    /// Longer than [`MAX_CLIP`].
    #[error("the clip lasts {0:.1} s; keep it under 30 s")]
    TooLong(f64),
}

/// A clip ready for the phone: μ-law 8 kHz mono.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip(Arc<[u8]>);

impl Clip {
    /// The apology that ships in the binary.
    pub fn builtin_fallback() -> Clip {
        Clip(Arc::from(BUILTIN_FALLBACK))
    }

    /// Reads a WAV file (PCM 8–32 bit or 32-bit float, any rate, any channel count) and
    /// converts it for the phone.
    pub fn from_wav_file(path: &Path) -> Result<Clip, ClipError> {
        Self::from_wav(hound::WavReader::open(path)?)
    }

    /// Converts a WAV stream for the phone.
    pub fn from_wav<R: std::io::Read>(reader: hound::WavReader<R>) -> Result<Clip, ClipError> {
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let interleaved = read_samples(reader)?;
        let mono: Vec<f32> = interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect();
        if mono.is_empty() {
            return Err(ClipError::Empty);
        }
        let seconds = mono.len() as f64 / f64::from(spec.sample_rate);
        if seconds > MAX_CLIP.as_secs_f64() {
            return Err(ClipError::TooLong(seconds));
        }
        let at_8k = resample(&mono, spec.sample_rate)?;
        let mulaw: Vec<u8> = at_8k
            .iter()
            .map(|&s| codec::encode((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16))
            .collect();
        Ok(Clip(Arc::from(mulaw)))
    }

    /// The clip as μ-law bytes at 8 kHz.
    pub fn mulaw(&self) -> &[u8] {
        &self.0
    }

    /// How long it plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.0.len() as f64 / f64::from(PHONE_RATE))
    }

    /// A cheap handle on the same bytes.
    pub fn share(&self) -> Arc<[u8]> {
        Arc::clone(&self.0)
    }
}

/// Every sample as a float in [-1, 1], interleaved.
fn read_samples<R: std::io::Read>(reader: hound::WavReader<R>) -> Result<Vec<f32>, ClipError> {
    let spec = reader.spec();
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => Ok(reader
            .into_samples::<f32>()
            .collect::<Result<Vec<_>, _>>()?),
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = (1u64 << (bits - 1)) as f32;
            Ok(reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<Vec<_>, _>>()?)
        }
        (format, bits) => Err(ClipError::Unsupported(format!(
            "{bits}-bit {format:?} samples are not supported; use 16-bit PCM"
        ))),
    }
}

/// `samples` at `rate` converted to 8 kHz (rubato's FFT resampler; this runs once).
fn resample(samples: &[f32], rate: u32) -> Result<Vec<f32>, ClipError> {
    if rate == PHONE_RATE {
        return Ok(samples.to_vec());
    }
    let unsupported = |e: &dyn std::fmt::Display| {
        ClipError::Unsupported(format!("cannot convert {rate} Hz audio to 8 kHz: {e}"))
    };
    let mut resampler =
        Fft::<f32>::new(rate as usize, PHONE_RATE as usize, 1024, 1, FixedSync::Both)
            .map_err(|e| unsupported(&e))?;
    let needed = resampler.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0f32; needed];
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| unsupported(&e))?;
    let mut output = InterleavedSlice::new_mut(&mut out, 1, needed).map_err(|e| unsupported(&e))?;
    let (_, produced) = resampler
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| unsupported(&e))?;
    out.truncate(produced);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, seconds: f32, freq: f32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
        let frames = (rate as f32 * seconds) as usize;
        for i in 0..frames {
            let v = (i as f32 * freq * std::f32::consts::TAU / rate as f32).sin() * 12_000.0;
            for _ in 0..channels {
                writer.write_sample(v as i16).unwrap();
            }
        }
        writer.finalize().unwrap();
        bytes.into_inner()
    }

    fn clip(bytes: &[u8]) -> Result<Clip, ClipError> {
        Clip::from_wav(hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap())
    }

    #[test]
    fn the_builtin_apology_is_a_few_seconds_of_speech() {
        let clip = Clip::builtin_fallback();
        let seconds = clip.duration().as_secs_f64();
        assert!((2.0..8.0).contains(&seconds), "{seconds} s");
        let loud = clip
            .mulaw()
            .iter()
            .filter(|&&b| codec::decode(b).unsigned_abs() > 1_000)
            .count();
        assert!(loud > clip.mulaw().len() / 10, "mostly silence");
    }

    #[test]
    fn any_rate_and_channel_count_becomes_8k_mono_of_the_same_length() {
        for (rate, channels) in [(8_000, 1), (16_000, 1), (44_100, 2), (48_000, 2)] {
            let clip = clip(&wav(rate, channels, 1.0, 440.0)).unwrap();
            let seconds = clip.duration().as_secs_f64();
            assert!((0.95..1.05).contains(&seconds), "{rate} Hz: {seconds} s");
            // The tone survives: its level is about what was written (12000 of 32767).
            let pcm: Vec<i16> = clip.mulaw().iter().map(|&b| codec::decode(b)).collect();
            let peak = pcm[800..7_200]
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap();
            assert!((10_500..13_500).contains(&peak), "{rate} Hz: peak {peak}");
        }
    }

    #[test]
    fn unusable_files_are_refused_with_a_reason() {
        assert!(matches!(
            clip(&wav(8_000, 1, 0.0, 440.0)),
            Err(ClipError::Empty)
        ));
        assert!(matches!(
            clip(&wav(8_000, 1, 31.0, 440.0)),
            Err(ClipError::TooLong(_))
        ));
        let not_wav = Clip::from_wav_file(Path::new("Cargo.toml")).unwrap_err();
        assert!(not_wav.to_string().contains("WAV"), "{not_wav}");
    }
}
