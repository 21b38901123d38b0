//! Conversation behaviour on a phone line, end to end against the fake Gemini and fake
//! phones of both providers: turn-detection and expressive options in the session setup,
//! keypad digits in and out, and the silent-line nudge and hang-up.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, GeminiSession, schema};
use support::phone::Provider;
use support::rest::FakeRest;
use support::{Caller, PROVIDERS, TestServer};

const WAIT: Duration = Duration::from_secs(5);

/// A server with both providers on a fake REST API, talking to a fake Gemini.
struct World {
    rest: FakeRest,
    gemini: FakeGemini,
    server: TestServer,
}

impl World {
    async fn start(extra: &[(&str, &str)]) -> World {
        World::start_with_url(extra, |gemini| gemini.url()).await
    }

    async fn start_with_url(extra: &[(&str, &str)], url: impl Fn(&FakeGemini) -> String) -> World {
        let rest = FakeRest::start().await;
        let gemini = FakeGemini::start(Behaviour::Normal).await;
        let server = TestServer::with_providers(&rest.url(), &url(&gemini), extra).await;
        World {
            rest,
            gemini,
            server,
        }
    }

    /// An inbound call on `provider`, its Gemini session, and the greeting cue read.
    async fn call(&mut self, provider: Provider, id: &str) -> (Caller, GeminiSession) {
        let caller = Caller::start(&self.server, provider, id).await;
        let mut session = self.gemini.next_session(WAIT).await;
        let greeting = next_message(&mut session).await;
        assert!(is_text_turn(&greeting), "greeting cue first: {greeting}");
        (caller, session)
    }
}

/// The next message from the bridge that is not caller audio.
async fn next_message(session: &mut GeminiSession) -> Value {
    loop {
        let msg = session.recv(WAIT).await.expect("a message from the bridge");
        if msg.pointer("/realtimeInput/audio").is_none() {
            return msg;
        }
    }
}

/// The text of a typed turn, in either text path (3.x `realtimeInput.text`, 2.5 `clientContent`).
fn turn_text(msg: &Value) -> Option<&str> {
    msg.pointer("/realtimeInput/text")
        .or_else(|| msg.pointer("/clientContent/turns/0/parts/0/text"))
        .and_then(Value::as_str)
}

fn is_text_turn(msg: &Value) -> bool {
    turn_text(msg).is_some()
}

// ----- turn-taking controls and expressive options -------------------------------------------

#[tokio::test]
async fn unset_controls_leave_the_setup_untouched() {
    let mut world = World::start(&[]).await;
    let (_caller, session) = world.call(Provider::Twilio, "CAplain").await;
    let setup = &session.setup()["setup"];
    assert!(setup.get("realtimeInputConfig").is_none(), "{setup}");
    assert!(setup.get("proactivity").is_none(), "{setup}");
    assert!(
        setup["generationConfig"]
            .get("enableAffectiveDialog")
            .is_none()
    );
}

#[tokio::test]
async fn each_turn_detection_control_shows_in_the_setup_only_when_set() {
    let cases: [(&str, &str, &str, Value); 4] = [
        (
            "GEMINI_VAD_START_SENSITIVITY",
            "low",
            "startOfSpeechSensitivity",
            json!("START_SENSITIVITY_LOW"),
        ),
        (
            "GEMINI_VAD_END_SENSITIVITY",
            "high",
            "endOfSpeechSensitivity",
            json!("END_SENSITIVITY_HIGH"),
        ),
        (
            "GEMINI_VAD_PREFIX_PADDING_MS",
            "40",
            "prefixPaddingMs",
            json!(40),
        ),
        (
            "GEMINI_VAD_SILENCE_MS",
            "700",
            "silenceDurationMs",
            json!(700),
        ),
    ];
    for (var, value, field, expected) in cases {
        let mut world = World::start(&[(var, value)]).await;
        let (_caller, session) = world.call(Provider::Plivo, "vad").await;
        assert_eq!(session.setup_refusal(), None);
        let detection =
            &session.setup()["setup"]["realtimeInputConfig"]["automaticActivityDetection"];
        assert_eq!(
            detection,
            &json!({ field: expected }),
            "{var}={value} sends exactly its own field"
        );
        world.server.stop().await;
    }
}

#[tokio::test]
async fn expressive_options_reach_a_native_audio_model_on_v1alpha() {
    let mut world = World::start_with_url(
        &[
            ("GEMINI_MODEL", "gemini-2.5-flash-native-audio-latest"),
            ("GEMINI_AFFECTIVE_DIALOG", "true"),
            ("GEMINI_PROACTIVE_AUDIO", "true"),
        ],
        FakeGemini::url_v1alpha,
    )
    .await;
    let (_caller, session) = world.call(Provider::Twilio, "CAexpr").await;
    let setup = &session.setup()["setup"];
    assert_eq!(setup["generationConfig"]["enableAffectiveDialog"], true);
    assert_eq!(setup["proactivity"], json!({"proactiveAudio": true}));
    assert!(session.handshake().path.contains(".v1alpha."));
}

#[tokio::test]
async fn proactive_audio_on_3_8_is_built_in_and_not_sent() {
    let mut world = World::start(&[("GEMINI_PROACTIVE_AUDIO", "true")]).await;
    let (_caller, session) = world.call(Provider::Plivo, "built-in").await;
    assert!(session.setup()["setup"].get("proactivity").is_none());
    assert_eq!(session.setup_refusal(), None);
}

/// The fake refuses what the real service refuses, so the tests above can fail.
#[test]
fn the_fake_gemini_refuses_bad_turn_detection_and_misplaced_expressive_options() {
    let v1beta = support::gemini::GEMINI_LIVE_PATH;
    let v1alpha = v1beta.replace(".v1beta.", ".v1alpha.");
    let with_detection = |detection: Value| {
        json!({"model": "models/gemini-3.8-live",
               "realtimeInputConfig": {"automaticActivityDetection": detection}})
    };
    let good = with_detection(json!({
        "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
        "end_of_speech_sensitivity": "END_SENSITIVITY_HIGH",
        "prefixPaddingMs": 20, "silenceDurationMs": "500"
    }));
    assert_eq!(schema::check_setup_options(&good, v1beta, false), Ok(()));
    for bad in [
        json!({"startOfSpeechSensitivity": "LOW"}),
        json!({"endOfSpeechSensitivity": "START_SENSITIVITY_LOW"}),
        json!({"silenceDurationMs": 0.5}),
        json!({"prefixPaddingMs": "twenty"}),
        json!({"silenceDurationMs": 3_000_000_000u64}),
        json!({"silence_ms": 500}),
    ] {
        let refusal = schema::check_setup_options(&with_detection(bad.clone()), v1beta, false);
        assert!(refusal.is_err(), "{bad} must be refused");
    }
    let expressive = |model: &str| {
        json!({"model": model, "generationConfig": {"enableAffectiveDialog": true},
               "proactivity": {"proactiveAudio": true}})
    };
    let native = expressive("models/gemini-2.5-flash-native-audio-latest");
    assert_eq!(
        schema::check_setup_options(&native, &v1alpha, false),
        Ok(())
    );
    assert_eq!(
        schema::check_setup_options(&native, "/vertex", true),
        Ok(())
    );
    let on_v1beta = schema::check_setup_options(&native, v1beta, false).unwrap_err();
    assert!(
        on_v1beta.contains("Unknown name \"enableAffectiveDialog\""),
        "{on_v1beta}"
    );
    assert!(
        schema::check_setup_options(&expressive("models/gemini-3.8-live"), &v1alpha, false)
            .is_err()
    );
    let not_bool = json!({"model": "models/gemini-2.5-flash-native-audio-latest",
                          "proactivity": {"proactiveAudio": "yes"}});
    assert!(schema::check_setup_options(&not_bool, &v1alpha, false).is_err());
}
