//! The recordings' file writer: one thread for every call's recording, fed 20 ms chunks by
//! each call's [`RecordingTap`], so a slow disk never holds up a call's socket loop.
//!
//! A tap never waits. Each recording may have at most [`MAX_CHUNKS_IN_FLIGHT`] audio chunks
//! waiting for the writer; past that a chunk is dropped and counted, and the count travels
//! with the tap's next chunk so the writer puts silence in its place and both channels stay
//! on their clock. Opening, clearing and closing are never dropped.
//!
//! One thread rather than one a call: the work per chunk is microseconds, and a thread per
//! call would take hundreds of threads at full load (and Tokio's blocking pool, which DNS
//! lookups and SQLite also need, has a limit).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::timeline::Timeline;
use super::wav::WavWriter;
use crate::audio::PHONE_FRAME_BYTES;
use crate::bridge::machine::AudioTap;

/// Audio chunks of one recording that may wait for the writer (10 s of audio; an agent's
/// answer arrives in bursts of a second or so).
pub const MAX_CHUNKS_IN_FLIGHT: usize = 500;
/// How often the writer thread wakes to drain what the calls sent. It polls rather than
/// waiting on the channel: a waiting receiver is woken (a futex call and a context switch)
/// by every 20 ms frame of every call, which at 300 calls cost more CPU than the recording
/// itself. Each tap's in-flight limit holds ten seconds of audio, so 20 ms is far inside it.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Which channel a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Caller,
    Agent,
}

/// Up to 20 ms of μ-law, copied out of the call's buffers.
struct Chunk {
    track: Track,
    /// Samples of this track dropped since the last chunk that got through.
    gap: u32,
    len: u8,
    bytes: [u8; PHONE_FRAME_BYTES],
}

enum Message {
    Open {
        recording: u64,
        path: PathBuf,
        in_flight: Arc<AtomicUsize>,
    },
    Audio {
        recording: u64,
        chunk: Chunk,
    },
    Clear {
        recording: u64,
    },
    Close {
        recording: u64,
    },
    /// Answered once everything sent before it is handled.
    Flush(oneshot::Sender<()>),
}

/// The handle that starts recordings and flushes the writer.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Message>,
    next_id: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread; it ends once every handle and tap is gone.
    pub fn spawn() -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || run(rx))?;
        Ok(Writer {
            tx,
            next_id: Arc::default(),
        })
    }

    /// Opens a recording at `path` (created by the writer; an existing file is never
    /// replaced) and returns the tap that feeds it. The file is finished when the tap is
    /// dropped.
    pub fn open(&self, path: PathBuf) -> RecordingTap {
        let recording = self.next_id.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let _ = self.tx.send(Message::Open {
            recording,
            path,
            in_flight: Arc::clone(&in_flight),
        });
        RecordingTap {
            recording,
            tx: self.tx.clone(),
            in_flight,
            caller_gap: 0,
            agent_gap: 0,
            dropped_chunks: 0,
        }
    }

    /// Waits up to `within` for everything queued so far to be written; false on time-out.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Message::Flush(done_tx)).is_err() {
            return true;
        }
        matches!(tokio::time::timeout(within, done_rx).await, Ok(Ok(())))
    }
}

/// One call's side of its recording: copies each chunk of audio into a message for the
/// writer. Never blocks and never waits.
pub struct RecordingTap {
    recording: u64,
    tx: mpsc::UnboundedSender<Message>,
    in_flight: Arc<AtomicUsize>,
    caller_gap: u32,
    agent_gap: u32,
    dropped_chunks: u64,
}

impl RecordingTap {
    fn send(&mut self, track: Track, mulaw: &[u8]) {
        for piece in mulaw.chunks(PHONE_FRAME_BYTES) {
            let gap = match track {
                Track::Caller => &mut self.caller_gap,
                Track::Agent => &mut self.agent_gap,
            };
            if self.in_flight.load(Ordering::Relaxed) >= MAX_CHUNKS_IN_FLIGHT {
                *gap = gap.saturating_add(piece.len() as u32);
                self.dropped_chunks += 1;
                if self.dropped_chunks.is_power_of_two() {
                    tracing::warn!(
                        dropped_chunks = self.dropped_chunks,
                        "the recording writer is behind (a slow disk?); dropping audio from the recording, not from the call"
                    );
                }
                continue;
            }
            let mut chunk = Chunk {
                track,
                gap: std::mem::take(gap),
                len: piece.len() as u8,
                bytes: [0; PHONE_FRAME_BYTES],
            };
            chunk.bytes[..piece.len()].copy_from_slice(piece);
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let _ = self.tx.send(Message::Audio {
                recording: self.recording,
                chunk,
            });
        }
    }
}

impl AudioTap for RecordingTap {
    fn caller_audio(&mut self, mulaw: &[u8]) {
        self.send(Track::Caller, mulaw);
    }

    fn agent_frame(&mut self, mulaw: &[u8]) {
        self.send(Track::Agent, mulaw);
    }

    fn agent_cleared(&mut self) {
        let _ = self.tx.send(Message::Clear {
            recording: self.recording,
        });
    }
}

impl Drop for RecordingTap {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Close {
            recording: self.recording,
        });
    }
}

/// A recording the writer has open.
struct Open {
    path: PathBuf,
    wav: WavWriter,
    timeline: Timeline,
    /// Samples that went missing on the way here and were filled with silence.
    gap_samples: u64,
}

/// What the writer keeps per tap: its in-flight count, and its file unless that failed (the
/// tap's chunks are then still counted off, so it never believes the writer is behind).
struct Slot {
    in_flight: Arc<AtomicUsize>,
    file: Option<Open>,
}

fn run(mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut slots: HashMap<u64, Slot> = HashMap::new();
    // Reused for every chunk: 160 stereo sample frames.
    let mut out = Vec::with_capacity(PHONE_FRAME_BYTES * 4);
    loop {
        match rx.try_recv() {
            Ok(message) => handle(message, &mut slots, &mut out),
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(DRAIN_EVERY),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        }
    }
    for file in slots.into_values().filter_map(|slot| slot.file) {
        file.finish();
    }
}

/// One message from a call's tap (or the handle).
fn handle(message: Message, slots: &mut HashMap<u64, Slot>, out: &mut Vec<u8>) {
    match message {
        Message::Open {
            recording,
            path,
            in_flight,
        } => {
            let file = match WavWriter::create(&path) {
                Ok(wav) => Some(Open {
                    path,
                    wav,
                    timeline: Timeline::default(),
                    gap_samples: 0,
                }),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot create the call's recording; the call goes on unrecorded");
                    None
                }
            };
            slots.insert(recording, Slot { in_flight, file });
        }
        Message::Audio { recording, chunk } => {
            let Some(slot) = slots.get_mut(&recording) else {
                return;
            };
            slot.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(file) = &mut slot.file {
                out.clear();
                file.add(&chunk, out);
                if let Err(error) = file.wav.append(out) {
                    tracing::error!(path = %file.path.display(), %error, "cannot write the call's recording; it stops here");
                    slot.file = None;
                }
            }
        }
        Message::Clear { recording } => {
            if let Some(Slot {
                file: Some(file), ..
            }) = slots.get_mut(&recording)
            {
                file.timeline.clear();
            }
        }
        Message::Close { recording } => {
            if let Some(Slot {
                file: Some(file), ..
            }) = slots.remove(&recording)
            {
                file.finish();
            }
        }
        Message::Flush(done) => {
            let _ = done.send(());
        }
    }
}

impl Open {
    fn add(&mut self, chunk: &Chunk, out: &mut Vec<u8>) {
        let gap = chunk.gap as usize;
        self.gap_samples += gap as u64;
        let audio = &chunk.bytes[..usize::from(chunk.len)];
        match chunk.track {
            Track::Caller => {
                self.timeline.caller_gap(gap, out);
                self.timeline.caller(audio, out);
            }
            Track::Agent => {
                self.timeline.agent_gap(gap, out);
                self.timeline.agent(audio, out);
            }
        }
    }

    fn finish(self) {
        let seconds = self.wav.seconds();
        let (gaps, overrun) = (self.gap_samples, self.timeline.overrun_samples);
        match self.wav.finish() {
            Ok(()) => tracing::info!(
                path = %self.path.display(),
                seconds = format!("{seconds:.2}"),
                dropped_ms = gaps / 8,
                agent_ahead_of_caller_ms = overrun / 8,
                "recording finished"
            ),
            Err(error) => tracing::error!(
                path = %self.path.display(),
                %error,
                "cannot finish the call's recording; it is repaired at the next start"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &std::path::Path) -> Vec<(i16, i16)> {
        let mut reader = hound::WavReader::open(path).expect("a WAV");
        let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        samples.chunks_exact(2).map(|p| (p[0], p[1])).collect()
    }

    #[tokio::test]
    async fn a_tap_records_both_channels_and_finishes_the_file_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let writer = Writer::spawn().unwrap();
        let mut tap = writer.open(path.clone());
        tap.caller_audio(&[0x10; 160]);
        tap.agent_frame(&[0x20; 160]);
        tap.agent_frame(&[0x20; 160]);
        tap.caller_audio(&[0x10; 160]);
        tap.agent_cleared();
        tap.caller_audio(&[0x10; 320]);
        drop(tap);
        assert!(writer.flush(Duration::from_secs(5)).await);
        let frames = read(&path);
        assert_eq!(frames.len(), 640);
        let right_active: Vec<bool> = frames.iter().map(|(_, r)| *r != 0).collect();
        assert!(!right_active[..160].iter().any(|a| *a));
        assert!(right_active[160..320].iter().all(|a| *a));
        assert!(!right_active[320..].iter().any(|a| *a), "cleared");
    }

    #[tokio::test]
    async fn a_writer_that_falls_behind_costs_the_recording_chunks_not_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("behind.wav");
        let writer = Writer::spawn().unwrap();
        let mut tap = writer.open(path.clone());
        // Pretend the writer is stuck: every slot is taken.
        tap.in_flight
            .fetch_add(MAX_CHUNKS_IN_FLIGHT, Ordering::Relaxed);
        tap.caller_audio(&[0x10; 480]);
        assert_eq!(tap.dropped_chunks, 3);
        tap.in_flight
            .fetch_sub(MAX_CHUNKS_IN_FLIGHT, Ordering::Relaxed);
        tap.caller_audio(&[0x10; 160]);
        drop(tap);
        assert!(writer.flush(Duration::from_secs(5)).await);
        let frames = read(&path);
        assert_eq!(
            frames.len(),
            640,
            "the dropped 60 ms are silence, not missing"
        );
        assert!(frames[..480].iter().all(|(l, _)| *l == 0));
        assert!(frames[480..].iter().all(|(l, _)| *l != 0));
    }
}
