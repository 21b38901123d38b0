//! Property tests: whatever arrives from the phone or from Gemini — random bytes, mangled
//! provider messages, odd-sized audio — the call machine neither panics nor sends the phone
//! anything but well-formed 160-byte frames.

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gemini_phone::bridge::{CallMachine, Mode, Output};
use gemini_phone::config::{GeminiConfig, Secret};
use gemini_phone::gemini::SessionSetup;
use gemini_phone::telephony::{Provider, plivo::Plivo, twilio::Twilio};
use proptest::prelude::*;
use serde_json::{Value, json};

fn live_machine(provider: &dyn Provider, start: &str) -> CallMachine {
    let mut machine = CallMachine::new(Mode::Gemini, provider.media_stream(), Instant::now());
    machine.handle_phone_text(start, Instant::now());
    let config = GeminiConfig {
        api_key: Secret::new("k"),
        model: "gemini-3.8-live".into(),
        voice: "Kore".into(),
        language: None,
        live_url: "ws://127.0.0.1:1".into(),
        setup_timeout: std::time::Duration::from_secs(1),
        backend: Default::default(),
    };
    machine.handle_session_setup(SessionSetup::new(&config, "p".into()));
    machine.handle_gemini_ready(Instant::now());
    while machine.poll_output().is_some() {}
    machine
}

const TWILIO_START: &str = r#"{"event":"start","start":{"callSid":"CA1","streamSid":"MZ1","customParameters":{}},"streamSid":"MZ1"}"#;
const PLIVO_START: &str =
    r#"{"event":"start","sequenceNumber":1,"start":{"callId":"c1","streamId":"s1"}}"#;

/// Checks every phone-bound message: JSON, and media frames exactly 160 bytes.
fn check_outputs(machine: &mut CallMachine) -> Result<(), TestCaseError> {
    while let Some(output) = machine.poll_output() {
        if let Output::Phone(text) = output {
            let message: Value =
                serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let payload = message.pointer("/media/payload").and_then(Value::as_str);
            if let Some(payload) = payload {
                let frame = STANDARD
                    .decode(payload)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(frame.len(), 160);
            }
        }
    }
    Ok(())
}

/// Phone messages: valid shapes with random field values, and random text.
fn phone_message() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(|audio| {
            json!({"event": "media", "media": {"payload": STANDARD.encode(audio)}, "streamSid": "MZ1"}).to_string()
        }),
        "[A-Za-z0-9+/=!@ ]{0,300}".prop_map(|payload| {
            json!({"event": "media", "media": {"payload": payload}}).to_string()
        }),
        prop_oneof![Just("mark"), Just("stop"), Just("dtmf"), Just("playedStream"), Just("clearedAudio"), Just("start"), Just("x")]
            .prop_map(|event| json!({"event": event}).to_string()),
    ]
}

/// Gemini messages: audio of any byte length, turn signals in any combination, and junk.
fn gemini_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (proptest::collection::vec(any::<u8>(), 0..3000), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(audio, interrupted, turn_complete, with_text)| {
                let mut content = json!({
                    "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": STANDARD.encode(audio)}}]},
                    "interrupted": interrupted,
                    "turnComplete": turn_complete,
                });
                if with_text {
                    content["outputTranscription"] = json!({"text": "hi"});
                }
                json!({"serverContent": content}).to_string().into_bytes()
            }
        ),
        any::<String>().prop_map(|data| {
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": data}}]}}}).to_string().into_bytes()
        }),
        Just(br#"{"goAway":{"timeLeft":"1s"}}"#.to_vec()),
        Just(br#"{"toolCall":{"functionCalls":[{"id":"a","name":"x","args":{}}]}}"#.to_vec()),
        Just(br#"{"sessionResumptionUpdate":{"newHandle":"h","resumable":true}}"#.to_vec()),
    ]
}

/// Plays `events` (from the phone when the flag is set, else from Gemini) into a live call.
fn play(
    provider: &dyn Provider,
    start: &str,
    events: Vec<(bool, Vec<u8>)>,
) -> Result<(), TestCaseError> {
    let mut machine = live_machine(provider, start);
    for (from_phone, bytes) in events {
        if from_phone {
            machine.handle_phone_text(&String::from_utf8_lossy(&bytes), Instant::now());
        } else {
            machine.handle_gemini_frame(&bytes, Instant::now());
        }
        check_outputs(&mut machine)?;
    }
    Ok(())
}

/// Up to 40 events, each from either side.
fn event_sequence() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
    proptest::collection::vec(
        prop_oneof![
            phone_message().prop_map(|m| (true, m.into_bytes())),
            gemini_message().prop_map(|m| (false, m)),
        ],
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn twilio_calls_survive_any_sequence(events in event_sequence()) {
        play(&Twilio, TWILIO_START, events)?;
    }

    #[test]
    fn plivo_calls_survive_any_sequence(events in event_sequence()) {
        play(&Plivo, PLIVO_START, events)?;
    }

    #[test]
    fn provider_codecs_never_panic(text in any::<String>()) {
        for provider in [&Twilio as &dyn Provider, &Plivo] {
            let mut stream = provider.media_stream();
            let _ = stream.parse(&text);
        }
    }
}
