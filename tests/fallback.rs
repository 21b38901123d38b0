//! The spoken fallback: when Gemini cannot be reached or is lost beyond resumption, the caller
//! hears an apology instead of dead air, then is transferred or hung up on, and the record
//! says why.

mod support;

use std::time::Duration;

use gemini_phone::audio::codec;
use support::gemini::{Behaviour, FakeGemini};
use support::phone::Provider;
use support::rest::FakeRest;
use support::{Caller, TestServer};

const WAIT: Duration = Duration::from_secs(10);
const TWILIO_CALL: &str = "CA00000000000000000000000000000f01";
const PLIVO_CALL: &str = "0f0f0f0f-0000-4000-8000-000000000f01";

fn call_id(provider: Provider) -> &'static str {
    match provider {
        Provider::Twilio => TWILIO_CALL,
        Provider::Plivo => PLIVO_CALL,
    }
}

/// Plays the call until its fallback message has been sent and acknowledged; returns the
/// μ-law the caller heard.
async fn hear_the_fallback(caller: &mut Caller) -> Vec<u8> {
    let heard = caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
        .await
        .expect("the fallback message, then a mark");
    assert!(caller.ack_mark("playout").await);
    heard.audio()
}

async fn end_reason(server: &TestServer, provider: Provider, call_id: &str) -> String {
    for _ in 0..50 {
        server.app.recorder.flush().await;
        let record = server
            .app
            .store
            .find_by_provider_call_id(support::route(provider), call_id)
            .await
            .expect("store");
        if let Some(reason) = record.and_then(|r| r.end_reason) {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no end reason recorded");
}

fn loud_frames(mulaw: &[u8]) -> usize {
    mulaw
        .chunks(160)
        .filter(|frame| {
            frame
                .iter()
                .any(|&b| codec::decode(b).unsigned_abs() > 2_000)
        })
        .count()
}

#[tokio::test]
async fn a_refused_session_plays_the_apology_then_hangs_up() {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let rest = FakeRest::start().await;
        let gemini = FakeGemini::start(Behaviour::CloseOnSetup(
            1008,
            "models/gemini-x is not found for API version v1beta".into(),
        ))
        .await;
        let server = TestServer::with_providers(&rest.url(), &gemini.url(), &[]).await;
        let id = call_id(provider);
        let mut caller = Caller::start(&server, provider, id).await;
        let heard = hear_the_fallback(&mut caller).await;
        // The built-in clip is about 4.6 s: 230 frames, most of them speech.
        let frames = heard.len() / 160;
        assert!(
            (220..240).contains(&frames),
            "{provider:?}: {frames} frames"
        );
        assert!(
            loud_frames(&heard) > frames / 2,
            "{provider:?}: mostly silence"
        );
        assert_eq!(heard.len() % 160, 0, "whole frames only");
        let requests = rest.wait_requests(1, WAIT).await;
        let hang_up = requests
            .iter()
            .find(|r| r.path.contains(id))
            .unwrap_or_else(|| panic!("{provider:?}: no hang-up: {requests:?}"));
        match provider {
            Provider::Twilio => assert_eq!(hang_up.field("Status"), Some("completed")),
            Provider::Plivo => assert_eq!(hang_up.method, "DELETE"),
        }
        assert!(caller.wait_closed(WAIT).await);
        let reason = end_reason(&server, provider, id).await;
        assert_eq!(
            reason,
            "Gemini unavailable: Gemini closed the session during setup: code 1008 \"models/gemini-x is not found for API version v1beta\"; the caller heard the fallback message",
            "{provider:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_session_lost_beyond_resumption_transfers_the_caller_after_the_apology() {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let rest = FakeRest::start().await;
        let mut gemini = FakeGemini::start(Behaviour::Normal).await;
        let server = TestServer::with_providers(
            &rest.url(),
            &gemini.url(),
            &[("TRANSFER_NUMBER", "+15550007777")],
        )
        .await;
        let id = call_id(provider);
        let mut caller = Caller::start(&server, provider, id).await;
        let session = gemini.next_session(WAIT).await;
        // Dropped with no resumption handle: the session cannot come back.
        session.abort();
        let heard = hear_the_fallback(&mut caller).await;
        assert!(loud_frames(&heard) > 100, "{provider:?}");
        let requests = rest.wait_requests(1, WAIT).await;
        let transfer = requests
            .iter()
            .find(|r| r.path.contains(id))
            .unwrap_or_else(|| panic!("{provider:?}: no transfer: {requests:?}"));
        match provider {
            Provider::Twilio => {
                let twiml = transfer.field("Twiml").unwrap_or_default();
                assert!(twiml.contains("+15550007777"), "{twiml}");
            }
            Provider::Plivo => {
                let aleg = transfer.field("aleg_url").unwrap_or_default().to_owned();
                let json_aleg = transfer
                    .json
                    .as_ref()
                    .and_then(|j| j["aleg_url"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                assert!(
                    aleg.contains("15550007777") || json_aleg.contains("15550007777"),
                    "{transfer:?}"
                );
            }
        }
        let reason = end_reason(&server, provider, id).await;
        assert!(
            reason.ends_with(
                "the caller heard the fallback message and was transferred to +15550007777"
            ),
            "{provider:?}: {reason}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn fallback_audio_replaces_the_builtin_clip_and_a_bad_file_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sorry.wav");
    // One second of a 16 kHz stereo tone: converted to 8 kHz mono at start-up.
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).expect("wav");
    for i in 0..16_000 {
        let v = ((i as f32 * 0.2).sin() * 10_000.0) as i16;
        writer.write_sample(v).expect("sample");
        writer.write_sample(v).expect("sample");
    }
    writer.finalize().expect("wav");

    let rest = FakeRest::start().await;
    let gemini = FakeGemini::start(Behaviour::RejectHandshake(403)).await;
    let server = TestServer::with_providers(
        &rest.url(),
        &gemini.url(),
        &[("FALLBACK_AUDIO", path.to_str().expect("path"))],
    )
    .await;
    let mut caller = Caller::start(&server, Provider::Twilio, TWILIO_CALL).await;
    let heard = hear_the_fallback(&mut caller).await;
    assert_eq!(heard.len() / 160, 50, "one second of the user's clip");
    assert!(loud_frames(&heard) >= 48);
    server.stop().await;

    let config = gemini_phone::config::Config::from_lookup(|name| match name {
        "GEMINI_API_KEY" => Some("k".into()),
        "PUBLIC_URL" => Some("https://x.example".into()),
        "PROMPTS_DIR" => Some(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").into()),
        "DATABASE_URL" => Some("sqlite::memory:".into()),
        "FALLBACK_AUDIO" => Some("Cargo.toml".into()),
        _ => None,
    })
    .expect("config");
    let error = gemini_phone::app::App::new(config)
        .await
        .expect_err("a file that is not WAV");
    assert!(
        error
            .to_string()
            .starts_with("FALLBACK_AUDIO: cannot use Cargo.toml"),
        "{error}"
    );
}
