//! Call recordings: each call as one stereo WAV (16-bit PCM, 8 kHz), the caller on the left
//! and the agent on the right exactly as sent to the phone, on one timeline.
//!
//! - [`timeline`] places the agent's audio as the provider plays it (queued ahead of real
//!   time, cut by a barge-in) against the caller's audio, which is the clock;
//! - [`wav`] writes the file as the call runs, readable at any moment and repairable after a
//!   crash;
//! - [`writer`] is the one thread that does the file work, fed by each call's
//!   [`RecordingTap`] (which the call's machine feeds, see
//!   [`crate::bridge::machine::AudioTap`]);
//! - [`sweeper`] repairs recordings a killed process left unfinished and deletes those past
//!   `RECORDING_RETENTION_DAYS`;
//! - [`http`] serves `GET /calls/{id}/recording`, with HTTP Range.
//!
//! A recording is named after its call record (`{record id}.wav`) and the record stores
//! that file name only, never a path: whatever the database holds, only files inside
//! `RECORDINGS_DIR` are ever served or deleted.

pub mod http;
pub mod sweeper;
pub mod timeline;
pub mod wav;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use writer::RecordingTap;

use crate::calls::CallStore;
use crate::config::{ConfigError, RecordingsConfig};

/// Longest file name accepted as a recording's.
const MAX_FILE_NAME_BYTES: usize = 100;

/// Where recordings live, and the writer when calls are recorded.
#[derive(Debug)]
pub struct Recordings {
    dir: PathBuf,
    retention: Option<Duration>,
    /// Present when `RECORD_CALLS=true`.
    writer: Option<writer::Writer>,
}

impl Recordings {
    /// Sets up recordings as configured: with `RECORD_CALLS=true`, makes sure
    /// `RECORDINGS_DIR` exists and can be written to (so a wrong folder stops start-up rather
    /// than every call's recording) and starts the writer.
    pub fn start(config: &RecordingsConfig) -> Result<Recordings, ConfigError> {
        let writer = if config.enabled {
            check_writable(&config.dir)?;
            let writer = writer::Writer::spawn().map_err(|e| {
                ConfigError::new(
                    "RECORD_CALLS",
                    format!("cannot start the recording writer thread: {e}"),
                )
            })?;
            Some(writer)
        } else {
            None
        };
        Ok(Recordings {
            dir: config.dir.clone(),
            retention: config.retention,
            writer,
        })
    }

    /// True when calls are recorded (`RECORD_CALLS=true`).
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// `RECORDINGS_DIR`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `RECORDING_RETENTION_DAYS`, as a duration.
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// Starts recording the call with record `record_id`: the file is created and the
    /// record names it (in the background). `None` when calls are not recorded or the call
    /// has no record to attach a recording to.
    pub fn record_call(&self, record_id: Option<&str>, store: &CallStore) -> Option<RecordingTap> {
        let (writer, id) = (self.writer.as_ref()?, record_id?);
        let name = file_name_for(id)?;
        let tap = writer.open(self.dir.join(&name));
        let (store, id) = (store.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(error) = store.set_recording_file(&id, &name).await {
                tracing::warn!(record = %id, %error, "cannot note the call's recording in its record");
            }
        });
        Some(tap)
    }

    /// The path of recording `file_name` inside `RECORDINGS_DIR`; `None` for a name that is
    /// not a recording's (a path, `..`, anything but `[A-Za-z0-9_-]+.wav`).
    pub fn path_of(&self, file_name: &str) -> Option<PathBuf> {
        is_recording_name(file_name).then(|| self.dir.join(file_name))
    }

    /// Waits up to `within` for every recording's audio queued so far to reach its file
    /// (at shutdown, once the calls have ended); false on time-out.
    pub async fn flush(&self, within: Duration) -> bool {
        match &self.writer {
            Some(writer) => writer.flush(within).await,
            None => true,
        }
    }
}

/// The file name of record `record_id`'s recording, if the id can be one.
fn file_name_for(record_id: &str) -> Option<String> {
    let name = format!("{record_id}.wav");
    is_recording_name(&name).then_some(name)
}

/// `[A-Za-z0-9_-]+.wav` and not too long: a bare file name that cannot leave its folder.
pub(crate) fn is_recording_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".wav") else {
        return false;
    };
    !stem.is_empty()
        && name.len() <= MAX_FILE_NAME_BYTES
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Creates `dir` if need be and proves a file can be created in it.
fn check_writable(dir: &Path) -> Result<(), ConfigError> {
    let problem = |what: &str, e: std::io::Error| {
        ConfigError::new(
            "RECORDINGS_DIR",
            format!(
                "cannot {what} {} ({e}); point RECORDINGS_DIR at a folder this server may write to, or set RECORD_CALLS=false",
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| problem("create", e))?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| problem("write to", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_wav_names_are_recordings() {
        for good in ["c0123456789abcdefghijklmn.wav", "a_b-C.wav"] {
            assert!(is_recording_name(good), "{good}");
        }
        for bad in [
            "",
            ".wav",
            "../x.wav",
            "/etc/passwd",
            "a/b.wav",
            "a\\b.wav",
            "..wav",
            "x.wav.exe",
            "x.WAV",
            "x y.wav",
            "é.wav",
        ] {
            assert!(!is_recording_name(bad), "{bad:?}");
        }
        assert!(!is_recording_name(&format!("{}.wav", "a".repeat(100))));
    }

    #[test]
    fn a_folder_that_cannot_be_written_stops_start_up_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let config = RecordingsConfig {
            enabled: true,
            dir: file.join("recordings"),
            retention: None,
        };
        let error = Recordings::start(&config).unwrap_err();
        assert_eq!(error.var, "RECORDINGS_DIR");
        // Off, nothing is checked or created.
        let off = Recordings::start(&RecordingsConfig {
            enabled: false,
            ..config
        })
        .unwrap();
        assert!(!off.enabled());
    }
}
