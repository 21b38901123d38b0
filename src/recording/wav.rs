//! The recording's file: a canonical 44-byte-header WAV (PCM, 16-bit, stereo, 8 kHz) written
//! as the call runs, readable at any moment and whole again after a crash.
//!
//! Our own small writer rather than `hound`'s: hound writes a data size of 0 until it is
//! finalized (a file cut short by SIGKILL then reads as empty), and it cannot re-open a file
//! whose header is unfinished to repair it. Here:
//! - at creation the sizes are the largest a WAV can declare, so a player reads to the end
//!   of the file whatever it holds (ffmpeg, browsers, sox and libsndfile all stop at the end
//!   of the file when the header promises more);
//! - about every second the exact size of what has been written replaces them, so even a
//!   strict reader (hound) reads a killed call up to its last second;
//! - at the end the sizes are exact; and [`repair`] sets them from the file's length for
//!   files a killed process left behind (run at start-up).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Samples a second, per channel.
pub const SAMPLE_RATE: u32 = 8_000;
/// Left the caller, right the agent.
pub const CHANNELS: u16 = 2;
/// Bytes of one stereo sample frame (two 16-bit samples).
pub const BLOCK_ALIGN: u32 = 4;
/// Bytes before the samples.
pub const HEADER_BYTES: u64 = 44;
/// Bytes of audio a second.
const BYTE_RATE: u32 = SAMPLE_RATE * BLOCK_ALIGN;
/// The largest data size a RIFF header can state, in whole sample frames.
const MAX_DATA_BYTES: u32 = (u32::MAX - 36) / BLOCK_ALIGN * BLOCK_ALIGN;
/// Buffered audio is written once it reaches this (200 ms): few system calls, little lost
/// to a SIGKILL.
const WRITE_BATCH_BYTES: usize = (BYTE_RATE / 5) as usize;
/// The header's sizes are brought up to date after this much more audio (1 s).
const HEADER_UPDATE_BYTES: u64 = BYTE_RATE as u64;

/// The 44-byte header for `data_bytes` of audio.
fn header(data_bytes: u32) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_bytes).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&BYTE_RATE.to_le_bytes());
    h[32..34].copy_from_slice(&(BLOCK_ALIGN as u16).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Whole sample frames of audio in a file of `file_len` bytes, as a header states them.
fn data_size_for(file_len: u64) -> u32 {
    let data =
        file_len.saturating_sub(HEADER_BYTES) / u64::from(BLOCK_ALIGN) * u64::from(BLOCK_ALIGN);
    u32::try_from(data)
        .unwrap_or(MAX_DATA_BYTES)
        .min(MAX_DATA_BYTES)
}

/// A recording being written.
pub struct WavWriter {
    file: File,
    /// Interleaved little-endian samples not yet written.
    buffer: Vec<u8>,
    /// Audio bytes in the file (not counting the buffer).
    written: u64,
    /// The data size the header states now (`None`: the "read to the end" maximum).
    stated: Option<u64>,
}

impl WavWriter {
    /// Creates `path` (never replacing a file) with a header that tells players to read to
    /// the end of the file.
    pub fn create(path: &Path) -> io::Result<WavWriter> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(&header(MAX_DATA_BYTES))?;
        Ok(WavWriter {
            file,
            buffer: Vec::with_capacity(WRITE_BATCH_BYTES),
            written: 0,
            stated: None,
        })
    }

    /// Appends interleaved 16-bit little-endian stereo samples; writes them out in batches.
    pub fn append(&mut self, interleaved: &[u8]) -> io::Result<()> {
        self.buffer.extend_from_slice(interleaved);
        if self.buffer.len() >= WRITE_BATCH_BYTES {
            self.write_buffer()?;
            if self.written - self.stated.unwrap_or(0) >= HEADER_UPDATE_BYTES {
                self.state_size()?;
            }
        }
        Ok(())
    }

    /// Seconds of audio appended so far.
    pub fn seconds(&self) -> f64 {
        (self.written + self.buffer.len() as u64) as f64 / f64::from(BYTE_RATE)
    }

    /// Writes what is buffered and sets the header's sizes exactly.
    pub fn finish(mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.state_size()
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buffer)?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Rewrites the header's two sizes for what the file holds, then goes back to its end.
    fn state_size(&mut self) -> io::Result<()> {
        let data = data_size_for(HEADER_BYTES + self.written);
        write_sizes(&mut self.file, data)?;
        self.file.seek(SeekFrom::End(0))?;
        self.stated = Some(u64::from(data));
        Ok(())
    }
}

fn write_sizes(file: &mut File, data: u32) -> io::Result<()> {
    let h = header(data);
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&h[4..8])?;
    file.seek(SeekFrom::Start(40))?;
    file.write_all(&h[40..44])
}

/// What [`repair`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The header already stated the file's length.
    Whole,
    /// The header's sizes were set from the file's length (an unfinished recording).
    Fixed {
        /// Seconds of audio the file holds.
        seconds: u32,
    },
    /// Not a file of ours (another layout, or too short): left alone.
    Foreign,
}

/// Sets the header of a recording a killed process left unfinished to what the file holds.
/// Nothing is truncated, so running it on a recording another process is still writing is
/// harmless: that process states its own sizes again within a second, and at its end.
pub fn repair(path: &Path) -> io::Result<Repair> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut found = [0u8; HEADER_BYTES as usize];
    if file.read_exact(&mut found).is_err() {
        return Ok(Repair::Foreign);
    }
    let expected_layout = header(0);
    let same_layout = found[..4] == expected_layout[..4] && found[8..40] == expected_layout[8..40];
    if !same_layout {
        return Ok(Repair::Foreign);
    }
    let data = data_size_for(file.metadata()?.len());
    if found == header(data) {
        return Ok(Repair::Whole);
    }
    write_sizes(&mut file, data)?;
    Ok(Repair::Fixed {
        seconds: data / BYTE_RATE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo(frames: usize, left: i16, right: i16) -> Vec<u8> {
        (0..frames)
            .flat_map(|_| left.to_le_bytes().into_iter().chain(right.to_le_bytes()))
            .collect()
    }

    fn read_all(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut reader = hound::WavReader::open(path).expect("hound opens it");
        let samples = reader
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .expect("every stated sample is there");
        (reader.spec(), samples)
    }

    #[test]
    fn a_finished_file_is_exact_for_hound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let mut wav = WavWriter::create(&path).unwrap();
        wav.append(&stereo(100, 1, -1)).unwrap();
        wav.append(&stereo(50, 7, 9)).unwrap();
        assert!((wav.seconds() - 150.0 / 8_000.0).abs() < 1e-9);
        wav.finish().unwrap();
        let (spec, samples) = read_all(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8_000, 16)
        );
        assert_eq!(samples.len(), 300);
        assert_eq!(&samples[..2], &[1, -1]);
        assert_eq!(&samples[298..], &[7, 9]);
        assert_eq!(repair(&path).unwrap(), Repair::Whole);
    }

    #[test]
    fn an_unfinished_file_reads_to_its_last_second_and_repairs_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("killed.wav");
        let mut wav = WavWriter::create(&path).unwrap();
        // Before any size update the header promises the maximum: lenient readers read on
        // to the end of the file.
        let fresh = std::fs::read(&path).unwrap();
        assert_eq!(&fresh[40..44], &MAX_DATA_BYTES.to_le_bytes());
        // 2.5 s, then the process "dies" (the writer is leaked, never finished).
        for _ in 0..125 {
            wav.append(&stereo(160, 3, 4)).unwrap();
        }
        std::mem::forget(wav);
        let (_, samples) = read_all(&path);
        let seconds = samples.len() as f64 / 2.0 / 8_000.0;
        assert!(
            (1.5..=2.5).contains(&seconds),
            "{seconds} s readable before repair"
        );
        assert_eq!(repair(&path).unwrap(), Repair::Fixed { seconds: 2 });
        let (_, samples) = read_all(&path);
        // Everything written reaches the file (batches of 200 ms: 2.4 s of the 2.5 s).
        assert_eq!(samples.len(), 2 * 8_000 * 24 / 10);
        assert_eq!(repair(&path).unwrap(), Repair::Whole);
    }

    #[test]
    fn repair_leaves_other_files_alone_and_never_replaces_a_recording() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("notes.wav");
        std::fs::write(
            &other,
            b"not a wav at all, but long enough to have a header...",
        )
        .unwrap();
        assert_eq!(repair(&other).unwrap(), Repair::Foreign);
        std::fs::write(&other, b"short").unwrap();
        assert_eq!(repair(&other).unwrap(), Repair::Foreign);
        assert!(
            WavWriter::create(&other).is_err(),
            "an existing file is kept"
        );
    }
}
