//! Cost of the caller-side observability per 20 ms frame: the end-of-speech detector alone
//! (`detector/*`), and the timeline's whole per-frame hook around it (`timeline/*`), on a
//! synthetic call of speech-like bursts over line noise. Criterion reports time per frame;
//! one call-second is 50 frames.
//!
//! Run with `cargo bench --bench endpoint`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemini_phone::audio::codec;
use gemini_phone::audio::endpoint::EndpointDetector;
use gemini_phone::bridge::machine::Timeline;

/// Ten seconds of a call: 1.2 s bursts of harmonic "speech" with 0.8 s pauses, over line
/// noise at about -55 dBFS, as μ-law.
fn call_audio() -> Vec<u8> {
    let mut seed = 1u32;
    let mut phase = 0.0f32;
    (0..80_000)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f32::from(((seed >> 16) as i16 >> 6) / 4);
            let talking = i % 16_000 < 9_600;
            phase += std::f32::consts::TAU * 150.0 / 8_000.0;
            let voice: f32 = (1..=12).map(|k| (k as f32 * phase).sin() / k as f32).sum();
            let sample = if talking { 4_000.0 * voice } else { 0.0 } + noise;
            codec::encode(sample as i16)
        })
        .collect()
}

fn per_frame(c: &mut Criterion) {
    let audio = call_audio();
    let frames: Vec<&[u8]> = audio.chunks(160).collect();
    let start = Instant::now();
    let arrival = |k: usize| start + Duration::from_millis(20 * k as u64);

    let mut group = c.benchmark_group("detector");
    group.throughput(Throughput::Elements(1));
    let mut detector = EndpointDetector::new();
    let mut k = 0usize;
    group.bench_function("push_20ms", |b| {
        b.iter(|| {
            k += 1;
            detector.push(black_box(frames[k % frames.len()]), arrival(k))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("timeline");
    group.throughput(Throughput::Elements(1));
    let mut timeline = Timeline::default();
    let mut k = 0usize;
    group.bench_function("caller_audio_20ms", |b| {
        b.iter(|| {
            k += 1;
            timeline.caller_audio(black_box(frames[k % frames.len()]), arrival(k), false);
        });
    });
    group.finish();
}

criterion_group!(benches, per_frame);
criterion_main!(benches);
