//! Scripted Twilio Media Streams and Plivo Audio Stream callers: WebSocket clients of our server
//! that send exactly what the providers send (`/work/shared/protocols/telephony.md` A2, B2) and
//! check that what comes back has the exact shape the providers accept.
//!
//! Self-contained on purpose (own μ-law codec) so a codec bug in the crate cannot hide itself.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Default timeout tests can use for waits against the server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes in one 20 ms μ-law frame at 8 kHz.
pub const FRAME_BYTES: usize = 160;
/// Account SID the fake Twilio caller puts in `start` (override via the `account_sid` field).
pub const FAKE_TWILIO_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Account id the fake Plivo caller puts in `start` (override via the `account_id` field).
pub const FAKE_PLIVO_ACCOUNT_ID: &str = "MAFAKEACCOUNT0000001";

/// μ-law silence byte (what a frame is padded with).
pub const MULAW_SILENCE: u8 = 0xFF;

/// Which provider's outbound JSON shapes to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Twilio Media Streams (`media` / `mark` / `clear` with `streamSid`).
    Twilio,
    /// Plivo Audio Stream (`playAudio` / `checkpoint` / `clearAudio` with `streamId`).
    Plivo,
}

/// One message our server sent to the phone, in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// 160 bytes of μ-law audio (Twilio `media`, Plivo `playAudio`).
    Media(Vec<u8>),
    /// Barge-in flush (Twilio `clear`, Plivo `clearAudio`).
    Clear,
    /// Playback marker (Twilio `mark`, Plivo `checkpoint`) with its name.
    Mark(String),
    /// Any other JSON message (a real provider would reject most of these).
    Other(Value),
}

/// What a receive call collected: ordered outbound events and whether the socket closed.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Events in arrival order.
    pub events: Vec<Outbound>,
    /// True if the server closed the socket while collecting.
    pub closed: bool,
}

impl Received {
    /// All media payloads concatenated.
    pub fn audio(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Outbound::Media(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// Number of media frames.
    pub fn media_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Outbound::Media(_)))
            .count()
    }

    /// Number of clear / clearAudio messages.
    pub fn clear_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Outbound::Clear))
            .count()
    }

    /// Mark / checkpoint names in order.
    pub fn marks(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Outbound::Mark(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// Mark / checkpoint names in order, without the position marks (`p` and a frame
    /// count) that paced playout sends every 200 ms.
    pub fn turn_marks(&self) -> Vec<String> {
        self.marks()
            .into_iter()
            .filter(|name| !is_position_mark(name))
            .collect()
    }

    /// Messages that were neither media, clear nor mark.
    pub fn others(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Outbound::Other(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// Media frames that arrived after the last clear (None if no clear arrived).
    pub fn media_after_last_clear(&self) -> Option<usize> {
        let pos = self
            .events
            .iter()
            .rposition(|e| matches!(e, Outbound::Clear))?;
        Some(
            self.events[pos + 1..]
                .iter()
                .filter(|e| matches!(e, Outbound::Media(_)))
                .count(),
        )
    }

    /// Short human summary for panic messages, e.g. `media×12, clear, mark(a), media×3`.
    pub fn summary(&self) -> String {
        summarize(&self.events)
    }
}

/// True for the server's position marks: `p` followed by the frames sent so far.
pub fn is_position_mark(name: &str) -> bool {
    name.strip_prefix('p')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Compact description of an event list.
fn summarize(events: &[Outbound]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut media_run = 0usize;
    for e in events {
        if let Outbound::Media(_) = e {
            media_run += 1;
            continue;
        }
        if media_run > 0 {
            parts.push(format!("media×{media_run}"));
            media_run = 0;
        }
        parts.push(match e {
            Outbound::Clear => "clear".to_string(),
            Outbound::Mark(n) => format!("mark({n})"),
            Outbound::Other(v) => format!("other({v})"),
            Outbound::Media(_) => unreachable!(),
        });
    }
    if media_run > 0 {
        parts.push(format!("media×{media_run}"));
    }
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}

/// The provider side of one WebSocket: receiving, shape checks and close handling.
pub struct PhoneWs {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    provider: Provider,
    stream_id: Option<String>,
    backlog: VecDeque<Value>,
    closed: bool,
    close_frame: Option<(u16, String)>,
}

impl PhoneWs {
    /// Connect to `url` with extra upgrade headers; Err describes a failed connect or handshake.
    pub async fn connect(
        url: &str,
        provider: Provider,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<PhoneWs, String> {
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("bad url {url}: {e}"))?;
        for (k, v) in headers {
            req.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                HeaderValue::from_str(v).map_err(|e| e.to_string())?,
            );
        }
        let (ws, _resp) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| format!("connect to {url} timed out after {timeout:?}"))?
            .map_err(|e| format!("connect to {url} failed: {e}"))?;
        Ok(PhoneWs {
            ws,
            provider,
            stream_id: None,
            backlog: VecDeque::new(),
            closed: false,
            close_frame: None,
        })
    }

    /// Send one JSON message as a text frame; false if the socket is gone.
    pub async fn send_json(&mut self, v: &Value) -> bool {
        self.ws.send(Message::text(v.to_string())).await.is_ok()
    }

    /// Send raw text (for bad-input tests); false if the socket is gone.
    pub async fn send_raw(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text.to_string())).await.is_ok()
    }

    /// Send a binary frame (providers never do; for bad-input tests); false if the socket is gone.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> bool {
        self.ws.send(Message::binary(bytes.to_vec())).await.is_ok()
    }

    /// Next JSON message from the server; None on close/timeout. Panics on binary or non-JSON frames.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.read_frame(timeout).await
    }

    /// Read one data frame from the socket (no backlog).
    async fn read_frame(&mut self, timeout: Duration) -> Option<Value> {
        if self.closed {
            return None;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(n) => n,
            };
            match next {
                None | Some(Err(_)) => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or_else(|e| {
                        panic!(
                            "{:?}: server sent a text frame that is not JSON ({e}): {:?}",
                            self.provider,
                            t.as_str()
                        )
                    });
                    return Some(v);
                }
                Some(Ok(Message::Binary(b))) => panic!(
                    "{:?}: server sent a binary frame ({} bytes); the provider rejects binary frames",
                    self.provider,
                    b.len()
                ),
                Some(Ok(Message::Close(f))) => {
                    self.closed = true;
                    self.close_frame = Some(
                        f.map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    let _ = self.ws.flush().await; // sends the queued close reply
                    return None;
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Classify one server message, asserting the exact provider JSON shape.
    pub fn classify(&self, v: Value) -> Outbound {
        match self.provider {
            Provider::Twilio => classify_twilio(v, self.stream_id.as_deref()),
            Provider::Plivo => classify_plivo(v, self.stream_id.as_deref()),
        }
    }

    /// Collect outbound events until `frames` media frames arrived; panics on shortfall.
    pub async fn recv_audio(&mut self, frames: usize, timeout: Duration) -> Received {
        self.recv_until(timeout, |r| r.media_count() >= frames)
            .await
            .unwrap_or_else(|r| {
                panic!(
                    "{:?}: expected {frames} media frames within {timeout:?}, got {} (closed: {}); events: {}",
                    self.provider,
                    r.media_count(),
                    r.closed,
                    r.summary()
                )
            })
    }

    /// Collect events until `done(&received)` is true; Err(collected) on timeout or close.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Received) -> bool,
    ) -> Result<Received, Received> {
        let deadline = Instant::now() + timeout;
        let mut r = Received::default();
        while !done(&r) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(v) => r.events.push(self.classify(v)),
                None => {
                    r.closed = self.closed;
                    return Err(r);
                }
            }
        }
        r.closed = self.closed;
        Ok(r)
    }

    /// Collect everything that arrives within `window` (stops early on close); never panics on shortfall.
    pub async fn collect_for(&mut self, window: Duration) -> Received {
        match self.recv_until(window, |_| false).await {
            Ok(r) | Err(r) => r,
        }
    }

    /// True if the server closed the socket within timeout; messages read meanwhile stay readable.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(v) = self.read_frame(left).await {
                self.backlog.push_back(v);
            }
        }
        self.closed
    }

    /// True once the server closed the socket (or it broke).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Code and reason of the server's close frame, if one arrived.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.close_frame.clone()
    }

    /// Close from the phone side (1000) and wait briefly for the server's reply.
    pub async fn close(&mut self) {
        if self.closed {
            return;
        }
        let _ = self.ws.close(None).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(_))) => continue,
                _ => break,
            }
        }
        self.closed = true;
    }
}

/// Assert that an object has exactly these keys.
fn assert_keys(v: &Value, keys: &[&str], what: &str) {
    let got: BTreeSet<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected a JSON object, got {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(got, want, "{what}: wrong keys in {v}");
}

/// Decode a base64 media payload and assert it is exactly one 160-byte frame.
fn frame_payload(v: &Value, payload: &Value, what: &str) -> Vec<u8> {
    let s = payload
        .as_str()
        .unwrap_or_else(|| panic!("{what}: payload is not a string: {v}"));
    let bytes = STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{what}: payload is not standard base64 ({e}): {v}"));
    assert_eq!(
        bytes.len(),
        FRAME_BYTES,
        "{what}: every frame sent to the phone must be exactly 160 μ-law bytes"
    );
    bytes
}

/// Assert a stream id field matches the one from `start` (when start was sent).
fn check_stream_id(v: &Value, field: &str, expected: Option<&str>, what: &str) {
    let got = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: `{field}` missing or not a string: {v}"));
    if let Some(exp) = expected {
        assert_eq!(got, exp, "{what}: wrong {field} in {v}");
    }
}

/// Twilio: `media`, `mark`, `clear` with exact keys; anything else is `Other`.
fn classify_twilio(v: Value, stream_sid: Option<&str>) -> Outbound {
    match v["event"].as_str() {
        Some("media") => {
            let what = "Twilio media";
            assert_keys(&v, &["event", "streamSid", "media"], what);
            check_stream_id(&v, "streamSid", stream_sid, what);
            assert_keys(&v["media"], &["payload"], what);
            Outbound::Media(frame_payload(&v, &v["media"]["payload"], what))
        }
        Some("mark") => {
            let what = "Twilio mark";
            assert_keys(&v, &["event", "streamSid", "mark"], what);
            check_stream_id(&v, "streamSid", stream_sid, what);
            assert_keys(&v["mark"], &["name"], what);
            let name = v["mark"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: name is not a string: {v}"));
            Outbound::Mark(name.to_string())
        }
        Some("clear") => {
            let what = "Twilio clear";
            assert_keys(&v, &["event", "streamSid"], what);
            check_stream_id(&v, "streamSid", stream_sid, what);
            Outbound::Clear
        }
        _ => Outbound::Other(v),
    }
}

/// Plivo: `playAudio`, `checkpoint`, `clearAudio` with exact keys; anything else is `Other`.
fn classify_plivo(v: Value, stream_id: Option<&str>) -> Outbound {
    match v["event"].as_str() {
        Some("playAudio") => {
            let what = "Plivo playAudio";
            // streamId is optional on playAudio (harmless if present), but must then be right.
            if v.get("streamId").is_some() {
                assert_keys(&v, &["event", "media", "streamId"], what);
                check_stream_id(&v, "streamId", stream_id, what);
            } else {
                assert_keys(&v, &["event", "media"], what);
            }
            let m = &v["media"];
            assert_keys(m, &["contentType", "sampleRate", "payload"], what);
            assert_eq!(
                m["contentType"].as_str(),
                Some("audio/x-mulaw"),
                "{what}: contentType must be audio/x-mulaw (no ;rate=): {v}"
            );
            let rate_ok =
                m["sampleRate"].as_u64() == Some(8000) || m["sampleRate"].as_str() == Some("8000");
            assert!(rate_ok, "{what}: sampleRate must be 8000: {v}");
            Outbound::Media(frame_payload(&v, &m["payload"], what))
        }
        Some("checkpoint") => {
            let what = "Plivo checkpoint";
            assert_keys(&v, &["event", "streamId", "name"], what);
            check_stream_id(&v, "streamId", stream_id, what);
            let name = v["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: name is not a string: {v}"));
            Outbound::Mark(name.to_string())
        }
        Some("clearAudio") => {
            let what = "Plivo clearAudio";
            assert_keys(&v, &["event", "streamId"], what);
            check_stream_id(&v, "streamId", stream_id, what);
            Outbound::Clear
        }
        _ => Outbound::Other(v),
    }
}

/// Split μ-law audio into 160-byte frames, padding the last one with μ-law silence.
pub fn frames_of(mulaw: &[u8]) -> Vec<Vec<u8>> {
    mulaw
        .chunks(FRAME_BYTES)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(FRAME_BYTES, MULAW_SILENCE);
            f
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Twilio

/// A scripted Twilio Media Streams connection (`<Connect><Stream>`, inbound track only).
pub struct TwilioCaller {
    /// Receiving side and raw socket.
    pub ws: PhoneWs,
    /// `accountSid` put in `start` and `stop`.
    pub account_sid: String,
    call_sid: String,
    stream_sid: String,
    seq: u64,
    chunk: u64,
    media_ms: u64,
}

impl TwilioCaller {
    /// Connect to e.g. `ws://127.0.0.1:PORT/twilio/stream`; panics if that fails.
    pub async fn connect(url: &str, timeout: Duration) -> TwilioCaller {
        Self::connect_with_headers(url, &[], timeout)
            .await
            .unwrap_or_else(|e| panic!("TwilioCaller: {e}"))
    }

    /// Connect with extra upgrade headers (e.g. `x-twilio-signature`); Err if connect/handshake fails.
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<TwilioCaller, String> {
        Ok(TwilioCaller {
            ws: PhoneWs::connect(url, Provider::Twilio, headers, timeout).await?,
            account_sid: FAKE_TWILIO_ACCOUNT_SID.to_string(),
            call_sid: String::new(),
            stream_sid: String::new(),
            seq: 0,
            chunk: 0,
            media_ms: 0,
        })
    }

    /// Next `sequenceNumber` as Twilio sends it (a string, starting at "1" with `start`).
    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    /// The streamSid given to `send_start`.
    pub fn stream_sid(&self) -> &str {
        &self.stream_sid
    }

    /// The callSid given to `send_start`.
    pub fn call_sid(&self) -> &str {
        &self.call_sid
    }

    /// `{"event":"connected","protocol":"Call","version":"1.0.0"}` (first message, no streamSid).
    pub async fn send_connected(&mut self) -> bool {
        self.ws
            .send_json(&json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            .await
    }

    /// The `start` message: inbound track, μ-law/8000/1, `customParameters` from `<Parameter>`s.
    pub async fn send_start(
        &mut self,
        call_sid: &str,
        stream_sid: &str,
        custom_parameters: &[(&str, &str)],
    ) -> bool {
        self.call_sid = call_sid.to_string();
        self.stream_sid = stream_sid.to_string();
        self.ws.stream_id = Some(stream_sid.to_string());
        let custom: serde_json::Map<String, Value> = custom_parameters
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let seq = self.next_seq();
        let msg = json!({
            "event": "start",
            "sequenceNumber": seq,
            "start": {
                "accountSid": self.account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom
            },
            "streamSid": stream_sid
        });
        self.ws.send_json(&msg).await
    }

    /// Build the next inbound `media` message for one 160-byte frame (advances the counters).
    fn media_msg(&mut self, frame: &[u8]) -> Value {
        self.chunk += 1;
        let ts = self.media_ms;
        self.media_ms += 20;
        let seq = self.next_seq();
        json!({
            "event": "media",
            "sequenceNumber": seq,
            "media": {
                "track": "inbound",
                "chunk": self.chunk.to_string(),
                "timestamp": ts.to_string(),
                "payload": STANDARD.encode(frame)
            },
            "streamSid": self.stream_sid
        })
    }

    /// Send μ-law audio as 160-byte `media` messages at once (last frame padded with 0xFF).
    pub async fn send_media(&mut self, mulaw: &[u8]) -> bool {
        for f in frames_of(mulaw) {
            let m = self.media_msg(&f);
            if !self.ws.send_json(&m).await {
                return false;
            }
        }
        true
    }

    /// Like `send_media`, but one frame every 20 ms, as a live call delivers it.
    pub async fn send_media_realtime(&mut self, mulaw: &[u8]) -> bool {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for f in frames_of(mulaw) {
            tick.tick().await;
            let m = self.media_msg(&f);
            if !self.ws.send_json(&m).await {
                return false;
            }
        }
        true
    }

    /// A keypress: `{"event":"dtmf",…,"dtmf":{"track":"inbound_track","digit":…}}`.
    pub async fn send_dtmf(&mut self, digit: char) -> bool {
        let seq = self.next_seq();
        let msg = json!({
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": seq,
            "dtmf": {"track": "inbound_track", "digit": digit.to_string()}
        });
        self.ws.send_json(&msg).await
    }

    /// What Twilio sends back when audio before a mark finished playing (or was cleared).
    pub async fn send_mark_echo(&mut self, name: &str) -> bool {
        let seq = self.next_seq();
        let msg = json!({
            "event": "mark",
            "sequenceNumber": seq,
            "streamSid": self.stream_sid,
            "mark": {"name": name}
        });
        self.ws.send_json(&msg).await
    }

    /// `stop` (caller hung up); a real Twilio then closes the socket — call `close()` for that.
    pub async fn send_stop(&mut self) -> bool {
        let seq = self.next_seq();
        let msg = json!({
            "event": "stop",
            "sequenceNumber": seq,
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid
        });
        self.ws.send_json(&msg).await
    }

    /// Send raw text (bad-input tests).
    pub async fn send_raw(&mut self, text: &str) -> bool {
        self.ws.send_raw(text).await
    }

    /// Send a binary frame (bad-input tests).
    pub async fn send_binary(&mut self, bytes: &[u8]) -> bool {
        self.ws.send_binary(bytes).await
    }

    /// Next JSON message from the server (see `PhoneWs::recv`).
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        self.ws.recv(timeout).await
    }

    /// Collect events until `frames` media frames arrived (see `PhoneWs::recv_audio`).
    pub async fn recv_audio(&mut self, frames: usize, timeout: Duration) -> Received {
        self.ws.recv_audio(frames, timeout).await
    }

    /// Collect everything arriving within `window` (see `PhoneWs::collect_for`).
    pub async fn collect_for(&mut self, window: Duration) -> Received {
        self.ws.collect_for(window).await
    }

    /// Collect until `done` holds (see `PhoneWs::recv_until`).
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        done: impl FnMut(&Received) -> bool,
    ) -> Result<Received, Received> {
        self.ws.recv_until(timeout, done).await
    }

    /// True if the server closed the socket within timeout.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        self.ws.wait_closed(timeout).await
    }

    /// True once the server closed the socket.
    pub fn is_closed(&self) -> bool {
        self.ws.is_closed()
    }

    /// Close the socket from the Twilio side.
    pub async fn close(&mut self) {
        self.ws.close().await
    }
}

// ------------------------------------------------------------------------------------------------
// Plivo

/// A scripted Plivo Audio Stream connection (bidirectional, μ-law 8 kHz, inbound track).
pub struct PlivoCaller {
    /// Receiving side and raw socket.
    pub ws: PhoneWs,
    /// `accountId` put in `start`.
    pub account_id: String,
    call_id: String,
    stream_id: String,
    extra_headers: String,
    seq: u64,
    chunk: u64,
    media_ms: u64,
    epoch_ms: u64,
}

impl PlivoCaller {
    /// Connect to e.g. `ws://127.0.0.1:PORT/plivo/stream`; panics if that fails.
    pub async fn connect(url: &str, timeout: Duration) -> PlivoCaller {
        Self::connect_with_headers(url, &[], timeout)
            .await
            .unwrap_or_else(|e| panic!("PlivoCaller: {e}"))
    }

    /// Connect with extra upgrade headers (e.g. `x-plivo-signature-v3`); Err if connect/handshake fails.
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<PlivoCaller, String> {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1_705_312_200_000);
        Ok(PlivoCaller {
            ws: PhoneWs::connect(url, Provider::Plivo, headers, timeout).await?,
            account_id: FAKE_PLIVO_ACCOUNT_ID.to_string(),
            call_id: String::new(),
            stream_id: String::new(),
            extra_headers: String::new(),
            seq: 0,
            chunk: 0,
            media_ms: 0,
            epoch_ms,
        })
    }

    /// Next `sequenceNumber` as Plivo sends it (a number, starting at 1 with `start`).
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The streamId given to `send_start`.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The callId given to `send_start`.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The `start` message (Plivo has no `connected`); `extra_headers` is the raw top-level string.
    pub async fn send_start(
        &mut self,
        call_id: &str,
        stream_id: &str,
        extra_headers: &str,
    ) -> bool {
        self.call_id = call_id.to_string();
        self.stream_id = stream_id.to_string();
        self.extra_headers = extra_headers.to_string();
        self.ws.stream_id = Some(stream_id.to_string());
        let seq = self.next_seq();
        let msg = json!({
            "event": "start",
            "sequenceNumber": seq,
            "start": {
                "callId": call_id,
                "streamId": stream_id,
                "accountId": self.account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}
            },
            "extra_headers": extra_headers
        });
        self.ws.send_json(&msg).await
    }

    /// Current timestamp string (epoch ms at connect + audio time sent so far).
    fn timestamp(&self) -> String {
        (self.epoch_ms + self.media_ms).to_string()
    }

    /// Build the next inbound `media` message for one 160-byte frame (advances the counters).
    fn media_msg(&mut self, frame: &[u8]) -> Value {
        self.chunk += 1;
        let ts = self.timestamp();
        self.media_ms += 20;
        let seq = self.next_seq();
        json!({
            "event": "media",
            "sequenceNumber": seq,
            "streamId": self.stream_id,
            "media": {
                "track": "inbound",
                "timestamp": ts,
                "chunk": self.chunk,
                "payload": STANDARD.encode(frame)
            },
            "extra_headers": self.extra_headers
        })
    }

    /// Send μ-law audio as 160-byte `media` messages at once (last frame padded with 0xFF).
    pub async fn send_media(&mut self, mulaw: &[u8]) -> bool {
        for f in frames_of(mulaw) {
            let m = self.media_msg(&f);
            if !self.ws.send_json(&m).await {
                return false;
            }
        }
        true
    }

    /// Like `send_media`, but one frame every 20 ms, as a live call delivers it.
    pub async fn send_media_realtime(&mut self, mulaw: &[u8]) -> bool {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for f in frames_of(mulaw) {
            tick.tick().await;
            let m = self.media_msg(&f);
            if !self.ws.send_json(&m).await {
                return false;
            }
        }
        true
    }

    /// A keypress: `{"event":"dtmf",…,"dtmf":{"track":"inbound","digit":…,"timestamp":…}}`.
    pub async fn send_dtmf(&mut self, digit: char) -> bool {
        let seq = self.next_seq();
        let msg = json!({
            "event": "dtmf",
            "sequenceNumber": seq,
            "streamId": self.stream_id,
            "dtmf": {"track": "inbound", "digit": digit.to_string(), "timestamp": self.timestamp()},
            "extra_headers": self.extra_headers
        });
        self.ws.send_json(&msg).await
    }

    /// What Plivo sends once audio before a `checkpoint` has played.
    pub async fn send_played_stream(&mut self, name: &str) -> bool {
        let seq = self.next_seq();
        let msg = json!({
            "event": "playedStream",
            "sequenceNumber": seq,
            "streamId": self.stream_id,
            "name": name
        });
        self.ws.send_json(&msg).await
    }

    /// What Plivo sends after a `clearAudio` emptied its buffer.
    pub async fn send_cleared_audio(&mut self) -> bool {
        let seq = self.next_seq();
        let msg =
            json!({"event": "clearedAudio", "sequenceNumber": seq, "streamId": self.stream_id});
        self.ws.send_json(&msg).await
    }

    /// `stop` (payload not documented precisely; sent as event + sequenceNumber + streamId).
    pub async fn send_stop(&mut self) -> bool {
        let seq = self.next_seq();
        let msg = json!({"event": "stop", "sequenceNumber": seq, "streamId": self.stream_id});
        self.ws.send_json(&msg).await
    }

    /// Send raw text (bad-input tests).
    pub async fn send_raw(&mut self, text: &str) -> bool {
        self.ws.send_raw(text).await
    }

    /// Send a binary frame (bad-input tests).
    pub async fn send_binary(&mut self, bytes: &[u8]) -> bool {
        self.ws.send_binary(bytes).await
    }

    /// Next JSON message from the server (see `PhoneWs::recv`).
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        self.ws.recv(timeout).await
    }

    /// Collect events until `frames` media frames arrived (see `PhoneWs::recv_audio`).
    pub async fn recv_audio(&mut self, frames: usize, timeout: Duration) -> Received {
        self.ws.recv_audio(frames, timeout).await
    }

    /// Collect everything arriving within `window` (see `PhoneWs::collect_for`).
    pub async fn collect_for(&mut self, window: Duration) -> Received {
        self.ws.collect_for(window).await
    }

    /// Collect until `done` holds (see `PhoneWs::recv_until`).
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        done: impl FnMut(&Received) -> bool,
    ) -> Result<Received, Received> {
        self.ws.recv_until(timeout, done).await
    }

    /// True if the server closed the socket within timeout.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        self.ws.wait_closed(timeout).await
    }

    /// True once the server closed the socket.
    pub fn is_closed(&self) -> bool {
        self.ws.is_closed()
    }

    /// Close the socket from the Plivo side.
    pub async fn close(&mut self) {
        self.ws.close().await
    }
}

// ------------------------------------------------------------------------------------------------
// Audio helpers (independent of the crate under test)

/// G.711 μ-law encode one 16-bit sample (classic Sun g711.c algorithm, bias 0x84, clip 32635).
pub fn linear_to_mulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(CLIP) + BIAS;
    let exponent = 31 - ((pcm >> 7) as u32).leading_zeros() as i32; // 0..=7
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 μ-law decode one byte to a 16-bit sample.
pub fn mulaw_to_linear(byte: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = !byte;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// μ-law encode a buffer.
pub fn mulaw_encode(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| linear_to_mulaw(s)).collect()
}

/// μ-law decode a buffer.
pub fn mulaw_decode(mulaw: &[u8]) -> Vec<i16> {
    mulaw.iter().map(|&b| mulaw_to_linear(b)).collect()
}

/// A sine of `freq_hz` for `ms` at `rate` Hz with peak `amplitude`.
pub fn pcm_tone(rate: u32, freq_hz: f32, ms: u32, amplitude: i16) -> Vec<i16> {
    let n = (rate as u64 * ms as u64 / 1000) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            (amplitude as f64 * (2.0 * std::f64::consts::PI * freq_hz as f64 * t).sin()).round()
                as i16
        })
        .collect()
}

/// A 24 kHz PCM16 sine (what a fake model would say).
pub fn pcm_tone_24k(freq_hz: f32, ms: u32, amplitude: i16) -> Vec<i16> {
    pcm_tone(24_000, freq_hz, ms, amplitude)
}

/// μ-law bytes of an 8 kHz sine at peak 8000 (about −12 dBFS), as a caller's voice stand-in.
pub fn mulaw_tone(freq_hz: f32, ms: u32) -> Vec<u8> {
    mulaw_encode(&pcm_tone(8_000, freq_hz, ms, 8_000))
}

/// `ms` of μ-law silence at 8 kHz.
pub fn mulaw_silence(ms: u32) -> Vec<u8> {
    vec![MULAW_SILENCE; (8 * ms) as usize]
}

/// Root-mean-square level of PCM16 samples.
pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / pcm.len() as f64).sqrt()
}

/// Amplitude of the `freq_hz` component of `pcm` sampled at `rate` (single DFT bin; ≈ peak of a pure sine).
pub fn tone_amplitude(pcm: &[i16], rate: u32, freq_hz: f32) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq_hz as f64 / rate as f64;
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (i, &s) in pcm.iter().enumerate() {
        re += s as f64 * (w * i as f64).cos();
        im += s as f64 * (w * i as f64).sin();
    }
    2.0 * (re * re + im * im).sqrt() / pcm.len() as f64
}
