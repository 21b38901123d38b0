//! The `web` provider: browser calls through the same bridge as phone calls, the same
//! whole-call scenarios as Twilio and Plivo (tests/calls.rs), plus what is particular to the
//! browser: the authenticated `POST /web/calls`, the single-use token in the stream URL, and
//! the console's files.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, GeminiSession, le_bytes_to_pcm16};
use support::phone::{
    FRAME_BYTES, Outbound, Received, mulaw_decode, mulaw_tone, pcm_tone_24k, tone_amplitude,
};
use support::{API_TOKEN, TestServer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

/// A server with `API_TOKEN` set, plus `extra` variables.
async fn start_server(extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("API_TOKEN", API_TOKEN)];
    vars.extend_from_slice(extra);
    TestServer::start(&vars).await
}

/// `POST /web/calls` with the API token: the new call's id and stream URL.
async fn place_call(server: &TestServer) -> (String, String) {
    let response = reqwest::Client::new()
        .post(server.http("/web/calls"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("POST /web/calls");
    assert_eq!(response.status(), 201, "POST /web/calls");
    let body: Value = response.json().await.expect("JSON");
    let id = body["id"].as_str().expect("id").to_owned();
    let url = body["stream_url"].as_str().expect("stream_url").to_owned();
    (id, url)
}

/// Polls the record until `done` holds for it; the last record read on time-out.
async fn wait_record(server: &TestServer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let record = server.record(id).await;
        if done(&record) || Instant::now() >= deadline {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scripted browser: the console's side of `/web/stream`, checking that every message the
/// server sends has exactly the documented shape.
struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    closed: bool,
    close_frame: Option<(u16, String)>,
}

impl Browser {
    /// Opens `stream_url` (relative, as `POST /web/calls` gives it); Err carries the HTTP
    /// status of a refused upgrade.
    async fn open(server: &TestServer, stream_url: &str) -> Result<Browser, u16> {
        let url = server.ws(stream_url);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => Ok(Browser {
                ws,
                closed: false,
                close_frame: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("connect to {url}: {other}"),
        }
    }

    /// Places a call, opens its stream and sends `start`.
    async fn call(server: &TestServer) -> (String, Browser) {
        let (id, url) = place_call(server).await;
        let mut browser = Browser::open(server, &url).await.expect("stream opens");
        assert!(browser.send(json!({"event": "start"})).await);
        (id, browser)
    }

    async fn send(&mut self, message: Value) -> bool {
        self.send_raw(&message.to_string()).await
    }

    async fn send_raw(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text.to_owned())).await.is_ok()
    }

    /// Sends μ-law audio as 20 ms `media` messages.
    async fn send_media(&mut self, mulaw: &[u8]) -> bool {
        for frame in mulaw.chunks(FRAME_BYTES) {
            let message = json!({"event": "media", "media": {"payload": STANDARD.encode(frame)}});
            if !self.send(message).await {
                return false;
            }
        }
        true
    }

    async fn hang_up(&mut self) {
        self.send(json!({"event": "stop"})).await;
        let _ = self.ws.close(None).await;
    }

    /// The next message, or `None` on close or time-out.
    async fn recv(&mut self, timeout: Duration) -> Option<Outbound> {
        let deadline = Instant::now() + timeout;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(next) = tokio::time::timeout(left, self.ws.next()).await else {
                return None;
            };
            match next {
                Some(Ok(Message::Text(text))) => return Some(classify(text.as_str())),
                Some(Ok(Message::Binary(bytes))) => {
                    panic!("the server sent a binary frame ({} bytes)", bytes.len())
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed = true;
                    self.close_frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => self.closed = true,
            }
        }
        None
    }

    /// Reads until `done` holds (Err with what arrived on time-out or close).
    async fn recv_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Received) -> bool,
    ) -> Result<Received, Received> {
        let deadline = Instant::now() + timeout;
        let mut received = Received::default();
        while !done(&received) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(event) => received.events.push(event),
                None => {
                    received.closed = self.closed;
                    return Err(received);
                }
            }
        }
        Ok(received)
    }

    async fn recv_audio(&mut self, frames: usize) -> Received {
        self.recv_until(WAIT, |r| r.media_count() >= frames)
            .await
            .unwrap_or_else(|r| panic!("expected {frames} frames, got {}", r.summary()))
    }

    async fn collect_for(&mut self, window: Duration) -> Received {
        match self.recv_until(window, |_| false).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let _ = self.collect_for(timeout).await;
        self.closed
    }
}

/// One server message, its shape checked against the documented wire format.
fn classify(text: &str) -> Outbound {
    let message: Value = serde_json::from_str(text).expect("the server sends JSON");
    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    match message["event"].as_str() {
        Some("media") => {
            assert_eq!(keys(&message), ["event", "media"], "{text}");
            assert_eq!(keys(&message["media"]), ["payload"], "{text}");
            let frame = STANDARD
                .decode(message["media"]["payload"].as_str().expect("payload"))
                .expect("base64");
            assert_eq!(frame.len(), FRAME_BYTES, "every frame is 20 ms");
            Outbound::Media(frame)
        }
        Some("clear") => {
            assert_eq!(keys(&message), ["event"], "{text}");
            Outbound::Clear
        }
        Some("mark") => {
            assert_eq!(keys(&message), ["event", "mark"], "{text}");
            Outbound::Mark(message["mark"]["name"].as_str().expect("name").to_owned())
        }
        _ => Outbound::Other(message),
    }
}

/// A server on a fresh fake Gemini, a started browser call and its session.
async fn live_call(
    extra: &[(&str, &str)],
) -> (FakeGemini, TestServer, String, Browser, GeminiSession) {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let mut vars = vec![("GEMINI_LIVE_URL", gemini.url())];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_server(&vars).await;
    let (id, browser) = Browser::call(&server).await;
    let session = gemini.next_session(WAIT).await;
    (gemini, server, id, browser, session)
}

/// Sends `ms` of a 24 kHz tone in 240 ms chunks.
fn send_tone(session: &GeminiSession, freq: f32, ms: u32) {
    let pcm = pcm_tone_24k(freq, ms, 8_000);
    for chunk in pcm.chunks(24 * 240) {
        session.send_audio(chunk);
    }
}

/// Reads client messages until one that is not audio arrives.
async fn next_non_audio(session: &mut GeminiSession) -> Value {
    loop {
        let message = session.recv(WAIT).await.expect("a message from the bridge");
        if message.pointer("/realtimeInput/audio").is_none() {
            return message;
        }
    }
}

#[tokio::test]
async fn placing_a_browser_call_needs_the_token_and_makes_an_inbound_web_record() {
    let server = start_server(&[]).await;
    let client = reqwest::Client::new();
    let anonymous = client.post(server.http("/web/calls")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = client
        .post(server.http("/web/calls"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let (id, stream_url) = place_call(&server).await;
    assert!(
        stream_url.starts_with("/web/stream?token=") && stream_url.contains(&id),
        "{stream_url}"
    );
    let record = server.record(&id).await;
    assert_eq!(record["provider"], "web");
    assert_eq!(record["direction"], "inbound");
    assert_eq!(record["from"], "web");
    assert_eq!(record["to"], "agent");
    assert_eq!(
        record["status"], "ringing",
        "until the browser's stream opens"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_session_gets_the_inbound_prompt_and_greets_in_exact_frames() {
    let (_gemini, server, id, mut browser, mut session) = live_call(&[]).await;
    let inbound =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/inbound.md"))
            .unwrap();
    assert_eq!(
        session.setup()["setup"]["systemInstruction"]["parts"][0]["text"],
        inbound.as_str()
    );
    let greeting_cue = next_non_audio(&mut session).await;
    assert!(greeting_cue.pointer("/realtimeInput/text").is_some());

    send_tone(&session, 440.0, 1_000);
    session.send_turn_complete();
    let received = browser.recv_audio(50).await;
    let more = browser.collect_for(QUIET).await;
    assert!(more.media_count() <= 1, "{}", more.summary());
    assert_eq!(more.turn_marks(), ["turn-1"], "a mark closes the turn");
    let level = tone_amplitude(&mulaw_decode(&received.audio())[400..], 8_000, 440.0);
    assert!(
        (7_000.0..9_000.0).contains(&level),
        "440 Hz came out at {level}"
    );
    let record = server.record(&id).await;
    assert_eq!(record["status"], "in-progress");
    server.stop().await;
}

#[tokio::test]
async fn the_browsers_audio_reaches_gemini_as_16k_pcm() {
    let (_gemini, server, _id, mut browser, mut session) = live_call(&[]).await;
    let _greeting_cue = next_non_audio(&mut session).await;
    assert!(browser.send_media(&mulaw_tone(1_000.0, 1_000)).await);
    let audio = session.recv_audio(32_000, WAIT).await;
    let rest = session.drain_audio(QUIET).await;
    assert_eq!(audio.len() + rest.len(), 32_000, "1 s at 16 kHz × 2 bytes");
    let level = tone_amplitude(&le_bytes_to_pcm16(&audio)[400..], 16_000, 1_000.0);
    assert!(level > 6_000.0, "1 kHz arrived at {level}");
    session.assert_no_violations();
    server.stop().await;
}

#[tokio::test]
async fn barge_in_clears_the_browsers_queue_and_no_stale_audio_follows() {
    let (_gemini, server, _id, mut browser, session) = live_call(&[]).await;
    send_tone(&session, 440.0, 1_010);
    assert_eq!(browser.recv_audio(50).await.media_count(), 50);
    session.send_interrupted();
    session.send_turn_complete();
    let after = browser.collect_for(QUIET).await;
    assert_eq!(after.clear_count(), 1, "{}", after.summary());
    assert_eq!(
        after.media_after_last_clear(),
        Some(0),
        "{}",
        after.summary()
    );
    // The browser may confirm the clear; the call carries on.
    assert!(browser.send(json!({"event": "clear"})).await);
    send_tone(&session, 600.0, 200);
    session.send_turn_complete();
    assert_eq!(browser.recv_audio(10).await.media_count(), 10);
    server.stop().await;
}

#[tokio::test]
async fn the_browser_hanging_up_ends_the_call_and_its_record() {
    let (_gemini, server, id, mut browser, mut session) = live_call(&[]).await;
    assert!(server.wait_active_calls(1, WAIT).await);
    session.send_input_transcription("hello from the browser");
    session.send_audio_with_transcript(&pcm_tone_24k(440.0, 200, 8_000), "hi, how can I help");
    session.send_turn_complete();
    browser.recv_audio(10).await;
    browser.hang_up().await;
    assert!(session.wait_closed(WAIT).await, "Gemini socket left open");
    assert!(server.wait_active_calls(0, WAIT).await);
    let record = wait_record(&server, &id, |r| r["status"] == "completed").await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["end_reason"], "caller hung up");
    let said: Vec<&str> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["text"].as_str())
        .collect();
    assert!(
        said.join(" ").contains("hello from the browser"),
        "{said:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_agent_hanging_up_closes_the_socket_after_its_goodbye_played() {
    let (_gemini, server, id, mut browser, session) = live_call(&[]).await;
    send_tone(&session, 440.0, 400);
    session.send_tool_call("fc-1", "end_call", json!({"reason": "done"}));
    session.send_turn_complete();
    let goodbye = browser
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
        .await
        .expect("a mark after the goodbye");
    assert!(goodbye.media_count() >= 20, "{}", goodbye.summary());
    assert!(
        !browser.closed,
        "the goodbye is heard before the line closes"
    );
    assert!(
        browser
            .send(json!({"event": "mark", "mark": {"name": "playout"}}))
            .await
    );
    assert!(browser.wait_closed(WAIT).await, "socket not closed");
    assert_eq!(browser.close_frame.as_ref().map(|f| f.0), Some(1000));
    let record = wait_record(&server, &id, |r| r["status"] == "completed").await;
    assert_eq!(record["end_reason"], "agent ended the call");
    server.stop().await;
}

#[tokio::test]
async fn transfer_is_refused_at_once_with_a_tool_error_the_agent_can_explain() {
    let (_gemini, server, _id, mut browser, mut session) = live_call(&[
        ("BUILTIN_TOOLS", "end_call,transfer_call"),
        ("TRANSFER_NUMBER", "+15550100000"),
    ])
    .await;
    session.send_tool_call("fc-7", "transfer_call", json!({}));
    let response = loop {
        let message = next_non_audio(&mut session).await;
        if message.get("toolResponse").is_some() {
            break message;
        }
    };
    let answer = &response["toolResponse"]["functionResponses"][0];
    assert_eq!(answer["id"], "fc-7");
    let error = answer["response"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("browser call"), "{response}");
    // The call goes on.
    send_tone(&session, 500.0, 200);
    session.send_turn_complete();
    assert_eq!(browser.recv_audio(10).await.media_count(), 10);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_survived_and_an_oversized_message_ends_only_that_call() {
    let (_gemini, server, _id, mut browser, mut session) = live_call(&[]).await;
    for junk in [
        "not json at all",
        "{\"event\":\"media\"}",
        "{\"event\":\"media\",\"media\":{\"payload\":\"%%%\"}}",
        "{\"event\":\"mark\"}",
        "{\"event\":\"somethingNew\"}",
        "[1,2,3]",
        "{\"event\":\"start\"}",
    ] {
        assert!(browser.send_raw(junk).await);
    }
    assert!(
        browser
            .ws
            .send(Message::binary(vec![1u8, 2, 3]))
            .await
            .is_ok()
    );
    assert!(browser.send_media(&mulaw_tone(1_000.0, 100)).await);
    session.recv_audio(3_200, WAIT).await;
    let huge = format!(
        "{{\"event\":\"media\",\"media\":{{\"payload\":\"{}\"}}}}",
        "A".repeat(200_000)
    );
    browser.send_raw(&huge).await;
    assert!(
        browser.wait_closed(WAIT).await,
        "oversized message not refused"
    );
    assert!(session.wait_closed(WAIT).await);
    assert!(server.wait_active_calls(0, WAIT).await);
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_forged_token_gets_no_socket_and_no_gemini_session() {
    let gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = start_server(&[("GEMINI_LIVE_URL", &gemini.url())]).await;
    let (id, url) = place_call(&server).await;
    assert_eq!(Browser::open(&server, "/web/stream").await.err(), Some(401));
    let forged = url.replace("token=", "token=9");
    assert_eq!(Browser::open(&server, &forged).await.err(), Some(403));
    let other_call = url.replace(&id, "cnotthiscall000000000000000");
    assert_eq!(Browser::open(&server, &other_call).await.err(), Some(403));
    tokio::time::sleep(QUIET).await;
    assert_eq!(gemini.connection_count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_used_token_is_refused_before_gemini() {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = start_server(&[("GEMINI_LIVE_URL", &gemini.url())]).await;
    let (_id, url) = place_call(&server).await;
    let mut first = Browser::open(&server, &url).await.expect("first use");
    assert!(first.send(json!({"event": "start"})).await);
    let _session = gemini.next_session(WAIT).await;

    let mut replay = Browser::open(&server, &url)
        .await
        .expect("a genuine token gets a socket");
    assert!(replay.send(json!({"event": "start"})).await);
    assert!(replay.wait_closed(WAIT).await, "replayed stream not closed");
    let (code, reason) = replay.close_frame.clone().expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("already used"), "{reason}");
    assert!(gemini.try_next_session(QUIET).await.is_none());
    assert_eq!(
        gemini.connection_count(),
        1,
        "only the first use reached Gemini"
    );
    first.hang_up().await;
    server.stop().await;
}

#[tokio::test]
async fn echo_mode_plays_the_browsers_audio_back() {
    let server = start_server(&[("AGENT", "echo"), ("GEMINI_API_KEY", "")]).await;
    let (_id, mut browser) = Browser::call(&server).await;
    let sent = mulaw_tone(800.0, 400);
    assert!(browser.send_media(&sent).await);
    assert_eq!(browser.recv_audio(20).await.audio(), sent);
    browser.hang_up().await;
    assert!(server.wait_active_calls(0, WAIT).await);
    server.stop().await;
}

#[tokio::test]
async fn browser_calls_take_call_slots() {
    let server = start_server(&[("MAX_CONCURRENT_CALLS", "1")]).await;
    let _first = place_call(&server).await;
    let refused = reqwest::Client::new()
        .post(server.http("/web/calls"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn the_api_refuses_to_hang_up_a_browser_call_with_a_reason() {
    let server = start_server(&[]).await;
    let (id, _url) = place_call(&server).await;
    let response = reqwest::Client::new()
        .post(server.http(&format!("/calls/{id}/hangup")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("browser call"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn calls_can_be_listed_by_direction() {
    let server = start_server(&[]).await;
    let (id, _url) = place_call(&server).await;
    let list = |query: &'static str| {
        let request = reqwest::Client::new()
            .get(server.http(&format!("/calls?{query}")))
            .bearer_auth(API_TOKEN);
        async move { request.send().await.unwrap() }
    };
    let ids = |body: Value| -> Vec<String> {
        body["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let inbound = list("direction=inbound")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(ids(inbound), [id]);
    let outbound = list("direction=outbound")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert!(ids(outbound).is_empty());
    assert_eq!(list("direction=sideways").await.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_under_a_strict_policy() {
    let server = TestServer::start(&[]).await;
    let page = reqwest::get(server.http("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    let policy = header("content-security-policy");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no third-party URL"
    );
    for (file, content_type) in [
        ("app.js", "text/javascript"),
        ("audio-worklet.js", "text/javascript"),
        ("console.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = reqwest::get(server.http(&format!("/console/{file}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
        let got = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(got.starts_with(content_type), "{file}: {got}");
    }
    let missing = reqwest::get(server.http("/console/nothing.js"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
