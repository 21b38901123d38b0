//! A fake Gemini Live (BidiGenerateContent) WebSocket server that speaks the real wire protocol
//! (`/work/shared/protocols/gemini-live.md`): JSON objects, `setup` first, server frames sent as
//! **binary** like AI Studio does, close codes/reasons like the real service.
//!
//! It knows nothing about the crate under test: point `GEMINI_LIVE_URL` at [`FakeGemini::url`].
#![allow(dead_code)]

#[path = "gemini_schema.rs"]
pub mod schema;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Default timeout tests can use for waits against the fake.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The path of the real AI Studio v1beta Live endpoint (the fake accepts any path).
pub const GEMINI_LIVE_PATH: &str =
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

/// How long a connection may stay silent before its `setup` frame (then the fake hangs up).
const SETUP_WAIT: Duration = Duration::from_secs(10);
/// How long the fake waits for the client's reply after it sent a close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Capacity of a session's inbox; messages beyond it are counted in `dropped_inbound` and lost.
const INBOX_CAPACITY: usize = 65_536;

/// The path of the Vertex AI Live endpoint (v1beta1), which the fake demands in Vertex mode.
pub const VERTEX_LIVE_PATH: &str =
    "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent";

/// What the fake demands of a connection when it acts as Vertex AI.
#[derive(Clone, Debug, Default)]
pub struct VertexMode {
    /// Bearer tokens it accepts, shared with whoever issues them (a fake token server adds
    /// each token it hands out and removes it when it lapses).
    pub live_tokens: Arc<Mutex<HashSet<String>>>,
    /// `setup.model` must be `projects/{project}/locations/{location}/publishers/google/models/…`.
    pub project: String,
    /// See `project`.
    pub location: String,
}

impl VertexMode {
    /// Why Vertex would refuse this upgrade (status), or `None` to accept it.
    fn refuse_upgrade(&self, req: &Request) -> Option<u16> {
        if req.uri().path() != VERTEX_LIVE_PATH {
            return Some(404);
        }
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            Some(token) if self.live_tokens.lock().unwrap().contains(token) => None,
            _ => Some(401),
        }
    }

    /// Why Vertex would refuse this setup (close 1007 reason), or `None`.
    fn refuse_model(&self, setup: &Value) -> Option<String> {
        let model = setup["model"].as_str().unwrap_or_default();
        let prefix = format!(
            "projects/{}/locations/{}/publishers/google/models/",
            self.project, self.location
        );
        match model.strip_prefix(&prefix) {
            Some(id) if !id.is_empty() && !id.contains('/') => None,
            // Close reasons are cut at 123 bytes, so the reason stays short.
            _ => Some(format!("Invalid Vertex model resource: {model}")),
        }
    }
}

/// What the fake does with each new connection (can be changed between connections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Read `{"setup":…}`, reply `{"setupComplete":{}}` as a binary frame, then follow the test.
    Normal,
    /// Refuse the HTTP upgrade with this status (e.g. 401/403/429), body is a Google-style error.
    RejectHandshake(u16),
    /// Read setup, then close with this code and reason instead of `setupComplete`.
    CloseOnSetup(u16, String),
    /// Read setup and never answer it (the test may still `send` a `setupComplete` by hand).
    NeverCompleteSetup,
    /// Like `Normal`, and every `realtimeInput.audio` chunk (16 kHz) is sent straight back as model
    /// audio at 24 kHz. Upsampling is plain linear interpolation (2 samples → 3); fidelity is not
    /// the point, only that audio flows both ways at the right rates.
    Echo,
    /// Like `Normal`, and every text turn (`realtimeInput.text`, or `clientContent` with
    /// `turnComplete: true`) is answered as the real service answers one: a short model audio
    /// chunk ([`SPOKEN_ANSWER_SAMPLES`] samples at 24 kHz), then `turnComplete`.
    AnswerText,
}

/// Time the fake takes, as the real service does over a network (all zero by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Delays {
    /// Before answering the WebSocket upgrade.
    pub handshake: Duration,
    /// Between `setup` and `setupComplete`.
    pub setup_complete: Duration,
    /// Between a text turn and its spoken answer (under `Behaviour::AnswerText`).
    pub first_audio: Duration,
}

/// The HTTP upgrade request of one connection, as the fake saw it.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// Request target as sent (path plus query, e.g. `/ws/…BidiGenerateContent?key=…`).
    pub uri: String,
    /// Path part of the request target.
    pub path: String,
    /// Value of the `x-goog-api-key` header, if any.
    pub api_key: Option<String>,
    /// All request headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    /// First value of a request header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake Gemini Live server on 127.0.0.1; dropping it stops it and cuts all connections.
pub struct FakeGemini {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    vertex: Arc<Mutex<Option<VertexMode>>>,
    delays: Arc<Mutex<Delays>>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    sessions: mpsc::UnboundedReceiver<GeminiSession>,
    accept_task: JoinHandle<()>,
    _shutdown: watch::Sender<()>,
}

impl Drop for FakeGemini {
    /// Stop accepting; the dropped shutdown sender ends every connection task.
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl FakeGemini {
    /// Bind 127.0.0.1:0 and start accepting WebSocket upgrades on any path.
    pub async fn start(behaviour: Behaviour) -> FakeGemini {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeGemini: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeGemini: local_addr");
        let behaviour = Arc::new(Mutex::new(behaviour));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let vertex = Arc::new(Mutex::new(None));
        let delays = Arc::new(Mutex::new(Delays::default()));
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            behaviour.clone(),
            vertex.clone(),
            delays.clone(),
            handshakes.clone(),
            sessions_tx,
            shutdown_rx,
        ));
        FakeGemini {
            addr,
            behaviour,
            vertex,
            delays,
            handshakes,
            sessions,
            accept_task,
            _shutdown: shutdown_tx,
        }
    }

    /// `ws://127.0.0.1:PORT/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, GEMINI_LIVE_PATH)
    }

    /// `ws://127.0.0.1:PORT/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent`:
    /// the AI Studio version that takes the expressive options.
    pub fn url_v1alpha(&self) -> String {
        format!(
            "ws://{}{}",
            self.addr,
            GEMINI_LIVE_PATH.replace(".v1beta.", ".v1alpha.")
        )
    }

    /// The socket address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent`.
    pub fn vertex_url(&self) -> String {
        format!("ws://{}{}", self.addr, VERTEX_LIVE_PATH)
    }

    /// Act as Vertex AI for connections accepted from now on: only [`VERTEX_LIVE_PATH`]
    /// (else HTTP 404), only a live bearer token (else HTTP 401 UNAUTHENTICATED, as Vertex
    /// answers), and only the full Vertex model path in `setup.model` (else close 1007).
    pub fn act_as_vertex(&self, mode: VertexMode) {
        *self.vertex.lock().unwrap() = Some(mode);
    }

    /// Take this long at each step, for connections accepted from now on.
    pub fn set_delays(&self, delays: Delays) {
        *self.delays.lock().unwrap() = delays;
    }

    /// Change the behaviour for connections accepted from now on (e.g. reject, then accept).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Every upgrade request seen so far, including rejected ones, in arrival order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    /// Number of upgrade requests seen so far (accepted or rejected).
    pub fn connection_count(&self) -> usize {
        self.handshakes.lock().unwrap().len()
    }

    /// Waits until `n` upgrade requests have been seen; false on timeout.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.connection_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Next session (handed over once its `setup` arrived); panics if none arrives within timeout.
    pub async fn next_session(&mut self, timeout: Duration) -> GeminiSession {
        match self.try_next_session(timeout).await {
            Some(s) => s,
            None => panic!(
                "FakeGemini: no session (connection + setup frame) within {timeout:?}; \
                 handshakes seen: {}",
                self.connection_count()
            ),
        }
    }

    /// Next session, or None if none arrives within timeout (to assert "no (re)connection").
    pub async fn try_next_session(&mut self, timeout: Duration) -> Option<GeminiSession> {
        tokio::time::timeout(timeout, self.sessions.recv())
            .await
            .ok()
            .flatten()
    }
}

/// One accepted connection whose `setup` has arrived; the test's handle on that socket.
///
/// Dropping it closes the socket (1000) and ends the connection task.
pub struct GeminiSession {
    handshake: Handshake,
    setup: Value,
    out: mpsc::UnboundedSender<Out>,
    inbox: mpsc::Receiver<Value>,
    backlog: VecDeque<Value>,
    shared: Arc<Shared>,
    non_audio: Vec<Value>,
    ended: bool,
}

/// State the connection task shares with the session handle.
#[derive(Default)]
struct Shared {
    violations: Mutex<Vec<String>>,
    got_binary: AtomicBool,
    client_close: Mutex<Option<(u16, String)>>,
    dropped_inbound: AtomicUsize,
    setup_refusal: Mutex<Option<String>>,
}

impl Shared {
    /// Record a protocol violation by the client.
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

/// Commands from the session handle to its connection task.
enum Out {
    Msg(Message),
    Abort,
}

impl GeminiSession {
    /// The whole setup message received (`{"setup":{…}}`).
    pub fn setup(&self) -> &Value {
        &self.setup
    }

    /// The `x-goog-api-key` header of the upgrade request.
    pub fn api_key(&self) -> Option<String> {
        self.handshake.api_key.clone()
    }

    /// The request target of the upgrade (path and query) — assert no key leaked into it.
    pub fn uri(&self) -> String {
        self.handshake.uri.clone()
    }

    /// The full upgrade request as recorded.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// Send a server message as a BINARY frame (what the real server does).
    pub fn send(&self, msg: Value) {
        let _ = self
            .out
            .send(Out::Msg(Message::binary(msg.to_string().into_bytes())));
    }

    /// Send a server message as a TEXT frame (clients must accept both).
    pub fn send_text(&self, msg: Value) {
        let _ = self.out.send(Out::Msg(Message::text(msg.to_string())));
    }

    /// Send one model audio chunk (24 kHz PCM16 LE, base64) in `serverContent.modelTurn`.
    pub fn send_audio(&self, pcm24k: &[i16]) {
        self.send(json!({"serverContent": {"modelTurn": {"role": "model", "parts": [audio_part(pcm24k)]}}}));
    }

    /// Answers as a model that took until `at` to reply: one audio chunk, then `turnComplete`,
    /// sent at `at` from a task of its own, so the test can go on streaming the caller's audio
    /// meanwhile.
    pub fn answer_at(&self, at: Instant, pcm24k: &[i16]) {
        let messages = [
            json!({"serverContent": {"modelTurn": {"role": "model", "parts": [audio_part(pcm24k)]}}}),
            json!({"serverContent": {"turnComplete": true}}),
        ];
        let out = self.out.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            for message in messages {
                let _ = out.send(Out::Msg(Message::binary(message.to_string().into_bytes())));
            }
        });
    }

    /// Send a model audio chunk with an `outputTranscription` bundled in the same serverContent (3.x style).
    pub fn send_audio_with_transcript(&self, pcm24k: &[i16], text: &str) {
        self.send(json!({"serverContent": {
            "modelTurn": {"role": "model", "parts": [audio_part(pcm24k)]},
            "outputTranscription": {"text": text}
        }}));
    }

    /// Send an `outputTranscription` fragment on its own.
    pub fn send_output_transcription(&self, text: &str) {
        self.send(json!({"serverContent": {"outputTranscription": {"text": text}}}));
    }

    /// Send `generationComplete`, then `turnComplete` with `usageMetadata` alongside (as the real server does).
    pub fn send_turn_complete(&self) {
        self.send(json!({"serverContent": {"generationComplete": true}}));
        self.send(json!({
            "serverContent": {"turnComplete": true},
            "usageMetadata": {
                "promptTokenCount": 1234,
                "responseTokenCount": 210,
                "totalTokenCount": 1444,
                "promptTokensDetails": [
                    {"modality": "AUDIO", "tokenCount": 1100},
                    {"modality": "TEXT", "tokenCount": 134}
                ],
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 210}]
            }
        }));
    }

    /// Send `{"serverContent":{"interrupted":true}}` (barge-in: the client must flush playback).
    pub fn send_interrupted(&self) {
        self.send(json!({"serverContent": {"interrupted": true}}));
    }

    /// Send an `inputTranscription` of the caller's speech (marked finished).
    pub fn send_input_transcription(&self, text: &str) {
        self.send(
            json!({"serverContent": {"inputTranscription": {"text": text, "finished": true}}}),
        );
    }

    /// Send `{"goAway":{"timeLeft":…}}`, e.g. `"50s"`.
    pub fn send_go_away(&self, time_left: &str) {
        self.send(json!({"goAway": {"timeLeft": time_left}}));
    }

    /// Send a resumable `sessionResumptionUpdate` carrying `handle`.
    pub fn send_resumption_update(&self, handle: &str) {
        self.send(json!({"sessionResumptionUpdate": {"newHandle": handle, "resumable": true}}));
    }

    /// Send a `toolCall` with one function call.
    pub fn send_tool_call(&self, id: &str, name: &str, args: Value) {
        self.send(json!({"toolCall": {"functionCalls": [{"id": id, "name": name, "args": args}]}}));
    }

    /// Close the socket with this code and reason (e.g. 1011 "Deadline expired before operation could complete.").
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(Out::Msg(close_message(code, reason)));
    }

    /// Drop the TCP connection without a close frame (the client sees an abnormal 1006 end).
    pub fn abort(&self) {
        let _ = self.out.send(Out::Abort);
    }

    /// Next client message as JSON; None on close or timeout. Panics on recorded protocol violations.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        self.assert_no_violations();
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        if self.ended {
            return None;
        }
        match tokio::time::timeout(timeout, self.inbox.recv()).await {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                self.ended = true;
                self.assert_no_violations();
                None
            }
            Err(_) => None,
        }
    }

    /// Collect decoded `realtimeInput.audio` bytes until at least `min_bytes`; panics on shortfall,
    /// wrong mimeType or any `mediaChunks` message. Other messages are kept (see `take_non_audio`).
    pub async fn recv_audio(&mut self, min_bytes: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut audio = Vec::new();
        while audio.len() < min_bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(msg) => self.absorb_audio(msg, &mut audio),
                None => panic!(
                    "FakeGemini: expected ≥{min_bytes} bytes of realtimeInput.audio within {timeout:?}, \
                     got {} (connection ended: {}); other messages: {:?}",
                    audio.len(),
                    self.ended,
                    self.non_audio
                ),
            }
        }
        audio
    }

    /// Collect all `realtimeInput.audio` bytes that arrive within `window` (never panics on shortfall).
    pub async fn drain_audio(&mut self, window: Duration) -> Vec<u8> {
        let deadline = Instant::now() + window;
        let mut audio = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.recv(left).await {
                Some(msg) => self.absorb_audio(msg, &mut audio),
                None => break,
            }
        }
        audio
    }

    /// Non-audio client messages skipped by `recv_audio`/`drain_audio`, oldest first (clears the list).
    pub fn take_non_audio(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.non_audio)
    }

    /// True if the connection ended (client close frame or EOF) within timeout; pending messages stay readable.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.inbox.recv()).await {
                Ok(Some(v)) => self.backlog.push_back(v),
                Ok(None) => self.ended = true,
                Err(_) => break,
            }
        }
        self.assert_no_violations();
        self.ended
    }

    /// The close frame the client sent, if it closed first (code 1005 if it sent no code).
    pub fn client_close(&self) -> Option<(u16, String)> {
        self.shared.client_close.lock().unwrap().clone()
    }

    /// Why the fake refused this session's setup (the full text; the close frame carries at
    /// most 123 bytes of it, as a real one does), or None if it was accepted.
    pub fn setup_refusal(&self) -> Option<String> {
        self.shared.setup_refusal.lock().unwrap().clone()
    }

    /// True if the client ever sent a binary frame (it must send text).
    pub fn got_binary(&self) -> bool {
        self.shared.got_binary.load(Ordering::SeqCst)
    }

    /// Protocol violations recorded so far (binary frames, non-JSON, input before setupComplete, mediaChunks…).
    pub fn violations(&self) -> Vec<String> {
        self.shared.violations.lock().unwrap().clone()
    }

    /// Client messages lost because the inbox was full (only if a test never reads a long session).
    pub fn dropped_inbound(&self) -> usize {
        self.shared.dropped_inbound.load(Ordering::SeqCst)
    }

    /// Panic with the list of protocol violations, if any.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "FakeGemini: client broke the Live protocol: {v:#?}"
        );
    }

    /// Add one message's audio to `audio` (asserting its shape) or keep it as non-audio.
    fn absorb_audio(&mut self, msg: Value, audio: &mut Vec<u8>) {
        let ri = &msg["realtimeInput"];
        assert!(
            ri.get("mediaChunks").is_none(),
            "FakeGemini: client sent deprecated realtimeInput.mediaChunks (real models close with 1007): {msg}"
        );
        match ri.get("audio") {
            Some(a) => audio.extend(check_audio_chunk(a, &msg)),
            None => self.non_audio.push(msg),
        }
    }
}

/// Validate one `realtimeInput.audio` object and return its decoded bytes.
fn check_audio_chunk(a: &Value, msg: &Value) -> Vec<u8> {
    assert_eq!(
        a["mimeType"].as_str(),
        Some("audio/pcm;rate=16000"),
        "FakeGemini: realtimeInput.audio.mimeType must be audio/pcm;rate=16000: {msg}"
    );
    let data = a["data"]
        .as_str()
        .unwrap_or_else(|| panic!("FakeGemini: realtimeInput.audio.data missing: {msg}"));
    let bytes = decode_b64(data)
        .unwrap_or_else(|| panic!("FakeGemini: realtimeInput.audio.data is not base64: {msg}"));
    assert!(
        bytes.len().is_multiple_of(2),
        "FakeGemini: PCM16 chunk has odd length {}",
        bytes.len()
    );
    bytes
}

/// Decode base64 leniently (standard or URL-safe alphabet, padding optional), as Google does.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&base64::alphabet::STANDARD, cfg)
        .decode(s)
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg).decode(s))
        .ok()
}

/// PCM16 samples → little-endian bytes.
pub fn pcm16_to_le_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Little-endian bytes → PCM16 samples (a trailing odd byte is ignored).
pub fn le_bytes_to_pcm16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Upsample 16 kHz → 24 kHz by linear interpolation (3 output samples per 2 input samples).
pub fn upsample_16k_to_24k(input: &[i16]) -> Vec<i16> {
    if input.is_empty() {
        return Vec::new();
    }
    let n_out = (input.len() * 3).div_ceil(2);
    (0..n_out)
        .map(|n| {
            let pos2 = n * 2; // position in input samples, times 3
            let i = pos2 / 3;
            let frac = (pos2 % 3) as i32; // 0, 1 or 2 thirds
            let a = input[i] as i32;
            let b = *input.get(i + 1).unwrap_or(&input[i]) as i32;
            (a + (b - a) * frac / 3) as i16
        })
        .collect()
}

/// `inlineData` part carrying 24 kHz PCM16 LE audio.
fn audio_part(pcm24k: &[i16]) -> Value {
    json!({"inlineData": {
        "mimeType": "audio/pcm;rate=24000",
        "data": STANDARD.encode(pcm16_to_le_bytes(pcm24k))
    }})
}

/// A close frame with code and reason; the reason is cut to the 123 bytes a close frame can
/// carry (at a character boundary), as the real service's long reasons are.
fn close_message(code: u16, reason: &str) -> Message {
    const MAX_REASON: usize = 123;
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_string().into(),
    }))
}

/// Google-style JSON error body for a refused upgrade.
fn http_error_body(status: u16) -> String {
    let (grpc, msg) = match status {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => (
            "UNAUTHENTICATED",
            "Request is missing required authentication credential.",
        ),
        403 => (
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers.",
        ),
        404 => ("NOT_FOUND", "Requested entity was not found."),
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        ),
        503 => ("UNAVAILABLE", "The service is currently unavailable."),
        _ => ("UNKNOWN", "Fake error."),
    };
    json!({"error": {"code": status, "message": msg, "status": grpc}}).to_string()
}

/// Accept TCP connections until the fake is dropped; one task per connection.
async fn accept_loop(
    listener: TcpListener,
    behaviour: Arc<Mutex<Behaviour>>,
    vertex: Arc<Mutex<Option<VertexMode>>>,
    delays: Arc<Mutex<Delays>>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    sessions_tx: mpsc::UnboundedSender<GeminiSession>,
    shutdown: watch::Receiver<()>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let b = behaviour.lock().unwrap().clone();
        let v = vertex.lock().unwrap().clone();
        let d = *delays.lock().unwrap();
        tokio::spawn(run_connection(
            stream,
            b,
            v,
            d,
            handshakes.clone(),
            sessions_tx.clone(),
            shutdown.clone(),
        ));
    }
}

/// Read frames until the first data frame; None on close/EOF/error.
async fn next_data_frame(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(_) | Message::Binary(_) => return Some(m),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// Parse a data frame as JSON, recording binary frames and non-JSON payloads as violations.
fn parse_frame(m: &Message, shared: &Shared) -> Option<Value> {
    let bytes: &[u8] = match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => {
            shared.got_binary.store(true, Ordering::SeqCst);
            shared.violation(format!(
                "client sent a binary frame ({} bytes); Live clients must send text frames",
                b.len()
            ));
            b
        }
        _ => return None,
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.is_object() => Some(v),
        _ => {
            shared.violation(format!(
                "client sent a frame that is not a JSON object: {:?}",
                String::from_utf8_lossy(bytes)
            ));
            None
        }
    }
}

/// Serve one connection: handshake, setup per behaviour, then relay between socket and session.
#[allow(clippy::result_large_err)] // the accept_hdr callback signature is fixed by tungstenite
async fn run_connection(
    stream: TcpStream,
    behaviour: Behaviour,
    vertex: Option<VertexMode>,
    delays: Delays,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    sessions_tx: mpsc::UnboundedSender<GeminiSession>,
    mut shutdown: watch::Receiver<()>,
) {
    let seen: Arc<Mutex<Option<Handshake>>> = Arc::new(Mutex::new(None));
    let seen_cb = seen.clone();
    let reject = match &behaviour {
        Behaviour::RejectHandshake(s) => Some(*s),
        _ => None,
    };
    let vertex_cb = vertex.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let reject = reject.or_else(|| vertex_cb.as_ref().and_then(|v| v.refuse_upgrade(req)));
        let hs = Handshake {
            uri: req.uri().to_string(),
            path: req.uri().path().to_string(),
            api_key: req
                .headers()
                .get("x-goog-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        };
        handshakes.lock().unwrap().push(hs.clone());
        *seen_cb.lock().unwrap() = Some(hs);
        match reject {
            Some(status) => Err(http::Response::builder()
                .status(status)
                .header("content-type", "application/json; charset=UTF-8")
                .body(Some(http_error_body(status)))
                .expect("FakeGemini: build error response")),
            None => Ok(resp),
        }
    };
    tokio::time::sleep(delays.handshake).await;
    let accepted = tokio::time::timeout(
        DEFAULT_TIMEOUT,
        tokio_tungstenite::accept_hdr_async(stream, callback),
    )
    .await;
    let Ok(Ok(mut ws)) = accepted else {
        return; // rejected on purpose, or a broken upgrade
    };
    let handshake = seen.lock().unwrap().take().expect("handshake recorded");
    let shared = Arc::new(Shared::default());

    // The first frame must be {"setup": {...}} in a text frame.
    let first = tokio::select! {
        r = tokio::time::timeout(SETUP_WAIT, next_data_frame(&mut ws)) => r.ok().flatten(),
        _ = shutdown.changed() => None,
    };
    let Some(first) = first else { return };
    let setup = parse_frame(&first, &shared).unwrap_or(Value::Null);
    let setup_ok = setup.get("setup").is_some_and(Value::is_object)
        && setup.as_object().map(|o| o.len()) == Some(1);
    let mut close_deadline: Option<Instant> = None;
    let mut setup_complete_sent = false;
    let tools_refusal = if setup_ok {
        vertex
            .as_ref()
            .and_then(|v| v.refuse_model(&setup["setup"]))
            .or_else(|| schema::check_setup_tools(&setup["setup"]).err())
            .or_else(|| {
                schema::check_setup_options(&setup["setup"], &handshake.path, vertex.is_some())
                    .err()
            })
    } else {
        None
    };
    if !setup_ok {
        shared.violation(format!(
            "first client message is not {{\"setup\":{{…}}}}: {setup}"
        ));
        let _ = ws
            .send(close_message(1007, "Request contains an invalid argument."))
            .await;
        close_deadline = Some(Instant::now() + CLOSE_WAIT);
    } else if let Some(reason) = tools_refusal {
        // The real service validates the whole setup before anything else and closes
        // instead of answering `setupComplete`.
        shared.violation(format!("setup refused (1007): {reason}"));
        let _ = ws.send(close_message(1007, &reason)).await;
        *shared.setup_refusal.lock().unwrap() = Some(reason);
        close_deadline = Some(Instant::now() + CLOSE_WAIT);
    } else {
        match &behaviour {
            Behaviour::Normal | Behaviour::Echo | Behaviour::AnswerText => {
                tokio::time::sleep(delays.setup_complete).await;
                let _ = ws
                    .send(Message::binary(
                        json!({"setupComplete": {}}).to_string().into_bytes(),
                    ))
                    .await;
                setup_complete_sent = true;
            }
            Behaviour::CloseOnSetup(code, reason) => {
                let _ = ws.send(close_message(*code, reason)).await;
                close_deadline = Some(Instant::now() + CLOSE_WAIT);
            }
            Behaviour::NeverCompleteSetup | Behaviour::RejectHandshake(_) => {}
        }
    }

    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let (in_tx, inbox) = mpsc::channel(INBOX_CAPACITY);
    let session = GeminiSession {
        handshake,
        setup,
        out: out_tx,
        inbox,
        backlog: VecDeque::new(),
        shared: shared.clone(),
        non_audio: Vec::new(),
        ended: false,
    };
    if sessions_tx.send(session).is_err() {
        return;
    }
    let echo = behaviour == Behaviour::Echo;
    let answer_text = behaviour == Behaviour::AnswerText;
    let mut session_gone = false;
    let mut we_closed = close_deadline.is_some();
    // When each text turn still to be answered is due (`Delays::first_audio` after it).
    let mut answers_due: VecDeque<Instant> = VecDeque::new();

    loop {
        let close_timer = async {
            match close_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let answer_timer = async {
            match answers_due.front() {
                Some(due) => tokio::time::sleep_until(*due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = close_timer => break,
            _ = answer_timer => {
                answers_due.pop_front();
                if !we_closed && !send_spoken_answer(&mut ws).await {
                    break;
                }
            }
            out = out_rx.recv(), if !session_gone => match out {
                Some(Out::Msg(m)) => {
                    if let Message::Close(_) = m {
                        if we_closed { continue; }
                        we_closed = true;
                        close_deadline = Some(Instant::now() + CLOSE_WAIT);
                    }
                    if is_setup_complete(&m) {
                        setup_complete_sent = true;
                    }
                    if ws.send(m).await.is_err() { break; }
                }
                Some(Out::Abort) => break,
                None => {
                    // Session handle dropped: close normally and wait briefly for the reply.
                    session_gone = true;
                    if !we_closed {
                        we_closed = true;
                        let _ = ws.send(close_message(1000, "")).await;
                        close_deadline = Some(Instant::now() + CLOSE_WAIT);
                    }
                }
            },
            inc = ws.next() => match inc {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(frame))) => {
                    if !we_closed {
                        let info = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        *shared.client_close.lock().unwrap() = Some(info);
                    }
                    // tungstenite queues the close reply; keep polling so it is flushed and EOF follows.
                    close_deadline.get_or_insert(Instant::now() + CLOSE_WAIT);
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    let Some(v) = parse_frame(&m, &shared) else { continue };
                    if !setup_complete_sent {
                        shared.violation(format!("client sent a message before setupComplete: {v}"));
                    }
                    if v.get("setup").is_some() {
                        shared.violation(format!("client sent setup twice on one connection: {v}"));
                    } else if let Some(problem) = check_client_message(&v) {
                        shared.violation(problem);
                    }
                    let ri = &v["realtimeInput"];
                    if ri.get("mediaChunks").is_some() && !we_closed {
                        shared.violation(format!("client sent deprecated realtimeInput.mediaChunks: {v}"));
                        we_closed = true;
                        let _ = ws.send(close_message(
                            1007,
                            "realtime_input.media_chunks is deprecated. Use audio, video, or text instead.",
                        )).await;
                        close_deadline = Some(Instant::now() + CLOSE_WAIT);
                    }
                    if echo
                        && !we_closed
                        && let Some(pcm) = ri["audio"]["data"].as_str().and_then(decode_b64)
                    {
                        let up = upsample_16k_to_24k(&le_bytes_to_pcm16(&pcm));
                        let reply = json!({"serverContent": {"modelTurn": {"role": "model", "parts": [audio_part(&up)]}}});
                        if ws.send(Message::binary(reply.to_string().into_bytes())).await.is_err() {
                            break;
                        }
                    }
                    if answer_text && !we_closed && is_text_turn(&v) {
                        if delays.first_audio.is_zero() {
                            if !send_spoken_answer(&mut ws).await {
                                break;
                            }
                        } else {
                            answers_due.push_back(Instant::now() + delays.first_audio);
                        }
                    }
                    if !session_gone && in_tx.try_send(v).is_err() {
                        shared.dropped_inbound.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Check the client-message oneof: exactly one known top-level key; one field per `realtimeInput`.
fn check_client_message(v: &Value) -> Option<String> {
    const KNOWN: [&str; 8] = [
        "realtimeInput",
        "realtime_input",
        "clientContent",
        "client_content",
        "toolResponse",
        "tool_response",
        "contextUpdate",
        "context_update",
    ];
    let obj = v.as_object()?;
    if obj.len() != 1 || !KNOWN.contains(&obj.keys().next()?.as_str()) {
        return Some(format!(
            "client message must have exactly one of {KNOWN:?} at top level: {v}"
        ));
    }
    let ri = obj
        .get("realtimeInput")
        .or_else(|| obj.get("realtime_input"))?;
    match ri.as_object() {
        Some(o) if o.len() == 1 => None,
        _ => Some(format!(
            "realtimeInput must carry exactly one field (audio, text, activityStart, …): {v}"
        )),
    }
}

/// True if an outgoing frame is a `setupComplete` message.
fn is_setup_complete(m: &Message) -> bool {
    let bytes: &[u8] = match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return false,
    };
    serde_json::from_slice::<Value>(bytes)
        .map(|v| v.get("setupComplete").is_some())
        .unwrap_or(false)
}

/// Length of the audio chunk that answers a text turn under `Behaviour::AnswerText`
/// (100 ms at 24 kHz).
pub const SPOKEN_ANSWER_SAMPLES: usize = 2_400;

/// True for a client message that asks the model to answer typed text now.
fn is_text_turn(v: &Value) -> bool {
    let realtime_text = v["realtimeInput"]["text"].is_string();
    let content = &v["clientContent"];
    let content_turn = content["turnComplete"] == json!(true)
        && content["turns"]
            .as_array()
            .is_some_and(|turns| !turns.is_empty());
    realtime_text || content_turn
}

/// Sends [`spoken_answer`]; false if the socket failed.
async fn send_spoken_answer(ws: &mut WebSocketStream<TcpStream>) -> bool {
    let mut sent = true;
    for reply in spoken_answer() {
        sent &= ws
            .send(Message::binary(reply.to_string().into_bytes()))
            .await
            .is_ok();
    }
    sent
}

/// The answer to a text turn: one non-silent audio chunk, then `turnComplete`.
fn spoken_answer() -> [Value; 2] {
    let tone: Vec<i16> = (0..SPOKEN_ANSWER_SAMPLES)
        .map(|n| if (n / 30) % 2 == 0 { 4_000 } else { -4_000 })
        .collect();
    [
        json!({"serverContent": {"modelTurn": {"role": "model", "parts": [audio_part(&tone)]}}}),
        json!({"serverContent": {"turnComplete": true}}),
    ]
}
