//! Resampler candidates for the phone bridge, measured with the same code and timed per 20 ms
//! frame: (a) dasp's sinc interpolator, (b) rubato 5 (FFT and asynchronous sinc, at its default
//! settings and tuned to the 3 ms delay budget), (c) the polyphase FIR that ships.
//!
//! `cargo bench --bench resamplers` first prints the fidelity figures of every candidate (set
//! `FIDELITY=0` to skip them), then runs the criterion timings.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;

use criterion::{Criterion, criterion_group, criterion_main};
use dasp::interpolate::sinc::Sinc;
use dasp::{Signal, ring_buffer, signal::interpolate::Converter};
use gemini_phone::audio::report::measure;
use gemini_phone::audio::resample::{Downsampler3x, StreamResampler, Upsampler2x};
use gemini_phone::audio::{Downlink, Uplink};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

/// Any rubato resampler behind the streaming interface, re-created on reset.
struct RubatoStream {
    make: Box<dyn Fn() -> Box<dyn Resampler<f32>>>,
    inner: Box<dyn Resampler<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    rates: (u32, u32),
}

impl RubatoStream {
    fn new(rates: (u32, u32), make: Box<dyn Fn() -> Box<dyn Resampler<f32>>>) -> Self {
        let inner = make();
        let scratch = vec![0.0; inner.output_frames_max()];
        Self {
            make,
            inner,
            pending: Vec::with_capacity(4096),
            scratch,
            rates,
        }
    }
}

impl StreamResampler for RubatoStream {
    fn input_rate(&self) -> u32 {
        self.rates.0
    }
    fn output_rate(&self) -> u32 {
        self.rates.1
    }
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.pending.extend_from_slice(input);
        let mut start = 0;
        loop {
            let need = self.inner.input_frames_next();
            if self.pending.len() - start < need {
                break;
            }
            let cap = self.scratch.len();
            let inp = InterleavedSlice::new(&self.pending[start..start + need], 1, need)
                .expect("input adapter");
            let mut outp =
                InterleavedSlice::new_mut(&mut self.scratch, 1, cap).expect("output adapter");
            let (read, written) = self
                .inner
                .process_into_buffer(&inp, &mut outp, None)
                .expect("rubato process");
            out.extend_from_slice(&self.scratch[..written]);
            start += read;
        }
        self.pending.drain(..start);
    }
    fn reset(&mut self) {
        self.inner = (self.make)();
        self.pending.clear();
    }
}

fn rubato_fft(rates: (u32, u32), sub_chunks: usize) -> RubatoStream {
    let chunk = rates.0 as usize / 50;
    RubatoStream::new(
        rates,
        Box::new(move || {
            Box::new(
                Fft::<f32>::new_custom(
                    rates.0 as usize,
                    rates.1 as usize,
                    chunk,
                    sub_chunks,
                    1,
                    WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                )
                .expect("rubato fft"),
            )
        }),
    )
}

fn rubato_sinc(
    rates: (u32, u32),
    sinc_len: usize,
    window: WindowFunction,
    cutoff: Option<f32>,
) -> RubatoStream {
    let chunk = rates.0 as usize / 50;
    RubatoStream::new(
        rates,
        Box::new(move || {
            let mut params = SincInterpolationParameters::new(sinc_len, window)
                // Integer ratios land exactly on precomputed points: one dot product per output.
                .oversampling_factor(6)
                .interpolation(SincInterpolationType::Nearest);
            if let Some(c) = cutoff {
                params = params.f_cutoff(c);
            }
            Box::new(
                Async::<f32>::new_sinc(
                    f64::from(rates.1) / f64::from(rates.0),
                    1.0,
                    &params,
                    chunk,
                    1,
                    FixedAsync::Input,
                )
                .expect("rubato sinc"),
            )
        }),
    )
}

/// dasp's sinc interpolator pulling from a queue we fill frame by frame.
struct Feed(Rc<RefCell<VecDeque<f32>>>);

impl Signal for Feed {
    type Frame = f32;
    fn next(&mut self) -> f32 {
        self.0.borrow_mut().pop_front().unwrap_or(0.0)
    }
}

struct DaspStream {
    queue: Rc<RefCell<VecDeque<f32>>>,
    conv: Converter<Feed, Sinc<Vec<f32>>>,
    /// Ring length: twice the sinc depth.
    ring: usize,
    rates: (u32, u32),
    consumed: u64,
    produced: u64,
}

impl DaspStream {
    fn new(rates: (u32, u32), depth: usize) -> Self {
        let queue = Rc::new(RefCell::new(VecDeque::with_capacity(4096)));
        let ring = 2 * depth;
        let conv = Self::converter(&queue, rates, ring);
        Self {
            queue,
            conv,
            ring,
            rates,
            consumed: 0,
            produced: 0,
        }
    }
    fn converter(
        queue: &Rc<RefCell<VecDeque<f32>>>,
        rates: (u32, u32),
        ring: usize,
    ) -> Converter<Feed, Sinc<Vec<f32>>> {
        let sinc = Sinc::new(ring_buffer::Fixed::from(vec![0.0f32; ring]));
        Converter::from_hz_to_hz(
            Feed(Rc::clone(queue)),
            sinc,
            f64::from(rates.0),
            f64::from(rates.1),
        )
    }
}

impl StreamResampler for DaspStream {
    fn input_rate(&self) -> u32 {
        self.rates.0
    }
    fn output_rate(&self) -> u32 {
        self.rates.1
    }
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.queue.borrow_mut().extend(input.iter().copied());
        self.consumed += input.len() as u64;
        let owed = self.consumed * u64::from(self.rates.1) / u64::from(self.rates.0);
        while self.produced < owed {
            out.push(self.conv.next());
            self.produced += 1;
        }
    }
    fn reset(&mut self) {
        self.queue.borrow_mut().clear();
        self.conv = Self::converter(&self.queue, self.rates, self.ring);
        self.consumed = 0;
        self.produced = 0;
    }
}

const UP: (u32, u32) = (8_000, 16_000);
const DOWN: (u32, u32) = (24_000, 8_000);

/// Every candidate, both directions; names say the configuration.
fn candidates() -> Vec<(&'static str, Box<dyn StreamResampler>)> {
    vec![
        ("(c) shipped FIR up 8->16k", Box::new(Upsampler2x::new())),
        (
            "(c) shipped FIR down 24->8k",
            Box::new(Downsampler3x::new()),
        ),
        (
            "(a) dasp sinc depth 16 up",
            Box::new(DaspStream::new(UP, 16)),
        ),
        (
            "(a) dasp sinc depth 48 down",
            Box::new(DaspStream::new(DOWN, 48)),
        ),
        ("(b) rubato Fft default up", Box::new(rubato_fft(UP, 1))),
        ("(b) rubato Fft default down", Box::new(rubato_fft(DOWN, 1))),
        (
            "(b) rubato Fft 4 sub-chunks up",
            Box::new(rubato_fft(UP, 4)),
        ),
        (
            "(b) rubato Fft 4 sub-chunks down",
            Box::new(rubato_fft(DOWN, 4)),
        ),
        (
            "(b) rubato sinc BH2 auto len 48 up",
            Box::new(rubato_sinc(UP, 48, WindowFunction::BlackmanHarris2, None)),
        ),
        (
            "(b) rubato sinc BH2 auto len 144 down",
            Box::new(rubato_sinc(
                DOWN,
                144,
                WindowFunction::BlackmanHarris2,
                None,
            )),
        ),
        (
            "(b) rubato sinc Blackman 4k len 48 up",
            Box::new(rubato_sinc(UP, 48, WindowFunction::Blackman, Some(1.0))),
        ),
        (
            "(b) rubato sinc Blackman 4k len 144 down",
            Box::new(rubato_sinc(DOWN, 144, WindowFunction::Blackman, Some(1.0))),
        ),
    ]
}

fn print_fidelity() {
    if std::env::var("FIDELITY").is_ok_and(|v| v == "0") {
        return;
    }
    println!("fidelity (same measuring code for every candidate, tones every 25 Hz):");
    for (name, mut r) in candidates() {
        let fig = measure(name, r.as_mut(), 25.0);
        print!("{}", fig.lines());
        println!(
            "{name}: all goals {}",
            if fig.meets_goals() { "MET" } else { "NOT met" }
        );
    }
    println!();
}

fn frame(rate: u32) -> Vec<f32> {
    (0..rate as usize / 50)
        .map(|n| 8000.0 * (n as f32 * 0.37).sin())
        .collect()
}

fn bench_resamplers(c: &mut Criterion) {
    print_fidelity();
    for (name, mut r) in candidates() {
        let input = frame(r.input_rate());
        let mut out = Vec::with_capacity(2048);
        c.bench_function(&format!("{name}: one 20 ms frame"), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(&input), &mut out);
                black_box(&out);
            })
        });
    }
}

fn bench_paths(c: &mut Criterion) {
    let mulaw: Vec<u8> = (0..160u32).map(|n| (n * 37 % 256) as u8).collect();
    let mut up = Uplink::new();
    let mut out = Vec::with_capacity(1024);
    c.bench_function(
        "Uplink::push one 160-byte frame (decode + resample + PCM16)",
        |b| {
            b.iter(|| {
                out.clear();
                up.push(black_box(&mulaw), &mut out);
                black_box(&out);
            })
        },
    );
    let pcm: Vec<u8> = frame(24_000)
        .iter()
        .flat_map(|&s| (s as i16).to_le_bytes())
        .collect();
    let mut down = Downlink::new();
    c.bench_function(
        "Downlink::push+pop one 960-byte frame (PCM16 + resample + encode)",
        |b| {
            b.iter(|| {
                down.push(black_box(&pcm));
                black_box(down.pop_frame());
            })
        },
    );
}

criterion_group!(benches, bench_resamplers, bench_paths);
criterion_main!(benches);
