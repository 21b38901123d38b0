//! Load benchmark: the real server binary, a fake Gemini Live that echoes audio back, and N
//! simulated phone callers sending 20 ms μ-law frames in real time, all on 127.0.0.1.
//!
//! ```text
//! cargo run --release --example load -- --calls 300 --seconds 60 --provider twilio
//! ```
//!
//! The server runs as a separate process (`target/release/gemini-phone`, built first with
//! `cargo build --release --bin gemini-phone` unless `--server-bin` is given), so its CPU time and
//! memory are read from `/proc/<pid>/stat` and `/proc/<pid>/status` apart from this generator's.
//!
//! Every caller sends one 160-byte frame each 20 ms on a fixed schedule (low-level noise, with a
//! 100 ms 1 kHz tone burst every 2.5 s at a per-call phase). The fake Gemini, in this process,
//! decodes each `realtimeInput.audio` chunk, resamples it 16 → 24 kHz and sends it straight back
//! as `serverContent.modelTurn` audio in a binary frame, as the real service does. Because the
//! fake and the callers share one clock, the time through the bridge is measured per direction:
//!
//! - uplink: caller sends frame k → the fake receives the audio that completes frame k;
//! - downlink: the fake sends the audio that completes phone frame j → the caller receives it;
//! - frame echo: caller sends frame k → caller receives returned frame k (whole round trip);
//! - burst: a tone burst sent → the same burst detected (Goertzel at 1 kHz) in the returned μ-law.
//!
//! Calls ramp up at `--ramp` per second; all N calls then run together for `--seconds`, the
//! measurement window, over which latency, CPU and memory are reported.

#[path = "../tests/support/answer_xml.rs"]
mod answer_xml;

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Upper bounds, so a typo cannot start a run that eats the machine.
const MAX_CALLS: usize = 2000;
const MAX_SECONDS: u64 = 600;
/// One phone frame: 20 ms of μ-law at 8 kHz.
const FRAME: Duration = Duration::from_millis(20);
const FRAME_BYTES: usize = 160;
/// 16 kHz samples per phone frame (uplink), 24 kHz samples per phone frame (downlink).
const UP_SAMPLES_PER_FRAME: u64 = 320;
const DOWN_SAMPLES_PER_FRAME: u64 = 480;
/// Frames at the start of each call left out of latency figures (session still opening).
const SETTLE_FRAMES: usize = 10;
/// The tone of the marked burst.
const TONE_HZ: f64 = 1000.0;
const TONE_AMPLITUDE: f64 = 8000.0;
/// Noise between bursts (peak amplitude in 16-bit scale).
const NOISE_AMPLITUDE: i32 = 40;
/// A frame counts as a late send when it leaves this long after its slot.
const LATE_SEND: Duration = Duration::from_millis(5);
/// How long callers wait at the end for frames still in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(3);
/// Time allowed for a call's WebSocket upgrade plus its Gemini session to appear.
const SETUP_WAIT: Duration = Duration::from_secs(10);
/// tungstenite zero-fills its whole read buffer (default 128 KiB) before every socket read;
/// our messages are under 2 KiB (phone) and 16 KiB (Gemini, 240 ms chunks), so keep it small.
const WS_READ_BUFFER: usize = 16 * 1024;
/// USER_HZ: the unit of utime/stime in /proc/<pid>/stat (fixed at 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator started: one clock for callers and the fake alike.
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProviderSel {
    Twilio,
    Plivo,
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Twilio,
    Plivo,
}

impl Provider {
    fn route(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Plivo => "plivo",
        }
    }
}

#[derive(Clone, Debug)]
struct Args {
    calls: usize,
    seconds: u64,
    provider: ProviderSel,
    server_bin: Option<PathBuf>,
    ramp_per_second: f64,
    settle_seconds: u64,
    burst_every_ms: u64,
    burst_ms: u64,
    echo_chunk_ms: u64,
    late_ms: u64,
    gen_threads: usize,
    server_env: Vec<(String, String)>,
    json: bool,
}

const USAGE: &str = "usage: cargo run --release --example load -- [options]
  --calls N            concurrent calls (default 50, at most 2000)
  --seconds T          measurement window with all calls live (default 30, at most 600)
  --provider P         twilio | plivo | mixed (default twilio)
  --server-bin PATH    server binary (default target/release/gemini-phone, built first)
  --ramp R             new calls per second while ramping up (default 50)
  --settle S           seconds between the last call starting and the window (default 2)
  --burst-every MS     tone burst period per call (default 2500)
  --burst-ms MS        tone burst length, a multiple of 20 (default 100)
  --echo-chunk-ms MS   fake Gemini sends audio back in chunks of this length (default 20;
                       the real service sends 200-240 ms)
  --late-ms MS         an echoed frame heard later than this after it was sent is late (default 20)
  --gen-threads N      generator runtime worker threads (default 2)
  --server-env K=V     extra environment for the server (repeatable), e.g. TOKIO_WORKER_THREADS=1
  --json               also print the report as one JSON object";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        calls: 50,
        seconds: 30,
        provider: ProviderSel::Twilio,
        server_bin: None,
        ramp_per_second: 50.0,
        settle_seconds: 2,
        burst_every_ms: 2500,
        burst_ms: 100,
        echo_chunk_ms: 20,
        late_ms: 20,
        gen_threads: 2,
        server_env: Vec::new(),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        }
        match flag.as_str() {
            "--calls" => args.calls = num("--calls", value("--calls")?)?,
            "--seconds" => args.seconds = num("--seconds", value("--seconds")?)?,
            "--provider" => {
                args.provider = match value("--provider")?.as_str() {
                    "twilio" => ProviderSel::Twilio,
                    "plivo" => ProviderSel::Plivo,
                    "mixed" => ProviderSel::Mixed,
                    other => {
                        return Err(format!(
                            "--provider: `{other}` is not twilio, plivo or mixed"
                        ));
                    }
                }
            }
            "--server-bin" => args.server_bin = Some(PathBuf::from(value("--server-bin")?)),
            "--ramp" => args.ramp_per_second = num("--ramp", value("--ramp")?)?,
            "--settle" => args.settle_seconds = num("--settle", value("--settle")?)?,
            "--burst-every" => args.burst_every_ms = num("--burst-every", value("--burst-every")?)?,
            "--burst-ms" => args.burst_ms = num("--burst-ms", value("--burst-ms")?)?,
            "--echo-chunk-ms" => {
                args.echo_chunk_ms = num("--echo-chunk-ms", value("--echo-chunk-ms")?)?
            }
            "--late-ms" => args.late_ms = num("--late-ms", value("--late-ms")?)?,
            "--gen-threads" => args.gen_threads = num("--gen-threads", value("--gen-threads")?)?,
            "--server-env" => {
                let pair = value("--server-env")?;
                let (k, v) = pair.split_once('=').ok_or("--server-env takes KEY=VALUE")?;
                args.server_env.push((k.to_owned(), v.to_owned()));
            }
            "--json" => args.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if args.calls == 0 || args.calls > MAX_CALLS {
        return Err(format!("--calls must be 1..={MAX_CALLS}"));
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    if !(1.0..=500.0).contains(&args.ramp_per_second) {
        return Err("--ramp must be 1..=500 calls per second".into());
    }
    if args.burst_ms == 0
        || !args.burst_ms.is_multiple_of(20)
        || args.burst_every_ms < 2 * args.burst_ms + 200
    {
        return Err("--burst-ms must be a multiple of 20 and --burst-every well above it".into());
    }
    if args.echo_chunk_ms == 0
        || !args.echo_chunk_ms.is_multiple_of(20)
        || args.echo_chunk_ms > 1000
    {
        return Err("--echo-chunk-ms must be a multiple of 20, at most 1000".into());
    }
    if args.gen_threads == 0 || args.gen_threads > 16 {
        return Err("--gen-threads must be 1..=16".into());
    }
    if args.settle_seconds > 60 {
        return Err("--settle must be at most 60".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Audio helpers (independent of the crate under test)

fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

fn mulaw_decode(byte: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = !byte;
    let exponent = i32::from((u >> 4) & 7);
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Power of the 1 kHz bin over one 160-sample frame (Goertzel; 1 kHz is bin 20 of 160 at 8 kHz).
fn tone_power(mulaw: &[u8]) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * TONE_HZ / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &b in mulaw {
        let s0 = f64::from(mulaw_decode(b)) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Power a full frame of the sent tone gives in [`tone_power`].
fn full_tone_power() -> f64 {
    let amplitude = TONE_AMPLITUDE * FRAME_BYTES as f64 / 2.0;
    amplitude * amplitude
}

/// Base64 payloads every caller sends: noise frames and one tone frame (1 kHz fits 160 samples
/// exactly 20 times, so consecutive tone frames join without a phase jump).
struct Payloads {
    noise: Vec<String>,
    tone: String,
}

impl Payloads {
    fn new() -> Self {
        let mut seed: u32 = 0x1234_5678;
        let mut noise = Vec::new();
        for _ in 0..64 {
            let frame: Vec<u8> = (0..FRAME_BYTES)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let r = (seed >> 16) as i32 % (2 * NOISE_AMPLITUDE + 1) - NOISE_AMPLITUDE;
                    mulaw_encode(r as i16)
                })
                .collect();
            noise.push(STANDARD.encode(frame));
        }
        let tone: Vec<u8> = (0..FRAME_BYTES)
            .map(|i| {
                let s = TONE_AMPLITUDE
                    * (2.0 * std::f64::consts::PI * TONE_HZ * i as f64 / 8000.0).sin();
                mulaw_encode(s.round() as i16)
            })
            .collect();
        Payloads {
            noise,
            tone: STANDARD.encode(tone),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State shared by one caller and its fake Gemini session

#[derive(Default)]
struct CallShared {
    /// Time each phone frame k was sent (ns since EPOCH), pushed by the caller.
    up_sent: Mutex<Vec<u64>>,
    /// (send time of frame k, µs from that send until the fake received its audio).
    up_latency: Mutex<Vec<(u64, u32)>>,
    /// Time the fake sent the audio completing phone frame j.
    down_sent: Mutex<Vec<u64>>,
    /// Audio messages and bytes the fake received, and protocol oddities it saw.
    fake_audio_messages: AtomicU64,
    fake_other_messages: AtomicU64,
    fake_errors: Mutex<Vec<String>>,
    fake_closed: AtomicBool,
}

/// A session the fake accepted, waiting for the caller that caused it.
type Pairing = oneshot::Sender<Arc<CallShared>>;

// ---------------------------------------------------------------------------------------------
// The fake Gemini Live server

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientMessage<'a> {
    #[serde(default, borrow)]
    realtime_input: Option<RealtimeInput<'a>>,
    #[serde(default)]
    setup: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RealtimeInput<'a> {
    #[serde(default, borrow)]
    audio: Option<AudioBlob<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AudioBlob<'a> {
    #[serde(borrow)]
    mime_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
}

async fn fake_gemini(
    listener: TcpListener,
    pairings: mpsc::UnboundedSender<Pairing>,
    chunk_frames: usize,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let pairings = pairings.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            fake_session(stream, pairings, chunk_frames).await;
        });
    }
}

async fn fake_session(
    stream: TcpStream,
    pairings: mpsc::UnboundedSender<Pairing>,
    chunk_frames: usize,
) {
    let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    // `setup` must come first.
    let setup_ok = match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<ClientMessage<'_>>(text.as_str())
            .ok()
            .is_some_and(|m| m.setup.is_some()),
        _ => false,
    };
    if !setup_ok {
        let _ = ws.close(None).await;
        return;
    }
    let (tx, rx) = oneshot::channel();
    if pairings.send(tx).is_err() {
        return;
    }
    if ws
        .send(Message::binary(b"{\"setupComplete\":{}}".to_vec()))
        .await
        .is_err()
    {
        return;
    }
    let Ok(Ok(call)) = tokio::time::timeout(SETUP_WAIT, rx).await else {
        let _ = ws.close(None).await;
        return;
    };

    let mut up_samples: u64 = 0;
    let mut down_samples: u64 = 0;
    let mut prev: i16 = 0;
    let mut pcm = Vec::with_capacity(4096);
    let mut out24: Vec<i16> = Vec::with_capacity(8192);
    let mut out_bytes: Vec<u8> = Vec::with_capacity(16_384);
    let chunk_samples = chunk_frames * DOWN_SAMPLES_PER_FRAME as usize;
    // With chunks longer than a frame, audio left over when the caller goes quiet is sent after
    // one chunk period, as the real service ends a turn, so no frame is held back for good.
    let chunk_period = FRAME * chunk_frames as u32;
    loop {
        let next = if out24.is_empty() {
            ws.next().await
        } else {
            match tokio::time::timeout(chunk_period, ws.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if !send_model_audio(
                        &mut ws,
                        &call,
                        &mut out24,
                        &mut out_bytes,
                        &mut down_samples,
                    )
                    .await
                    {
                        break;
                    }
                    continue;
                }
            }
        };
        let Some(frame) = next else { break };
        let received = now_ns();
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                lock(&call.fake_errors).push("client sent a binary frame".into());
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(message) = serde_json::from_str::<ClientMessage<'_>>(text.as_str()) else {
            lock(&call.fake_errors).push("client sent a frame that is not JSON".into());
            continue;
        };
        let Some(audio) = message.realtime_input.and_then(|r| r.audio) else {
            call.fake_other_messages.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if audio.mime_type != "audio/pcm;rate=16000" {
            lock(&call.fake_errors).push(format!("audio with mimeType {}", audio.mime_type));
        }
        pcm.clear();
        if STANDARD
            .decode_vec(audio.data.as_bytes(), &mut pcm)
            .is_err()
            || pcm.len() % 2 != 0
        {
            lock(&call.fake_errors).push("audio data is not base64 PCM16".into());
            continue;
        }
        call.fake_audio_messages.fetch_add(1, Ordering::Relaxed);

        // Uplink latency for every phone frame this chunk completes.
        let n = (pcm.len() / 2) as u64;
        let first = up_samples / UP_SAMPLES_PER_FRAME;
        up_samples += n;
        let last = up_samples / UP_SAMPLES_PER_FRAME;
        {
            let sent = lock(&call.up_sent);
            let mut lat = lock(&call.up_latency);
            for k in first..last {
                if let Some(&t) = sent.get(k as usize) {
                    lat.push((t, (received.saturating_sub(t) / 1000) as u32));
                }
            }
        }

        // 16 → 24 kHz by linear interpolation, one input sample of delay so chunk edges join.
        for pair in pcm.chunks_exact(4) {
            let a = i16::from_le_bytes([pair[0], pair[1]]);
            let b = i16::from_le_bytes([pair[2], pair[3]]);
            let (p, a32, b32) = (i32::from(prev), i32::from(a), i32::from(b));
            out24.push(prev);
            out24.push(((p + 2 * a32) / 3) as i16);
            out24.push(((2 * a32 + b32) / 3) as i16);
            // Positions 0, 2/3, 4/3 of the pair, taken one sample late.
            prev = b;
        }
        if out24.len() < chunk_samples {
            continue;
        }
        if !send_model_audio(
            &mut ws,
            &call,
            &mut out24,
            &mut out_bytes,
            &mut down_samples,
        )
        .await
        {
            break;
        }
    }
    call.fake_closed.store(true, Ordering::Relaxed);
}

/// Sends the 24 kHz audio gathered in `out24` as one `serverContent.modelTurn` binary message,
/// stamping the send time of every phone frame it completes. False once the socket failed.
async fn send_model_audio(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    call: &CallShared,
    out24: &mut Vec<i16>,
    out_bytes: &mut Vec<u8>,
    down_samples: &mut u64,
) -> bool {
    out_bytes.clear();
    out_bytes.extend(out24.iter().flat_map(|s| s.to_le_bytes()));
    let mut reply = String::with_capacity(160 + out_bytes.len() * 4 / 3);
    reply.push_str(
        "{\"serverContent\":{\"modelTurn\":{\"role\":\"model\",\"parts\":[{\"inlineData\":{\"mimeType\":\"audio/pcm;rate=24000\",\"data\":\"",
    );
    STANDARD.encode_string(&*out_bytes, &mut reply);
    reply.push_str("\"}}]}}}");
    let m = out24.len() as u64;
    out24.clear();
    let sending = now_ns();
    {
        let mut down = lock(&call.down_sent);
        let first = *down_samples / DOWN_SAMPLES_PER_FRAME;
        *down_samples += m;
        let last = *down_samples / DOWN_SAMPLES_PER_FRAME;
        for j in first..last {
            if down.len() == j as usize {
                down.push(sending);
            }
        }
    }
    ws.send(Message::binary(reply.into_bytes())).await.is_ok()
}

// ---------------------------------------------------------------------------------------------
// Callers

/// What the server sends a caller.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerEvent<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    stream_sid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    media: Option<ServerMedia<'a>>,
    /// Twilio `mark.name`.
    #[serde(default, borrow)]
    mark: Option<ServerMark<'a>>,
    /// Plivo `checkpoint` name.
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ServerMark<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

/// What the provider sends back once the audio before mark `name` has played: at once
/// here, as audio arrives in real time and the provider holds next to nothing.
fn mark_played_message(provider: Provider, id: usize, seq: u64, name: &str) -> String {
    match provider {
        Provider::Twilio => format!(
            r#"{{"event":"mark","sequenceNumber":"{seq}","streamSid":"MZload{id:028}","mark":{{"name":"{name}"}}}}"#
        ),
        Provider::Plivo => format!(
            r#"{{"event":"playedStream","sequenceNumber":{seq},"streamId":"11111111-0000-4000-8000-{id:012}","name":"{name}"}}"#
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerMedia<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    content_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    sample_rate: Option<u32>,
}

#[derive(Default)]
struct CallResult {
    failure: Option<String>,
    frames_sent: u64,
    frames_received: u64,
    bad_frames: u64,
    other_messages: u64,
    /// Marks and checkpoints acknowledged.
    marks_echoed: u64,
    late_sends: u64,
    max_send_lag_us: u64,
    late_echoes: u64,
    bursts_sent: u64,
    bursts_heard: u64,
    spurious_bursts: u64,
    burst_rtt_us: Vec<u32>,
    burst_offset_frames: Vec<i64>,
    frame_rtt_us: Vec<u32>,
    down_latency_us: Vec<u32>,
    up_latency_us: Vec<u32>,
    fake_errors: Vec<String>,
    setup_ms: f64,
}

struct Plan {
    server: SocketAddr,
    http: reqwest::Client,
    window_start: u64,
    window_end: u64,
    burst_every_frames: usize,
    burst_frames: usize,
    late_echo_us: u64,
}

struct Gate {
    pairings: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pairing>>,
}

fn twilio_call_sid(id: usize) -> String {
    format!("CAload{id:028}")
}

fn plivo_call_uuid(id: usize) -> String {
    format!("00000000-0000-4000-8000-{id:012}")
}

/// Answers the call through the server's answer webhook, as the provider would, and returns
/// the stream parameters its XML carries (among them the token that binds the stream).
async fn answer_call(
    http: &reqwest::Client,
    server: SocketAddr,
    provider: Provider,
    id: usize,
) -> Result<Vec<(String, String)>, String> {
    let form = match provider {
        Provider::Twilio => vec![
            ("CallSid", twilio_call_sid(id)),
            ("From", "+15550001111".to_owned()),
            ("To", "+15550002222".to_owned()),
            ("Direction", "inbound".to_owned()),
        ],
        Provider::Plivo => vec![
            ("CallUUID", plivo_call_uuid(id)),
            ("From", "15550001111".to_owned()),
            ("To", "15550002222".to_owned()),
            ("Direction", "inbound".to_owned()),
        ],
    };
    let url = format!("http://{server}/{}/answer", provider.route());
    let response = http
        .post(url)
        .form(&form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let xml = response.text().await.map_err(|e| e.to_string())?;
    Ok(answer_xml::stream_params(&xml))
}

fn twilio_start(id: usize, params: &[(String, String)]) -> String {
    let custom: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let custom = serde_json::Value::Object(custom);
    let sid = twilio_call_sid(id);
    format!(
        r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"ACload0000000000000000000000000000","streamSid":"MZload{id:028}","callSid":"{sid}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{custom}}},"streamSid":"MZload{id:028}"}}"#
    )
}

fn plivo_start(id: usize, params: &[(String, String)]) -> String {
    let extra = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let uuid = plivo_call_uuid(id);
    format!(
        r#"{{"event":"start","sequenceNumber":1,"start":{{"callId":"{uuid}","streamId":"11111111-0000-4000-8000-{id:012}","accountId":"MALOAD0000000000000","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000}}}},"extra_headers":"{extra}"}}"#
    )
}

fn media_message(provider: Provider, id: usize, seq: u64, chunk: u64, payload: &str) -> String {
    match provider {
        Provider::Twilio => format!(
            r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}},"streamSid":"MZload{id:028}"}}"#,
            (chunk - 1) * 20
        ),
        Provider::Plivo => format!(
            r#"{{"event":"media","sequenceNumber":{seq},"streamId":"11111111-0000-4000-8000-{id:012}","media":{{"track":"inbound","timestamp":"{}","chunk":{chunk},"payload":"{payload}"}},"extra_headers":"from=15550001111;to=15550002222;direction=inbound"}}"#,
            (chunk - 1) * 20
        ),
    }
}

fn stop_message(provider: Provider, id: usize, seq: u64) -> String {
    match provider {
        Provider::Twilio => format!(
            r#"{{"event":"stop","sequenceNumber":"{seq}","stop":{{"accountSid":"ACload0000000000000000000000000000","callSid":"CAload{id:028}"}},"streamSid":"MZload{id:028}"}}"#
        ),
        Provider::Plivo => format!(
            r#"{{"event":"stop","sequenceNumber":{seq},"streamId":"11111111-0000-4000-8000-{id:012}"}}"#
        ),
    }
}

/// Burst onsets waiting to be heard back: (frame index, send time).
struct BurstTracker {
    pending: VecDeque<(usize, u64, bool)>,
    in_burst: bool,
    quiet_frames: u32,
    threshold: f64,
}

async fn run_caller(
    id: usize,
    provider: Provider,
    start_at: tokio::time::Instant,
    plan: Arc<Plan>,
    gate: Arc<Gate>,
    payloads: Arc<Payloads>,
) -> CallResult {
    tokio::time::sleep_until(start_at).await;
    let mut result = CallResult::default();
    let shared = Arc::new(CallShared::default());
    let url = format!("ws://{}/{}/stream", plan.server, provider.route());
    let setup_began = Instant::now();
    let params = match answer_call(&plan.http, plan.server, provider, id).await {
        Ok(params) => params,
        Err(e) => {
            result.failure = Some(format!("answer webhook: {e}"));
            return result;
        }
    };

    // One call at a time between `start` and its Gemini session appearing on the fake, so each
    // fake session is paired with the caller that caused it.
    let socket = {
        let mut pairings = gate.pairings.lock().await;
        let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let mut ws = match tokio::time::timeout(SETUP_WAIT, connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                result.failure = Some(format!("connect: {e}"));
                return result;
            }
            Err(_) => {
                result.failure = Some("connect: timed out".into());
                return result;
            }
        };
        let opening = match provider {
            Provider::Twilio => vec![
                r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned(),
                twilio_start(id, &params),
            ],
            Provider::Plivo => vec![plivo_start(id, &params)],
        };
        for text in opening {
            if let Err(e) = ws.send(Message::text(text)).await {
                result.failure = Some(format!("send start: {e}"));
                return result;
            }
        }
        match tokio::time::timeout(SETUP_WAIT, pairings.recv()).await {
            Ok(Some(pairing)) => {
                if pairing.send(Arc::clone(&shared)).is_err() {
                    result.failure = Some("fake Gemini session vanished".into());
                    return result;
                }
            }
            _ => {
                result.failure = Some("no Gemini session opened for the call".into());
                return result;
            }
        }
        ws
    };
    result.setup_ms = setup_began.elapsed().as_secs_f64() * 1e3;

    let (mut tx, mut rx) = socket.split();
    let t0 = tokio::time::Instant::now();
    // Burst: the next tick after a fixed schedule, so late sends stay visible as lag while every
    // frame is still sent (the bridge must see an unbroken stream).
    let mut ticker = tokio::time::interval_at(t0, FRAME);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let burst_phase = (id * 37) % plan.burst_every_frames.max(1);
    let mut bursts = BurstTracker {
        pending: VecDeque::new(),
        in_burst: false,
        quiet_frames: 0,
        threshold: full_tone_power() * 0.1,
    };
    let mut seq: u64 = if provider == Provider::Twilio { 2 } else { 1 };
    let mut k: usize = 0;
    let mut payload_buf = Vec::with_capacity(FRAME_BYTES);
    let mut sending = true;
    let mut drain_deadline = None;
    let late_send_us = LATE_SEND.as_micros() as u64;
    let stream_sid = format!("MZload{id:028}");

    loop {
        tokio::select! {
            _ = ticker.tick(), if sending => {
                let ideal = t0 + FRAME * k as u32;
                let now = now_ns();
                if now >= plan.window_end {
                    sending = false;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_WAIT);
                    if result.frames_received >= result.frames_sent {
                        break;
                    }
                    continue;
                }
                let lag = tokio::time::Instant::now().saturating_duration_since(ideal).as_micros() as u64;
                result.max_send_lag_us = result.max_send_lag_us.max(lag);
                if lag > late_send_us {
                    result.late_sends += 1;
                }
                let in_burst = k >= burst_phase && (k - burst_phase) % plan.burst_every_frames < plan.burst_frames;
                let burst_onset = k >= burst_phase && (k - burst_phase).is_multiple_of(plan.burst_every_frames);
                let payload = if in_burst { &payloads.tone } else { &payloads.noise[k % payloads.noise.len()] };
                seq += 1;
                let text = media_message(provider, id, seq, k as u64 + 1, payload);
                let sent_at = now_ns();
                lock(&shared.up_sent).push(sent_at);
                if burst_onset {
                    let counted = (plan.window_start..plan.window_end).contains(&sent_at);
                    bursts.pending.push_back((k, sent_at, counted));
                    if counted {
                        result.bursts_sent += 1;
                    }
                }
                if let Err(e) = tx.send(Message::text(text)).await {
                    result.failure = Some(format!("send media: {e}"));
                    break;
                }
                result.frames_sent += 1;
                k += 1;
            }
            () = sleep_until_opt(drain_deadline) => break,
            frame = rx.next() => {
                let received = now_ns();
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        result.failure = Some(format!("server closed the call early: {close:?}"));
                        break;
                    }
                    Some(Ok(_)) => { result.other_messages += 1; continue; }
                    Some(Err(e)) => { result.failure = Some(format!("receive: {e}")); break; }
                    None => { result.failure = Some("server dropped the connection".into()); break; }
                };
                let Ok(event) = serde_json::from_str::<ServerEvent<'_>>(text.as_str()) else {
                    result.bad_frames += 1;
                    continue;
                };
                let media_event = match provider {
                    Provider::Twilio => "media",
                    Provider::Plivo => "playAudio",
                };
                if event.event != media_event {
                    let mark = event.mark.as_ref().map(|m| &m.name).or(event.name.as_ref());
                    if let Some(name) = mark.filter(|_| matches!(&*event.event, "mark" | "checkpoint")) {
                        seq += 1;
                        let echo = mark_played_message(provider, id, seq, name);
                        if let Err(e) = tx.send(Message::text(echo)).await {
                            result.failure = Some(format!("send mark echo: {e}"));
                            break;
                        }
                        result.marks_echoed += 1;
                    } else {
                        result.other_messages += 1;
                    }
                    continue;
                }
                let Some(media) = event.media else { result.bad_frames += 1; continue; };
                let shape_ok = match provider {
                    Provider::Twilio => event.stream_sid.as_deref() == Some(stream_sid.as_str()),
                    Provider::Plivo => media.content_type.as_deref() == Some("audio/x-mulaw") && media.sample_rate == Some(8000),
                };
                payload_buf.clear();
                if !shape_ok
                    || STANDARD.decode_vec(media.payload.as_bytes(), &mut payload_buf).is_err()
                    || payload_buf.len() != FRAME_BYTES
                {
                    result.bad_frames += 1;
                    result.frames_received += 1;
                    continue;
                }
                let j = result.frames_received as usize;
                result.frames_received += 1;
                let sent_at = lock(&shared.up_sent).get(j).copied();
                let fake_sent = lock(&shared.down_sent).get(j).copied();
                if let Some(sent_at) = sent_at {
                    let rtt = received.saturating_sub(sent_at) / 1000;
                    if rtt > plan.late_echo_us && j >= SETTLE_FRAMES {
                        result.late_echoes += 1;
                    }
                    if j >= SETTLE_FRAMES && (plan.window_start..plan.window_end).contains(&sent_at) {
                        result.frame_rtt_us.push(rtt as u32);
                        if let Some(f) = fake_sent {
                            result.down_latency_us.push((received.saturating_sub(f) / 1000) as u32);
                        }
                    }
                }
                // Burst detection on the returned audio.
                let power = tone_power(&payload_buf);
                if power > bursts.threshold {
                    bursts.quiet_frames = 0;
                    if !bursts.in_burst {
                        bursts.in_burst = true;
                        match_burst(&mut bursts, &mut result, j, received, plan.burst_frames);
                    }
                } else if bursts.in_burst {
                    bursts.quiet_frames += 1;
                    if bursts.quiet_frames >= 2 {
                        bursts.in_burst = false;
                    }
                }
                if !sending && result.frames_received >= result.frames_sent {
                    break;
                }
            }
        }
    }

    if result.failure.is_none() {
        seq += 1;
        let _ = tx
            .send(Message::text(stop_message(provider, id, seq)))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), tx.close()).await;
        // Let the server finish its side of the close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while rx.next().await.is_some() {}
        })
        .await;
    }
    result.up_latency_us = lock(&shared.up_latency)
        .iter()
        .enumerate()
        .filter(|(k, (t, _))| {
            *k >= SETTLE_FRAMES && (plan.window_start..plan.window_end).contains(t)
        })
        .map(|(_, (_, us))| *us)
        .collect();
    result.fake_errors = lock(&shared.fake_errors).clone();
    result
}

fn match_burst(
    bursts: &mut BurstTracker,
    result: &mut CallResult,
    j: usize,
    received: u64,
    burst_frames: usize,
) {
    while let Some(&(k, sent_at, counted)) = bursts.pending.front() {
        if j + 1 < k {
            // Heard before it was sent: noise or a mispaired stream.
            if counted {
                result.spurious_bursts += 1;
            }
            return;
        }
        bursts.pending.pop_front();
        if j <= k + burst_frames {
            if counted {
                result.bursts_heard += 1;
                result
                    .burst_rtt_us
                    .push((received.saturating_sub(sent_at) / 1000) as u32);
                result.burst_offset_frames.push(j as i64 - k as i64);
            }
            return;
        }
        // Older burst never heard: it counts as missing at the end (sent but not heard).
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Process figures from /proc

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
}

/// A `Vm*` line of /proc/<pid>/status in KiB.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn thread_count(pid: &str) -> Option<u64> {
    status_kib(pid, "Threads:")
}

fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores, {model}, {:.1} GiB RAM",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

// ---------------------------------------------------------------------------------------------
// The server process

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_server() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the server: cargo build --release --bin gemini-phone");
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--bin", "gemini-phone"])
        .current_dir(repo_dir())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release --bin gemini-phone failed".into());
    }
    Ok(repo_dir().join("target/release/gemini-phone"))
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `GET /health` until it answers 200 or `deadline` passes.
fn wait_healthy(addr: SocketAddr, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let request =
                format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            if s.write_all(request.as_bytes()).is_ok()
                && s.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Report

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0)
}

struct Dist {
    n: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Dist {
    fn of(mut v: Vec<u32>) -> Dist {
        v.sort_unstable();
        Dist {
            n: v.len(),
            p50: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
            max: v.last().map(|&m| f64::from(m) / 1000.0),
        }
    }

    fn text(&self) -> String {
        let f = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.2}"));
        format!(
            "p50 {} ms  p99 {} ms  max {} ms  (n={})",
            f(self.p50),
            f(self.p99),
            f(self.max),
            self.n
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"n": self.n, "p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max})
    }
}

#[derive(Default, Clone, Copy)]
struct Sample {
    at: u64,
    server_cpu: f64,
    gen_cpu: f64,
    server_rss_kib: u64,
    /// Busy CPU seconds of the whole machine (all processes, all cores).
    machine_busy: f64,
}

/// Busy CPU seconds of the whole machine from /proc/stat (everything but idle and iowait).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle) / CLOCK_TICKS_PER_SECOND)
}

fn sample(server_pid: &str) -> Sample {
    Sample {
        at: now_ns(),
        server_cpu: cpu_seconds(server_pid).unwrap_or(0.0),
        gen_cpu: cpu_seconds("self").unwrap_or(0.0),
        server_rss_kib: status_kib(server_pid, "VmRSS:").unwrap_or(0),
        machine_busy: machine_busy_seconds().unwrap_or(0.0),
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    EPOCH.get_or_init(Instant::now);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.gen_threads)
        .enable_all()
        .build()
        .expect("generator runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => tokio::task::spawn_blocking(build_server)
            .await
            .map_err(|e| e.to_string())??,
    };
    let server_bin = std::fs::canonicalize(&server_bin)
        .map_err(|e| format!("{}: {e}; run cargo build --release", server_bin.display()))?;

    // The fake Gemini Live, in this process.
    let fake = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind fake Gemini: {e}"))?;
    let fake_addr = fake.local_addr().map_err(|e| e.to_string())?;
    let (pairings_tx, pairings_rx) = mpsc::unbounded_channel();
    let chunk_frames = (args.echo_chunk_ms / 20) as usize;
    tokio::spawn(fake_gemini(fake, pairings_tx, chunk_frames));

    // The server, as its own process.
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let work_dir = repo_dir().join("target/load");
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| format!("create {}: {e}", work_dir.display()))?;
    let log_path = work_dir.join(format!("server-{port}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(&server_bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GEMINI_API_KEY", "load-test")
        .env(
            "GEMINI_LIVE_URL",
            format!("ws://{fake_addr}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"),
        )
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("PROMPTS_DIR", repo_dir().join("prompts"))
        .env("DATABASE_URL", format!("sqlite://{}", work_dir.join(format!("load-{port}.db")).display()))
        .env("GEMINI_SETUP_TIMEOUT_SECS", "10")
        .env("RUST_LOG", "warn")
        .envs(args.server_env.iter().map(|(k, v)| (k, v)))
        .current_dir(&work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {}: {e}", server_bin.display()))?;
    let pid = child.id().ok_or("server exited at once")?.to_string();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let healthy = tokio::task::spawn_blocking(move || {
        wait_healthy(server, Instant::now() + Duration::from_secs(15))
    })
    .await
    .unwrap_or(false);
    if !healthy {
        let _ = child.start_kill();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(format!("server did not become healthy; its log:\n{log}"));
    }
    let baseline = sample(&pid);

    // The plan: ramp, settle, window.
    let ramp = Duration::from_secs_f64(args.calls as f64 / args.ramp_per_second);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let start_ns = now_ns() + 200_000_000;
    let window_start =
        start_ns + (ramp + Duration::from_secs(args.settle_seconds)).as_nanos() as u64;
    let window_end = window_start + args.seconds * 1_000_000_000;
    let plan = Arc::new(Plan {
        server,
        http: {
            gemini_phone::telephony::rest::install_crypto_provider();
            reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("HTTP client")
        },
        window_start,
        window_end,
        burst_every_frames: (args.burst_every_ms / 20) as usize,
        burst_frames: (args.burst_ms / 20) as usize,
        late_echo_us: args.late_ms * 1000,
    });
    let gate = Arc::new(Gate {
        pairings: tokio::sync::Mutex::new(pairings_rx),
    });
    let payloads = Arc::new(Payloads::new());

    eprintln!(
        "server pid {pid} on {server}; {} calls ramping at {}/s, window {} s starts in {:.1} s",
        args.calls,
        args.ramp_per_second,
        args.seconds,
        (window_start.saturating_sub(now_ns())) as f64 / 1e9
    );

    // Sampling: RSS every second; CPU at the window's edges.
    let monitor = {
        let pid = pid.clone();
        let plan = Arc::clone(&plan);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            loop {
                ticker.tick().await;
                let s = sample(&pid);
                samples.push(s);
                if s.at >= plan.window_end {
                    break;
                }
            }
            samples
        })
    };
    // The window's exact edges.
    let edges = {
        let pid = pid.clone();
        let plan = Arc::clone(&plan);
        tokio::spawn(async move {
            let until = |ns: u64| {
                tokio::time::Instant::now() + Duration::from_nanos(ns.saturating_sub(now_ns()))
            };
            tokio::time::sleep_until(until(plan.window_start)).await;
            let a = sample(&pid);
            tokio::time::sleep_until(until(plan.window_end)).await;
            let b = sample(&pid);
            (a, b)
        })
    };

    let mut callers = Vec::with_capacity(args.calls);
    for id in 0..args.calls {
        let provider = match args.provider {
            ProviderSel::Twilio => Provider::Twilio,
            ProviderSel::Plivo => Provider::Plivo,
            ProviderSel::Mixed if id % 2 == 0 => Provider::Twilio,
            ProviderSel::Mixed => Provider::Plivo,
        };
        // Real calls start at random moments, so their 20 ms frame clocks are spread over the
        // frame period; a ramp of exactly 50/s would otherwise put every caller on one phase.
        let phase = (id as f64 * 0.618_033_988_75).fract() * FRAME.as_secs_f64();
        let at = start + Duration::from_secs_f64(id as f64 / args.ramp_per_second + phase);
        callers.push(tokio::spawn(run_caller(
            id,
            provider,
            at,
            Arc::clone(&plan),
            Arc::clone(&gate),
            Arc::clone(&payloads),
        )));
    }
    let mut results = Vec::with_capacity(callers.len());
    for caller in callers {
        match caller.await {
            Ok(r) => results.push(r),
            Err(e) => results.push(CallResult {
                failure: Some(format!("caller task failed: {e}")),
                ..CallResult::default()
            }),
        }
    }
    let (edge_start, edge_end) = edges.await.map_err(|e| e.to_string())?;
    let samples = monitor.await.map_err(|e| e.to_string())?;
    let hwm_kib = status_kib(&pid, "VmHWM:").unwrap_or(0);
    let threads = thread_count(&pid).unwrap_or(0);
    let gen_hwm_kib = status_kib("self", "VmHWM:").unwrap_or(0);
    let gen_cpu_total = cpu_seconds("self").unwrap_or(0.0);
    let server_alive = matches!(child.try_wait(), Ok(None));
    let _ = child.start_kill();
    let _ = child.wait().await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let warn_lines = log.lines().filter(|l| l.contains("WARN")).count();
    let error_lines = log.lines().filter(|l| l.contains("ERROR")).count();

    // Aggregate.
    let window_s = (edge_end.at - edge_start.at) as f64 / 1e9;
    let server_cpu = edge_end.server_cpu - edge_start.server_cpu;
    let gen_cpu = edge_end.gen_cpu - edge_start.gen_cpu;
    let machine_busy = edge_end.machine_busy - edge_start.machine_busy;
    let others_cpu = (machine_busy - server_cpu - gen_cpu).max(0.0);
    let call_seconds = args.calls as f64 * window_s;
    let in_window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= window_start && s.at <= window_end)
        .collect();
    let steady_rss = in_window
        .iter()
        .map(|s| s.server_rss_kib)
        .max()
        .unwrap_or(0);
    let rss_per_call_kib =
        steady_rss.saturating_sub(baseline.server_rss_kib) as f64 / args.calls as f64;

    let completed = results.iter().filter(|r| r.failure.is_none()).count();
    let failed = results.len() - completed;
    let mut failures: Vec<String> = results.iter().filter_map(|r| r.failure.clone()).collect();
    failures.sort();
    failures.dedup();
    let sum = |f: fn(&CallResult) -> u64| results.iter().map(f).sum::<u64>();
    let frames_sent = sum(|r| r.frames_sent);
    let frames_received = sum(|r| r.frames_received);
    let missing = results
        .iter()
        .map(|r| r.frames_sent.saturating_sub(r.frames_received))
        .sum::<u64>();
    let bad = sum(|r| r.bad_frames);
    let other = sum(|r| r.other_messages);
    let marks_echoed = sum(|r| r.marks_echoed);
    let late_sends = sum(|r| r.late_sends);
    let late_echoes = sum(|r| r.late_echoes);
    let max_send_lag_ms =
        results.iter().map(|r| r.max_send_lag_us).max().unwrap_or(0) as f64 / 1000.0;
    let bursts_sent = sum(|r| r.bursts_sent);
    let bursts_heard = sum(|r| r.bursts_heard);
    let spurious = sum(|r| r.spurious_bursts);
    let mut fake_errors: Vec<String> = results.iter().flat_map(|r| r.fake_errors.clone()).collect();
    fake_errors.sort();
    fake_errors.dedup();
    let concat = |f: fn(&CallResult) -> &Vec<u32>| {
        results
            .iter()
            .flat_map(|r| f(r).iter().copied())
            .collect::<Vec<u32>>()
    };
    let burst = Dist::of(concat(|r| &r.burst_rtt_us));
    let frame_rtt = Dist::of(concat(|r| &r.frame_rtt_us));
    let up = Dist::of(concat(|r| &r.up_latency_us));
    let down = Dist::of(concat(|r| &r.down_latency_us));
    let mut offsets: Vec<i64> = results
        .iter()
        .flat_map(|r| r.burst_offset_frames.iter().copied())
        .collect();
    offsets.sort_unstable();
    let offset_text = if offsets.is_empty() {
        "-".to_owned()
    } else {
        format!("{}..{} frames", offsets[0], offsets[offsets.len() - 1])
    };
    let setup = Dist::of(
        results
            .iter()
            .map(|r| (r.setup_ms * 1000.0) as u32)
            .collect(),
    );
    let provider_name = match args.provider {
        ProviderSel::Twilio => "twilio",
        ProviderSel::Plivo => "plivo",
        ProviderSel::Mixed => "mixed",
    };
    let ms_per_call_second = server_cpu * 1000.0 / call_seconds;

    let ok = failed == 0 && missing == 0 && bad == 0 && server_alive && bursts_heard == bursts_sent;
    println!("gemini-phone load benchmark");
    println!("  machine        {}", machine_description());
    println!(
        "  run            {} {} calls, ramp {}/s, window {:.1} s, echo chunk {} ms, generator {} threads",
        args.calls,
        provider_name,
        args.ramp_per_second,
        window_s,
        args.echo_chunk_ms,
        args.gen_threads
    );
    println!(
        "  server         {} (pid {pid}, {threads} threads, alive at end: {server_alive})",
        server_bin.display()
    );
    println!("  calls          completed {completed}  failed {failed}");
    for f in failures.iter().take(5) {
        println!("                 failure: {f}");
    }
    println!(
        "  frames         sent {frames_sent}  received {frames_received}  missing {missing}  not 160 B {bad}  marks echoed {marks_echoed}  other msgs {other}"
    );
    println!(
        "  late           sends >{} ms after slot {late_sends} (max lag {max_send_lag_ms:.2} ms)  echoes >{} ms {late_echoes}",
        LATE_SEND.as_millis(),
        args.late_ms
    );
    println!(
        "  bursts         sent {bursts_sent}  heard {bursts_heard}  missing {}  spurious {spurious}  onset offset {offset_text}",
        bursts_sent.saturating_sub(bursts_heard)
    );
    println!("  burst RTT      {}", burst.text());
    println!("  frame RTT      {}", frame_rtt.text());
    println!(
        "  bridge uplink  {}  (caller send -> fake Gemini receive)",
        up.text()
    );
    println!(
        "  bridge downlnk {}  (fake Gemini send -> caller receive)",
        down.text()
    );
    println!("  call setup     {}", setup.text());
    println!(
        "  server CPU     {server_cpu:.2} s over {window_s:.1} s = {:.1}% of one core; {ms_per_call_second:.3} ms per call-second ({:.1} ms per call-minute)",
        server_cpu / window_s * 100.0,
        ms_per_call_second * 60.0
    );
    println!(
        "  server memory  RSS idle {:.1} MiB, in window max {:.1} MiB, peak VmHWM {:.1} MiB; {rss_per_call_kib:.1} KiB per call",
        baseline.server_rss_kib as f64 / 1024.0,
        steady_rss as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    println!(
        "  generator      CPU {gen_cpu:.2} s over window = {:.1}% of one core ({:.1}% of the machine); {gen_cpu_total:.1} s in all; VmHWM {:.1} MiB",
        gen_cpu / window_s * 100.0,
        gen_cpu / window_s * 100.0
            / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        gen_hwm_kib as f64 / 1024.0
    );
    println!(
        "  machine        busy {:.1}% of {} cores; other processes {:.1}% of one core (should be near 0)",
        machine_busy / window_s * 100.0
            / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        others_cpu / window_s * 100.0
    );
    println!(
        "  server log     {warn_lines} WARN, {error_lines} ERROR lines ({})",
        log_path.display()
    );
    for e in fake_errors.iter().take(5) {
        println!("  fake Gemini    {e}");
    }
    println!("  verdict        {}", if ok { "PASS" } else { "FAIL" });

    if args.json {
        let report = serde_json::json!({
            "calls": args.calls,
            "provider": provider_name,
            "window_seconds": window_s,
            "echo_chunk_ms": args.echo_chunk_ms,
            "completed": completed,
            "failed": failed,
            "failures": failures,
            "frames": {"sent": frames_sent, "received": frames_received, "missing": missing, "not_160_bytes": bad,
                       "late_sends": late_sends, "max_send_lag_ms": max_send_lag_ms, "late_echoes": late_echoes},
            "bursts": {"sent": bursts_sent, "heard": bursts_heard, "spurious": spurious},
            "burst_rtt": burst.json(),
            "frame_rtt": frame_rtt.json(),
            "bridge_uplink": up.json(),
            "bridge_downlink": down.json(),
            "call_setup": setup.json(),
            "server": {"cpu_seconds": server_cpu, "cpu_ms_per_call_second": ms_per_call_second,
                       "rss_idle_kib": baseline.server_rss_kib, "rss_window_max_kib": steady_rss,
                       "vm_hwm_kib": hwm_kib, "rss_per_call_kib": rss_per_call_kib, "threads": threads,
                       "alive": server_alive, "log_warn_lines": warn_lines, "log_error_lines": error_lines},
            "generator": {"cpu_seconds": gen_cpu, "cpu_fraction_of_core": gen_cpu / window_s,
                          "vm_hwm_kib": gen_hwm_kib},
            "machine": machine_description(),
            "machine_busy_cpu_seconds": machine_busy,
            "other_processes_cpu_seconds": others_cpu,
            "pass": ok,
        });
        println!("{report}");
    }
    Ok(ok)
}
