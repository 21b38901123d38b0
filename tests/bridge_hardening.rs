//! The call task under a bad network and a hostile stream: peers that stop reading, a
//! Gemini that goes quiet or drops the connection, audio floods, and the shutdown signal.
//! Each test runs the real server in-process against the fakes on 127.0.0.1.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::SinkExt;
use serde_json::json;
use support::gemini::{Behaviour, FakeGemini, GeminiSession};
use support::phone::Provider;
use support::{Caller, TestServer};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A server with short timeouts for these tests, talking to `gemini`.
async fn server(gemini: &FakeGemini, extra: &[(&str, &str)]) -> TestServer {
    let url = gemini.url();
    let mut vars = vec![
        ("GEMINI_LIVE_URL", url.as_str()),
        ("STREAM_WRITE_TIMEOUT_MS", "500"),
    ];
    vars.extend_from_slice(extra);
    TestServer::start(&vars).await
}

/// The end reason on the record of inbound call `call_id`, once written.
async fn end_reason(server: &TestServer, provider: &str, call_id: &str) -> Option<String> {
    for _ in 0..50 {
        server.app.recorder.flush().await;
        let record = server
            .app
            .store
            .find_by_provider_call_id(provider, call_id)
            .await
            .expect("store");
        if let Some(reason) = record.and_then(|r| r.end_reason) {
            return Some(reason);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Sends `seconds` of 24 kHz model audio in one go, as fast as the socket takes it.
fn flood_model_audio(session: &GeminiSession, seconds: usize) {
    let chunk = vec![1_000i16; 24_000];
    for _ in 0..seconds {
        session.send_audio(&chunk);
    }
}

#[tokio::test]
async fn a_phone_that_stops_reading_ends_its_call_at_the_write_deadline() {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    // Unpaced, so the flood reaches the socket at once: paced audio (10 KB/s) would take
    // minutes to fill the kernel's buffers.
    let server = server(&gemini, &[("PLAYOUT_LEAD_MS", "0")]).await;
    let call_id = "CA0000000000000000000000000000aaaa";
    let params = server
        .answer(
            Provider::Twilio,
            call_id,
            &[("From", "+15550001111"), ("To", "+15550002222")],
        )
        .await;
    // A provider whose socket reads nothing: a tiny receive buffer that nobody drains.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4_096).expect("SO_RCVBUF");
    let tcp = socket.connect(server.addr).await.expect("connect");
    let url = server.ws("/twilio/stream");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("upgrade");
    let custom: serde_json::Map<String, serde_json::Value> =
        params.into_iter().map(|(k, v)| (k, v.into())).collect();
    let start = json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
        "accountSid": "AC1", "streamSid": "MZ1", "callSid": call_id, "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": custom}});
    ws.send(Message::text(start.to_string()))
        .await
        .expect("start");
    let mut session = gemini.next_session(WAIT).await;
    // More than the kernel's socket buffers on both ends can hold (4 MB of send buffer at
    // most here), so writes to the phone must block.
    flood_model_audio(&session, 400);
    assert!(
        session.wait_closed(Duration::from_secs(30)).await,
        "the Gemini session of a call whose phone stopped reading stays open"
    );
    let reason = end_reason(&server, "twilio", call_id)
        .await
        .expect("end reason");
    assert!(reason.contains("stopped reading"), "{reason}");
    assert!(server.wait_active_calls(0, WAIT).await);
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn a_gemini_that_goes_quiet_is_resumed_then_the_call_ends_with_the_reason() {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server(&gemini, &[("GEMINI_STALL_SECS", "1")]).await;
    let call_id = "CA0000000000000000000000000000bbbb";
    let mut caller = Caller::start(&server, Provider::Twilio, call_id).await;
    let first = gemini.next_session(WAIT).await;
    first.send_resumption_update("handle-1");
    first.send_input_transcription("is anyone there?");
    // No answer from the model: the bridge resumes with the handle.
    let mut second = gemini.next_session(WAIT).await;
    assert_eq!(
        second.setup()["setup"]["sessionResumption"]["handle"],
        "handle-1",
        "{}",
        second.setup()
    );
    // Caller audio reaches the resumed session.
    assert!(caller.send_media(&[0x7F; 1_600]).await);
    assert!(!second.recv_audio(1_000, WAIT).await.is_empty());
    // Still nothing from the model: the caller hears the fallback message, then the call
    // ends and says why.
    let heard = caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
        .await
        .expect("the fallback message and its mark");
    assert!(heard.media_count() > 100, "{}", heard.summary());
    assert!(caller.ack_mark("playout").await);
    assert!(caller.wait_closed(WAIT).await, "call not ended");
    let reason = end_reason(&server, "twilio", call_id)
        .await
        .expect("end reason");
    assert!(reason.starts_with("Gemini stopped answering"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_or_going_away_gemini_connection_is_resumed_and_audio_keeps_flowing() {
    for (drop_kind, call_id) in [
        ("tcp-drop", "CA0000000000000000000000000000cc01"),
        ("close-1001", "CA0000000000000000000000000000cc02"),
    ] {
        let mut gemini = FakeGemini::start(Behaviour::Normal).await;
        let server = server(&gemini, &[]).await;
        let mut caller = Caller::start(&server, Provider::Twilio, call_id).await;
        let first = gemini.next_session(WAIT).await;
        first.send_resumption_update("handle-7");
        tokio::time::sleep(Duration::from_millis(100)).await;
        match drop_kind {
            "tcp-drop" => first.abort(),
            _ => first.close(1001, "going away"),
        }
        let mut second = gemini.next_session(WAIT).await;
        assert_eq!(
            second.setup()["setup"]["sessionResumption"]["handle"],
            "handle-7",
            "{drop_kind}"
        );
        assert!(caller.send_media(&[0x7F; 1_600]).await);
        assert!(
            !second.recv_audio(1_000, WAIT).await.is_empty(),
            "{drop_kind}"
        );
        caller.hang_up().await;
        server.stop().await;
    }
}

#[tokio::test]
async fn oversized_and_flooding_media_is_dropped_and_a_flood_ends_the_call() {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server(&gemini, &[("GEMINI_STALL_SECS", "60")]).await;
    let call_id = "CA0000000000000000000000000000dddd";
    let mut caller = Caller::start(&server, Provider::Twilio, call_id).await;
    let mut session = gemini.next_session(WAIT).await;
    // One 2000-byte payload (250 ms in one message) is refused outright.
    let oversized = json!({"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
            "payload": STANDARD.encode([0xFFu8; 2_000])}});
    assert!(caller.send_raw(&oversized.to_string()).await);
    // Then ten times real time, kept up: at most 1.5x real time per 2 s window gets
    // through, and after a few such windows the call is ended.
    let started = std::time::Instant::now();
    let one_second = vec![0x7Fu8; 8_000];
    while started.elapsed() < Duration::from_secs(15) && caller.send_media(&one_second).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caller.wait_closed(WAIT).await, "flood not ended");
    let received = session.drain_audio(Duration::from_millis(300)).await;
    // 16 kHz PCM16 is 4 bytes per μ-law byte; the flood lasted a few windows.
    let mulaw_equivalent = received.len() / 4;
    assert!(
        mulaw_equivalent <= 24_000 * 5,
        "{mulaw_equivalent} bytes of caller audio reached Gemini"
    );
    let reason = end_reason(&server, "twilio", call_id)
        .await
        .expect("end reason");
    assert!(reason.contains("faster than real time"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn the_shutdown_signal_ends_every_call_with_its_reason_on_record() {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server(&gemini, &[]).await;
    let mut calls = Vec::new();
    for (provider, call_id) in [
        (Provider::Twilio, "CA0000000000000000000000000000eeee"),
        (Provider::Plivo, "6f9a1c3e-0000-4000-8000-00000000eeee"),
    ] {
        let caller = Caller::start(&server, provider, call_id).await;
        let mut session = gemini.next_session(WAIT).await;
        // The session opens at the answer webhook; the greeting cue shows the call is live.
        assert!(session.recv(WAIT).await.is_some(), "no greeting cue");
        calls.push((provider, call_id, caller, session));
    }
    assert!(server.wait_active_calls(2, WAIT).await);
    server.app.shutdown.begin();
    for (provider, call_id, mut caller, mut session) in calls {
        // The caller hears the goodbye (the fallback message), then the call ends.
        let heard = caller
            .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
            .await
            .expect("a goodbye before the line drops");
        assert!(
            heard.media_count() > 100,
            "{provider:?}: {}",
            heard.summary()
        );
        assert!(caller.ack_mark("playout").await);
        assert!(
            caller.wait_closed(WAIT).await,
            "{provider:?} call not ended"
        );
        assert!(
            session.wait_closed(WAIT).await,
            "{provider:?} Gemini left open"
        );
        let route = support::route(provider);
        let reason = end_reason(&server, route, call_id)
            .await
            .expect("end reason");
        assert_eq!(
            reason,
            "server shutdown; the caller heard the fallback message"
        );
    }
    assert!(server.app.shutdown.drain(WAIT).await);
    server.stop().await;
}

#[tokio::test]
async fn streams_that_end_badly_get_a_close_frame_that_says_why() {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server(&gemini, &[]).await;
    // An oversized message is a protocol error on the phone side: the call ends, and the
    // provider is told so with a close frame rather than a dropped connection.
    let mut caller = Caller::start(
        &server,
        Provider::Twilio,
        "CA0000000000000000000000000000ffff",
    )
    .await;
    let _session = gemini.next_session(WAIT).await;
    assert!(caller.send_raw(&"x".repeat(70 * 1024)).await);
    assert!(caller.wait_closed(WAIT).await);
    let (code, reason) = caller.close_frame().expect("a close frame");
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("phone stream error"), "{reason}");
    // A stream without a valid token is refused with 1008.
    let mut forged = Caller::start_with(
        &server,
        Provider::Twilio,
        "CA0000000000000000000000000000fffe",
        &[("token".to_owned(), "1t00".to_owned())],
    )
    .await;
    assert!(forged.wait_closed(WAIT).await);
    assert_eq!(forged.close_frame().map(|(code, _)| code), Some(1008));
    server.stop().await;
}
