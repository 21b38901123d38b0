//! Cost of one 20 ms frame through the whole per-call path, socket I/O excluded.
//!
//! - `uplink/{twilio,plivo}`: one provider `media` text frame → `CallMachine::handle_phone_text`
//!   (JSON parse, base64, μ-law decode, 8 → 16 kHz resample, base64, JSON out) → the
//!   `realtimeInput.audio` string drained from `poll_output`.
//! - `downlink/{twilio,plivo}/20ms`: one Gemini `serverContent.modelTurn` binary JSON message
//!   carrying 20 ms of 24 kHz PCM16 → `handle_gemini_frame` (JSON parse, base64, 24 → 8 kHz
//!   resample, μ-law, framing) → one provider media string.
//! - `downlink/{twilio,plivo}/240ms`: a realistic 240 ms chunk (what the real service sends)
//!   giving 12 frames; criterion reports it per frame (throughput = 12 elements).
//! - `parts/*`: the same steps one at a time, to show where the time goes.
//!
//! Run with `cargo bench --bench frame_path`.

use std::hint::black_box;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemini_phone::audio::{Downlink, Uplink};
use gemini_phone::bridge::{CallMachine, Mode, Output};
use gemini_phone::gemini::SessionSetup;
use gemini_phone::gemini::protocol::{self, ServerMessage};
use gemini_phone::telephony::{self, MediaStream};

/// A 20 ms μ-law frame of speech-like audio (a 440 Hz + 1 kHz mix).
fn mulaw_frame(offset: usize) -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = (offset + i) as f64 / 8000.0;
            let s = 6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 3000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin();
            gemini_phone::audio::codec::encode(s.round() as i16)
        })
        .collect()
}

/// PCM16 LE bytes of `samples` samples of 24 kHz speech-like audio.
fn pcm24k(samples: usize) -> Vec<u8> {
    (0..samples)
        .flat_map(|i| {
            let t = i as f64 / 24_000.0;
            let s = 7000.0 * (2.0 * std::f64::consts::PI * 300.0 * t).sin()
                + 2500.0 * (2.0 * std::f64::consts::PI * 2100.0 * t).sin();
            (s.round() as i16).to_le_bytes()
        })
        .collect()
}

/// The binary JSON message the real service sends for one audio chunk.
fn model_turn_message(pcm: &[u8]) -> Vec<u8> {
    format!(
        "{{\"serverContent\":{{\"modelTurn\":{{\"role\":\"model\",\"parts\":[{{\"inlineData\":{{\"mimeType\":\"audio/pcm;rate=24000\",\"data\":\"{}\"}}}}]}}}}}}",
        STANDARD.encode(pcm)
    )
    .into_bytes()
}

#[derive(Clone, Copy)]
enum Provider {
    Twilio,
    Plivo,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Plivo => "plivo",
        }
    }

    fn stream(self) -> Box<dyn MediaStream> {
        telephony::provider_by_name(self.name())
            .expect("provider exists")
            .media_stream()
    }

    fn start_message(self) -> String {
        match self {
            Provider::Twilio => r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"MZ0123456789abcdef0123456789abcdef","callSid":"CA0123456789abcdef0123456789abcdef","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"direction":"inbound","from":"+15550001111","to":"+15550002222"}},"streamSid":"MZ0123456789abcdef0123456789abcdef"}"#.to_owned(),
            Provider::Plivo => r#"{"event":"start","sequenceNumber":1,"start":{"callId":"12345678-1234-1234-1234-123456789abc","streamId":"87654321-4321-4321-4321-cba987654321","accountId":"MAXXXXXXXXXXXXXXXXXX","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},"extra_headers":"from=15550001111;to=15550002222;direction=inbound"}"#.to_owned(),
        }
    }

    /// A `media` message exactly as the provider sends it.
    fn media_message(self, seq: u64, mulaw: &[u8]) -> String {
        let payload = STANDARD.encode(mulaw);
        match self {
            Provider::Twilio => format!(
                r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"streamSid":"MZ0123456789abcdef0123456789abcdef"}}"#,
                seq - 1,
                seq * 20
            ),
            Provider::Plivo => format!(
                r#"{{"event":"media","sequenceNumber":{seq},"streamId":"87654321-4321-4321-4321-cba987654321","media":{{"track":"inbound","timestamp":"{}","chunk":{},"payload":"{payload}"}},"extra_headers":"from=15550001111;to=15550002222;direction=inbound"}}"#,
                1_705_312_200_000u64 + seq * 20,
                seq - 1
            ),
        }
    }
}

/// A machine in the Live phase with every setup output drained.
fn live_machine(provider: Provider) -> CallMachine {
    let mut machine = CallMachine::new(Mode::Gemini, provider.stream(), Instant::now());
    if let Provider::Twilio = provider {
        machine.handle_phone_text(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            Instant::now(),
        );
    }
    machine.handle_phone_text(&provider.start_message(), Instant::now());
    let mut started = false;
    while let Some(output) = machine.poll_output() {
        started |= matches!(output, Output::Started(_));
    }
    assert!(started, "{}: start message not accepted", provider.name());
    machine.handle_session_setup(SessionSetup {
        model: "models/gemini-3.8-live".into(),
        voice: "Kore".into(),
        language: None,
        system_instruction: "You are a helpful phone agent.".into(),
        function_declarations: Vec::new(),
        options: Default::default(),
    });
    let mut connect = false;
    while let Some(output) = machine.poll_output() {
        connect |= matches!(output, Output::ConnectGemini(_));
    }
    assert!(connect, "no ConnectGemini after open_session");
    machine.handle_gemini_ready(Instant::now());
    while machine.poll_output().is_some() {}
    machine
}

/// Drains outputs, returning how many frames went to each side (kept opaque to the optimiser).
#[inline(always)]
fn drain(machine: &mut CallMachine) -> (usize, usize) {
    let (mut phone, mut gemini) = (0, 0);
    while let Some(output) = machine.poll_output() {
        match output {
            Output::Phone(text) => {
                phone += 1;
                black_box(text);
            }
            Output::Gemini(text) => {
                gemini += 1;
                black_box(text);
            }
            other => {
                black_box(other);
            }
        }
    }
    (phone, gemini)
}

fn uplink(c: &mut Criterion) {
    let mut group = c.benchmark_group("uplink");
    group.throughput(Throughput::Elements(1));
    for provider in [Provider::Twilio, Provider::Plivo] {
        // 50 distinct frames (1 s of audio) cycled, so the codec does not see one frame only.
        let messages: Vec<String> = (0..50)
            .map(|i| provider.media_message(i as u64 + 2, &mulaw_frame(i * 160)))
            .collect();
        let mut machine = live_machine(provider);
        machine.handle_phone_text(&messages[0], Instant::now());
        assert_eq!(
            drain(&mut machine),
            (0, 1),
            "one media frame, one Gemini message"
        );
        let mut i = 0;
        group.bench_function(provider.name(), |b| {
            b.iter(|| {
                machine.handle_phone_text(black_box(&messages[i % messages.len()]), Instant::now());
                i += 1;
                drain(&mut machine)
            });
        });
    }
    group.finish();
}

fn downlink(c: &mut Criterion) {
    let mut group = c.benchmark_group("downlink");
    for provider in [Provider::Twilio, Provider::Plivo] {
        // 20 ms at 24 kHz: 480 samples → exactly one 160-byte phone frame per message.
        let chunks_20: Vec<Vec<u8>> = (0..50)
            .map(|i| model_turn_message(&pcm24k(480 * (i + 1))[960 * i..]))
            .collect();
        let mut machine = live_machine(provider);
        machine.handle_gemini_frame(&chunks_20[0], Instant::now());
        assert_eq!(drain(&mut machine), (1, 0), "20 ms in, one phone frame out");
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{}/20ms", provider.name()), |b| {
            b.iter(|| {
                machine.handle_gemini_frame(
                    black_box(&chunks_20[i % chunks_20.len()]),
                    Instant::now(),
                );
                i += 1;
                drain(&mut machine)
            });
        });

        // 240 ms at 24 kHz (11 520 bytes, the size the real service sends): 12 frames.
        let chunk_240 = model_turn_message(&pcm24k(5760));
        let mut machine = live_machine(provider);
        machine.handle_gemini_frame(&chunk_240, Instant::now());
        assert_eq!(
            drain(&mut machine),
            (12, 0),
            "240 ms in, twelve phone frames out"
        );
        group.throughput(Throughput::Elements(12));
        group.bench_function(format!("{}/240ms", provider.name()), |b| {
            b.iter(|| {
                machine.handle_gemini_frame(black_box(&chunk_240), Instant::now());
                drain(&mut machine)
            });
        });
    }
    group.finish();
}

/// The steps of each direction on their own (Twilio shapes), per 20 ms frame.
fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    group.throughput(Throughput::Elements(1));

    let media = Provider::Twilio.media_message(7, &mulaw_frame(0));
    let mut stream = Provider::Twilio.stream();
    let _ = stream.parse(&Provider::Twilio.start_message());
    group.bench_function("up/parse_and_base64_decode", |b| {
        b.iter(|| {
            let event = stream.parse(black_box(&media));
            matches!(event, Ok(telephony::PhoneEvent::Audio(a)) if a.len() == 160)
        });
    });

    let frame = mulaw_frame(0);
    let mut up = Uplink::new();
    let mut pcm16k = Vec::with_capacity(640);
    group.bench_function("up/mulaw_decode_and_resample_8k_16k", |b| {
        b.iter(|| {
            pcm16k.clear();
            up.push(black_box(&frame), &mut pcm16k);
            pcm16k.len()
        });
    });

    group.bench_function("up/base64_and_json_out", |b| {
        b.iter(|| {
            let mut message = String::with_capacity(96 + pcm16k.len() * 4 / 3);
            protocol::write_audio_message(black_box(&pcm16k), &mut message);
            message
        });
    });

    let chunk = model_turn_message(&pcm24k(480));
    group.bench_function("down/json_parse", |b| {
        b.iter(|| {
            let message: Result<ServerMessage<'_>, _> = serde_json::from_slice(black_box(&chunk));
            message.is_ok()
        });
    });

    let b64 = STANDARD.encode(pcm24k(480));
    let mut pcm = Vec::new();
    group.bench_function("down/base64_decode", |b| {
        b.iter(|| protocol::decode_audio(black_box(&b64), &mut pcm).is_ok());
    });
    let mut down = Downlink::new();
    let raw = pcm24k(480);
    group.bench_function("down/resample_24k_8k_and_mulaw", |b| {
        b.iter(|| {
            down.push(black_box(&raw));
            down.pop_frame()
        });
    });

    let mut twilio = Provider::Twilio.stream();
    let _ = twilio.parse(&Provider::Twilio.start_message());
    let out_frame = [0x55u8; 160];
    group.bench_function("down/provider_json_out", |b| {
        b.iter(|| twilio.encode(telephony::PhoneCommand::Play(black_box(&out_frame))));
    });
    group.finish();
}

criterion_group!(benches, uplink, downlink, parts);
criterion_main!(benches);
