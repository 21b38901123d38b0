//! What recording calls costs: CPU per call-second and memory per call.
//!
//! Simulates `CALLS` concurrent recorded calls for `SECONDS` call-seconds each, the way the
//! call tasks feed their taps: every 20 ms one caller frame per call, and the agent talking
//! half the time in one-second answers that arrive as a burst of 50 frames (faster than
//! real time, as Gemini sends them), with a barge-in clear now and then. The real writer
//! thread writes real WAV files to a temporary folder (set `TMPDIR` to put it on the disk
//! that would hold `RECORDINGS_DIR`). Each simulated second ends with a flush, so the
//! writer is never far behind (as in a live call, where the audio arrives in real time).
//!
//! CPU is the whole process's user+system time (taps, writer thread, file system), from
//! `/proc/self/stat`; memory is the resident-set growth with every call's recording open
//! and an answer queued, divided by the number of calls. Linux only.
//!
//! Run with `cargo bench --bench recording` (optionally `-- CALLS SECONDS`).

use std::time::{Duration, Instant};

use gemini_phone::bridge::machine::AudioTap;
use gemini_phone::recording::writer::Writer;

const DEFAULT_CALLS: usize = 300;
const DEFAULT_SECONDS: usize = 30;
const FRAME: usize = 160;

/// User+system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports them in USER_HZ, 100 a second on every mainstream build.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn frame(seed: usize) -> [u8; FRAME] {
    let mut f = [0u8; FRAME];
    for (i, b) in f.iter_mut().enumerate() {
        *b = ((seed * 31 + i * 7) % 251) as u8;
    }
    f
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = args.first().copied().unwrap_or(DEFAULT_CALLS);
    let seconds = args.get(1).copied().unwrap_or(DEFAULT_SECONDS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let writer = Writer::spawn().expect("the writer thread");
    let caller = frame(1);
    let agent = frame(2);

    let rss_before = rss_kib();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut taps: Vec<_> = (0..calls)
        .map(|i| writer.open(dir.path().join(format!("c{i}.wav"))))
        .collect();
    let mut rss_open = 0;
    for second in 0..seconds {
        // Calls are staggered so that answers do not all land in the same second.
        for tick in 0..50 {
            for (i, tap) in taps.iter_mut().enumerate() {
                let talking = (second + i) % 2 == 0;
                if talking && tick == (i % 50) {
                    for _ in 0..50 {
                        tap.agent_frame(&agent);
                    }
                    if (second + i) % 10 == 0 {
                        // A barge-in: what is left of the answer is cut.
                        tap.agent_cleared();
                    }
                }
                tap.caller_audio(&caller);
            }
        }
        if second == seconds / 2 {
            rss_open = rss_kib();
        }
        assert!(runtime.block_on(writer.flush(Duration::from_secs(60))));
    }
    drop(taps);
    assert!(runtime.block_on(writer.flush(Duration::from_secs(60))));
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let call_seconds = (calls * seconds) as f64;
    let written: u64 = std::fs::read_dir(dir.path())
        .expect("the folder")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "recorded {calls} calls x {seconds} s = {call_seconds} call-seconds in {wall:.2?} wall"
    );
    println!(
        "CPU (taps + writer + file system): {:.3} s = {:.1} us per call-second",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / call_seconds
    );
    println!(
        "memory with every recording open: +{} KiB = {:.1} KiB per call",
        rss_open.saturating_sub(rss_before),
        rss_open.saturating_sub(rss_before) as f64 / calls as f64
    );
    println!(
        "written: {:.1} MiB ({:.1} KiB per call-second)",
        written as f64 / 1_048_576.0,
        written as f64 / 1_024.0 / call_seconds
    );
}
