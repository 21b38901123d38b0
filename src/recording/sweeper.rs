//! Keeps `RECORDINGS_DIR` in order: at start-up, recordings a killed process left with an
//! unfinished header are made whole; with `RECORDING_RETENTION_DAYS` set, recordings older
//! than that are deleted at start-up and every hour after, and their records stop naming
//! them (so `recording_url` becomes `null` and the route answers 404).
//!
//! Only files named like recordings are looked at; a recording's age is its file's
//! modification time (when its call ended).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Recordings, is_recording_name, wav};
use crate::calls::CallStore;
use crate::shutdown::Shutdown;

/// How often recordings past their retention are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3_600);

/// Starts the background task: a repair pass and (with a retention) a sweep now, then a
/// sweep every [`SWEEP_EVERY`] until shutdown.
pub fn start(recordings: &Recordings, store: CallStore, shutdown: &Shutdown) {
    let dir = recordings.dir().to_path_buf();
    let retention = recordings.retention();
    let stop = shutdown.signal();
    tokio::spawn(async move {
        tokio::pin!(stop);
        repair_unfinished(&dir).await;
        let Some(retention) = retention else {
            return;
        };
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = &mut stop => return,
            }
            let report = sweep(&dir, retention, SystemTime::now(), &store).await;
            if report.deleted > 0 || report.failed > 0 {
                tracing::info!(
                    deleted = report.deleted,
                    failed = report.failed,
                    retention_days = retention.as_secs() / 86_400,
                    "deleted recordings past RECORDING_RETENTION_DAYS"
                );
            }
        }
    });
}

/// What a repair pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Recordings whose header was set from their length.
    pub fixed: usize,
    /// Recordings that could not be read or written.
    pub failed: usize,
}

/// Sets the header of every recording in `dir` left unfinished (by a SIGKILL, a crash, a
/// full disk) to what the file holds, so any player reads all of it.
pub async fn repair_unfinished(dir: &Path) -> RepairReport {
    let dir = dir.to_path_buf();
    let pass = tokio::task::spawn_blocking(move || {
        let mut report = RepairReport::default();
        for path in recordings_in(&dir) {
            match wav::repair(&path) {
                Ok(wav::Repair::Fixed { seconds }) => {
                    report.fixed += 1;
                    tracing::info!(path = %path.display(), seconds, "repaired an unfinished recording (its call was cut off)");
                }
                Ok(wav::Repair::Whole | wav::Repair::Foreign) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(path = %path.display(), %error, "cannot repair an unfinished recording");
                }
            }
        }
        report
    });
    pass.await.unwrap_or_default()
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Recordings deleted.
    pub deleted: usize,
    /// Recordings that were due but could not be deleted.
    pub failed: usize,
}

/// Deletes the recordings in `dir` last written more than `retention` before `now`, and
/// clears them from their records.
pub async fn sweep(
    dir: &Path,
    retention: Duration,
    now: SystemTime,
    store: &CallStore,
) -> SweepReport {
    let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let dir = dir.to_path_buf();
    let deleting = tokio::task::spawn_blocking(move || delete_older_than(&dir, cutoff));
    let (deleted, failed) = deleting.await.unwrap_or_default();
    for name in &deleted {
        let Some(id) = name.strip_suffix(".wav") else {
            continue;
        };
        if let Err(error) = store.clear_recording_file(id, name).await {
            // The route answers 410 Gone for a record that still names a deleted file.
            tracing::warn!(record = id, %error, "cannot clear a deleted recording from its record");
        }
    }
    SweepReport {
        deleted: deleted.len(),
        failed,
    }
}

/// Deletes recordings modified before `cutoff`; returns the deleted names and the number
/// that could not be deleted.
fn delete_older_than(dir: &Path, cutoff: SystemTime) -> (Vec<String>, usize) {
    let mut deleted = Vec::new();
    let mut failed = 0;
    for path in recordings_in(dir) {
        let due = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < cutoff);
        if !due {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    deleted.push(name.to_owned());
                }
            }
            Err(error) => {
                failed += 1;
                tracing::warn!(path = %path.display(), %error, "cannot delete an expired recording");
            }
        }
    }
    (deleted, failed)
}

/// The recordings (regular files named like one) in `dir`; none when it cannot be read.
fn recordings_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter(|entry| entry.file_name().to_str().is_some_and(is_recording_name))
        .map(|entry| entry.path())
        .collect()
}
