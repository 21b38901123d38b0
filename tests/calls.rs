//! Whole-call tests: the real server, a fake Gemini Live server and scripted Twilio and
//! Plivo callers, all on loopback. Each scenario runs for both providers.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, GeminiSession, le_bytes_to_pcm16};
use support::phone::{Provider, mulaw_decode, mulaw_tone, pcm_tone_24k, tone_amplitude};
use support::{Caller, PROVIDERS, TEST_API_KEY, TestServer};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);
/// The fallback message is 4.6 s, played in real time.
const FALLBACK_WAIT: Duration = Duration::from_secs(10);

/// A server wired to a fresh fake Gemini, a started call of `provider`, and its session.
async fn live_call(
    provider: Provider,
    call_id: &str,
) -> (FakeGemini, TestServer, Caller, GeminiSession) {
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = TestServer::with_gemini(&gemini.url()).await;
    let caller = Caller::start(&server, provider, call_id).await;
    let session = gemini.next_session(WAIT).await;
    (gemini, server, caller, session)
}

/// Reads client messages until one that is not audio arrives.
async fn next_non_audio(session: &mut GeminiSession) -> Value {
    loop {
        let msg = session.recv(WAIT).await.expect("a message from the bridge");
        if msg.pointer("/realtimeInput/audio").is_none() {
            return msg;
        }
    }
}

/// Sends `ms` of a 24 kHz tone in 240 ms chunks, as the real server paces its output.
fn send_tone(session: &GeminiSession, freq: f32, ms: u32) {
    let pcm = pcm_tone_24k(freq, ms, 8_000);
    for chunk in pcm.chunks(24 * 240) {
        session.send_audio(chunk);
    }
}

#[tokio::test]
async fn answer_xml_opens_a_bidirectional_mulaw_stream() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();

    let twilio = client
        .post(server.http("/twilio/answer"))
        .form(&[
            ("CallSid", "CA1"),
            ("From", "+15550001111"),
            ("To", "+15550002222"),
            ("Direction", "inbound"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(twilio.status(), 200);
    assert_eq!(twilio.headers()["content-type"], "application/xml");
    let xml = twilio.text().await.unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{xml}"
    );
    assert!(
        xml.contains("<Response><Connect><Stream url=\"wss://phone.example.com/twilio/stream\">"),
        "{xml}"
    );
    assert!(
        xml.contains("<Parameter name=\"from\" value=\"+15550001111\"/>"),
        "{xml}"
    );
    assert!(
        xml.contains("<Parameter name=\"direction\" value=\"inbound\"/>"),
        "{xml}"
    );
    assert!(xml.ends_with("</Stream></Connect></Response>"), "{xml}");

    // Plivo posts forms, and sometimes JSON.
    let plivo_form = client
        .post(server.http("/plivo/answer"))
        .form(&[
            ("CallUUID", "c-1"),
            ("From", "15550001111"),
            ("To", "15550002222"),
            ("Direction", "inbound"),
        ])
        .send()
        .await
        .unwrap();
    let plivo_json = client
        .post(server.http("/plivo/answer"))
        .json(&json!({"CallUUID": "c-1", "From": "15550001111", "To": "15550002222", "Direction": "inbound"}))
        .send()
        .await
        .unwrap();
    for response in [plivo_form, plivo_json] {
        assert_eq!(response.status(), 200);
        let xml = response.text().await.unwrap();
        for needle in [
            "<Stream bidirectional=\"true\"",
            "keepCallAlive=\"true\"",
            "contentType=\"audio/x-mulaw;rate=8000\"",
            "extraHeaders=\"from=15550001111,to=15550002222,direction=inbound,record=c",
            ">wss://phone.example.com/plivo/stream</Stream></Response>",
        ] {
            assert!(xml.contains(needle), "missing {needle} in {xml}");
        }
    }

    let no_id = client
        .post(server.http("/twilio/answer"))
        .form(&[("From", "+1")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_id.status(), 400);
    let unknown = client
        .post(server.http("/telnyx/answer"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_status_and_active_calls() {
    let server = TestServer::start(&[]).await;
    let health = server.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["active_calls"], 0);
    assert_eq!(health["agent"], "gemini");
    server.stop().await;
}

#[tokio::test]
async fn setup_carries_key_header_prompt_and_transcription() {
    for provider in PROVIDERS {
        let (_gemini, server, _caller, mut session) = live_call(provider, "setup1").await;
        assert_eq!(session.api_key().as_deref(), Some(TEST_API_KEY));
        assert!(
            !session.uri().contains(TEST_API_KEY),
            "key leaked into the URL"
        );
        let setup = &session.setup()["setup"];
        assert_eq!(setup["model"], "models/gemini-3.8-live");
        assert_eq!(
            setup["generationConfig"]["responseModalities"],
            json!(["AUDIO"])
        );
        assert_eq!(
            setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"],
            "Kore"
        );
        let inbound =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/inbound.md"))
                .unwrap();
        assert_eq!(
            setup["systemInstruction"]["parts"][0]["text"],
            inbound.as_str()
        );
        assert_eq!(setup["inputAudioTranscription"], json!({}));
        assert_eq!(setup["outputAudioTranscription"], json!({}));
        assert_eq!(setup["sessionResumption"], json!({}));
        // The bridge asks the model to greet the caller first.
        let greeting = next_non_audio(&mut session).await;
        assert!(
            greeting.pointer("/realtimeInput/text").is_some(),
            "{greeting}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn greeting_arrives_as_exact_provider_frames() {
    for provider in PROVIDERS {
        let (_gemini, server, mut caller, session) = live_call(provider, "greet1").await;
        send_tone(&session, 440.0, 1_000);
        session.send_turn_complete();
        let received = caller.recv_audio(50, WAIT).await;
        // recv_audio checks each message's exact JSON shape and that payloads are 160 bytes.
        assert_eq!(
            received.media_count(),
            50,
            "{:?}: {}",
            provider,
            received.summary()
        );
        let more = caller.collect_for(QUIET).await;
        assert!(
            more.media_count() <= 1,
            "at most the filter tail follows: {}",
            more.summary()
        );
        assert_eq!(
            more.turn_marks(),
            vec!["turn-1".to_string()],
            "a mark closes the turn"
        );
        let pcm = mulaw_decode(&received.audio());
        let level = tone_amplitude(&pcm[400..], 8_000, 440.0);
        assert!(
            (7_000.0..9_000.0).contains(&level),
            "{provider:?}: 440 Hz came out at {level}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn caller_audio_reaches_gemini_as_16k_pcm_of_the_same_duration() {
    for provider in PROVIDERS {
        let (_gemini, server, mut caller, mut session) = live_call(provider, "up1").await;
        // Let the session open before speaking so nothing is buffered.
        let _greeting = next_non_audio(&mut session).await;
        assert!(caller.send_media(&mulaw_tone(1_000.0, 1_000)).await);
        let audio = session.recv_audio(32_000, WAIT).await;
        let rest = session.drain_audio(QUIET).await;
        assert_eq!(audio.len() + rest.len(), 32_000, "1 s at 16 kHz × 2 bytes");
        let pcm = le_bytes_to_pcm16(&audio);
        let level = tone_amplitude(&pcm[400..], 16_000, 1_000.0);
        // The μ-law tone's amplitude is about 8000 (support::phone::mulaw_tone).
        assert!(level > 6_000.0, "{provider:?}: 1 kHz arrived at {level}");
        session.assert_no_violations();
        server.stop().await;
    }
}

#[tokio::test]
async fn a_second_turn_works_after_turn_complete() {
    for provider in PROVIDERS {
        let (_gemini, server, mut caller, mut session) = live_call(provider, "turns").await;
        send_tone(&session, 500.0, 400);
        session.send_turn_complete();
        let first = caller.recv_audio(20, WAIT).await;
        assert_eq!(first.media_count(), 20);

        assert!(caller.send_media(&mulaw_tone(700.0, 200)).await);
        session.recv_audio(6_400, WAIT).await;
        session.send_input_transcription("what time is it");
        send_tone(&session, 900.0, 600);
        session.send_turn_complete();
        let second = caller.recv_audio(30, WAIT).await;
        assert_eq!(second.media_count(), 30, "{}", second.summary());
        let pcm = mulaw_decode(&second.audio());
        assert!(tone_amplitude(&pcm[200..], 8_000, 900.0) > 6_000.0);
        let tail = caller.collect_for(QUIET).await;
        assert!(
            tail.marks().contains(&"turn-2".to_string()),
            "{}",
            tail.summary()
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn barge_in_clears_playback_and_no_stale_audio_follows() {
    for provider in PROVIDERS {
        let (_gemini, server, mut caller, session) = live_call(provider, "barge").await;
        // 1010 ms leaves part of a frame in the bridge when the interruption lands.
        send_tone(&session, 440.0, 1_010);
        let before = caller.recv_audio(50, WAIT).await;
        assert_eq!(before.media_count(), 50);
        session.send_interrupted();
        session.send_turn_complete();
        let after = caller.collect_for(QUIET).await;
        assert_eq!(after.clear_count(), 1, "{provider:?}: {}", after.summary());
        assert_eq!(
            after.media_after_last_clear(),
            Some(0),
            "stale audio after clear: {}",
            after.summary()
        );

        // The next answer plays normally.
        send_tone(&session, 600.0, 200);
        session.send_turn_complete();
        let next = caller.recv_audio(10, WAIT).await;
        assert_eq!(next.media_count(), 10, "{}", next.summary());
        server.stop().await;
    }
}

#[tokio::test]
async fn hang_up_closes_gemini_and_frees_the_call() {
    for provider in PROVIDERS {
        let (_gemini, server, mut caller, mut session) = live_call(provider, "bye").await;
        assert!(server.wait_active_calls(1, WAIT).await);
        caller.hang_up().await;
        assert!(
            session.wait_closed(WAIT).await,
            "{provider:?}: Gemini socket left open"
        );
        assert!(
            server.wait_active_calls(0, WAIT).await,
            "{provider:?}: call still counted"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn gemini_refusing_plays_the_fallback_and_ends_the_call_cleanly() {
    let refusals = [
        Behaviour::RejectHandshake(403),
        Behaviour::CloseOnSetup(
            1008,
            "models/gemini-x is not found for API version v1beta, or is not supported for bidiGenerateContent".into(),
        ),
        Behaviour::NeverCompleteSetup,
    ];
    for provider in PROVIDERS {
        for behaviour in refusals.clone() {
            let gemini = FakeGemini::start(behaviour.clone()).await;
            let server = TestServer::with_gemini(&gemini.url()).await;
            let mut caller = Caller::start(&server, provider, "refused").await;
            // NeverCompleteSetup waits out the 2 s test setup timeout. The caller hears the
            // fallback message (4.6 s, played in real time) rather than silence, and the call
            // ends once it has played.
            let heard = caller
                .recv_until(FALLBACK_WAIT, |r| r.marks().contains(&"playout".to_owned()))
                .await
                .expect("the fallback message");
            assert!(heard.media_count() > 100, "{provider:?} {behaviour:?}");
            assert!(caller.ack_mark("playout").await);
            assert!(
                caller.wait_closed(WAIT).await,
                "{provider:?} {behaviour:?}: call not ended"
            );
            assert!(server.wait_active_calls(0, WAIT).await);
            server.stop().await;
        }
    }
}

#[tokio::test]
async fn gemini_dropping_mid_call_plays_the_fallback_and_ends_the_call_cleanly() {
    for provider in PROVIDERS {
        for abrupt in [false, true] {
            let (_gemini, server, mut caller, session) = live_call(provider, "dropped").await;
            send_tone(&session, 440.0, 200);
            caller.recv_audio(10, WAIT).await;
            if abrupt {
                session.abort();
            } else {
                session.close(
                    1008,
                    "Operation is not implemented, or supported, or enabled.",
                );
            }
            let heard = caller
                .recv_until(FALLBACK_WAIT, |r| r.marks().contains(&"playout".to_owned()))
                .await
                .expect("the fallback message");
            assert!(heard.media_count() > 100, "{provider:?} abrupt={abrupt}");
            assert!(caller.ack_mark("playout").await);
            assert!(
                caller.wait_closed(WAIT).await,
                "{provider:?} abrupt={abrupt}: call not ended"
            );
            assert!(server.wait_active_calls(0, WAIT).await);
            server.stop().await;
        }
    }
}

#[tokio::test]
async fn echo_mode_plays_the_callers_audio_back_without_gemini() {
    for provider in PROVIDERS {
        let server = TestServer::start(&[("AGENT", "echo"), ("GEMINI_API_KEY", "")]).await;
        assert_eq!(server.health().await["agent"], "echo");
        let mut caller = Caller::start(&server, provider, "echo1").await;
        let sent = mulaw_tone(800.0, 400);
        assert!(caller.send_media(&sent).await);
        let received = caller.recv_audio(20, WAIT).await;
        assert_eq!(received.audio(), sent, "{provider:?}");
        caller.hang_up().await;
        assert!(server.wait_active_calls(0, WAIT).await);
        server.stop().await;
    }
}

#[tokio::test]
async fn bad_input_is_survived_and_stays_inside_its_call() {
    for provider in PROVIDERS {
        let mut gemini = FakeGemini::start(Behaviour::Normal).await;
        let server = TestServer::with_gemini(&gemini.url()).await;
        let mut bystander = Caller::start(&server, provider, "bystander").await;
        let mut bystander_session = gemini.next_session(WAIT).await;
        let mut noisy = Caller::start(&server, provider, "noisy").await;
        let mut noisy_session = gemini.next_session(WAIT).await;

        for junk in [
            "not json at all",
            "{\"event\":\"media\"}",
            "{\"event\":\"media\",\"media\":{\"payload\":\"%%%not-base64%%%\"}}",
            "{\"event\":\"somethingNew\",\"x\":1}",
            "[1,2,3]",
            "{\"event\":\"start\"}",
        ] {
            assert!(noisy.send_raw(junk).await);
        }
        assert!(noisy.send_binary(&[1, 2, 3]).await);
        // Still alive: audio keeps flowing up.
        assert!(noisy.send_media(&mulaw_tone(1_000.0, 100)).await);
        noisy_session.recv_audio(3_200, WAIT).await;

        // Bad input from Gemini: not JSON, bad base64, an odd number of PCM bytes.
        noisy_session.send_text(json!("just a string"));
        noisy_session.send(json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "###"}}]}}}));
        noisy_session.send(json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAAA/w=="}}]}}}));
        send_tone(&noisy_session, 440.0, 200);
        let heard = noisy.recv_audio(10, WAIT).await;
        assert_eq!(heard.media_count(), 10, "{}", heard.summary());

        // A huge message ends only the call that sent it.
        let huge = format!(
            "{{\"event\":\"media\",\"media\":{{\"payload\":\"{}\"}}}}",
            "A".repeat(200_000)
        );
        noisy.send_raw(&huge).await;
        assert!(
            noisy.wait_closed(WAIT).await,
            "{provider:?}: oversized message not refused"
        );
        assert!(noisy_session.wait_closed(WAIT).await);

        assert!(bystander.send_media(&mulaw_tone(1_000.0, 100)).await);
        bystander_session.recv_audio(3_200, WAIT).await;
        assert!(server.wait_active_calls(1, WAIT).await);
        bystander.hang_up().await;
        assert!(server.wait_active_calls(0, WAIT).await);
        server.stop().await;
    }
}

#[tokio::test]
async fn go_away_resumes_the_session_with_the_latest_handle() {
    let (mut gemini, server, mut caller, mut session) = live_call(Provider::Twilio, "resume").await;
    let _greeting = next_non_audio(&mut session).await;
    session.send_resumption_update("handle-1");
    session.send_resumption_update("handle-2");
    session.send_go_away("50s");
    let mut resumed = gemini.next_session(WAIT).await;
    assert_eq!(
        resumed.setup()["setup"]["sessionResumption"]["handle"],
        "handle-2"
    );
    assert!(
        session.wait_closed(WAIT).await,
        "old socket must close before resuming"
    );
    // The call goes on over the new socket, without a second greeting.
    assert!(caller.send_media(&mulaw_tone(1_000.0, 100)).await);
    resumed.recv_audio(3_200, WAIT).await;
    assert!(
        resumed.take_non_audio().is_empty(),
        "greeting repeated after resumption"
    );
    send_tone(&resumed, 440.0, 200);
    assert_eq!(caller.recv_audio(10, WAIT).await.media_count(), 10);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_tool_call_is_answered_with_an_error() {
    let (_gemini, server, _caller, mut session) = live_call(Provider::Plivo, "tool").await;
    let _greeting = next_non_audio(&mut session).await;
    session.send_tool_call("fc-7", "launch_rockets", json!({"count": 3}));
    let reply = next_non_audio(&mut session).await;
    let response = &reply["toolResponse"]["functionResponses"][0];
    assert_eq!(response["id"], "fc-7");
    assert_eq!(response["name"], "launch_rockets");
    assert!(
        response["response"]["error"]
            .as_str()
            .unwrap()
            .contains("launch_rockets")
    );
    server.stop().await;
}

#[tokio::test]
async fn transcripts_do_not_disturb_audio() {
    let (_gemini, server, mut caller, session) = live_call(Provider::Twilio, "words").await;
    session.send_input_transcription("hello there");
    session.send_audio_with_transcript(&pcm_tone_24k(440.0, 200, 8_000), "Hi, how can I help?");
    session.send_turn_complete();
    assert_eq!(caller.recv_audio(10, WAIT).await.media_count(), 10);
    server.stop().await;
}
