use super::*;
use crate::config::{GeminiConfig, Secret};
use crate::telephony::{Provider, twilio::Twilio};
use base64::Engine as _;
use serde_json::{Value, json};

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"from":"+1555"}},"streamSid":"MZ1"}"#;

fn media(frame: &[u8]) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(frame);
    format!(
        r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{payload}"}},"streamSid":"MZ1"}}"#
    )
}

fn model_audio(samples: usize) -> Vec<u8> {
    let pcm: Vec<u8> = (0..samples)
        .flat_map(|i| (((i as f64 * 0.1).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    let data = base64::engine::general_purpose::STANDARD.encode(pcm);
    json!({"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":data}}]}}})
        .to_string()
        .into_bytes()
}

fn setup() -> SessionSetup {
    let config = GeminiConfig {
        api_key: Secret::new("k"),
        model: "gemini-3.8-live".into(),
        voice: "Kore".into(),
        language: None,
        live_url: "ws://127.0.0.1:1".into(),
        setup_timeout: Duration::from_secs(1),
        backend: Default::default(),
    };
    SessionSetup::new(&config, "Be brief.".into())
}

/// A transcript line as the machine queues it (not interrupted).
fn said(speaker: Speaker, text: &str) -> Output {
    Output::Transcript {
        speaker,
        text: text.into(),
        interrupted: false,
    }
}

fn drain(machine: &mut CallMachine) -> Vec<Output> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}

fn kinds(outputs: &[Output]) -> Vec<&'static str> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Started(_) => "started",
            Output::Phone(text) => match serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v["event"].as_str().map(str::to_owned))
                .as_deref()
            {
                Some("media") => "play",
                Some("clear") => "clear",
                Some("mark") => "mark",
                _ => "phone?",
            },
            Output::Gemini(text) if text.contains("\"audio\"") => "audio-up",
            Output::Gemini(_) => "gemini",
            Output::CloseGemini => "close-gemini",
            Output::ConnectGemini(_) => "connect",
            Output::Transcript { .. } => "transcript",
            Output::ToolCalls(_) => "tools",
            Output::CancelToolCalls(_) => "cancel",
            Output::PlayedOut(_) => "played-out",
            Output::End(_) => "end",
        })
        .collect()
}

/// A Gemini-mode machine that is live (session open, greeting sent).
fn live() -> CallMachine {
    let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
    // The stall watchdog has tests of its own; here the model may take its time.
    m.set_stall_timeout(Duration::from_secs(3_600));
    m.handle_phone_text(START, Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["started"]);
    m.handle_session_setup(setup());
    assert_eq!(kinds(&drain(&mut m)), ["connect"]);
    m.handle_gemini_ready(Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["gemini"], "greeting cue");
    m
}

#[test]
fn caller_audio_is_held_while_connecting_and_sent_after_the_greeting() {
    let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
    m.handle_phone_text(START, Instant::now());
    m.handle_session_setup(setup());
    drain(&mut m);
    for _ in 0..5 {
        m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    }
    assert!(
        drain(&mut m).is_empty(),
        "nothing may reach Gemini before setupComplete"
    );
    m.handle_gemini_ready(Instant::now());
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["gemini", "audio-up"]);
    let Output::Gemini(text) = &out[1] else {
        unreachable!()
    };
    let msg: Value = serde_json::from_str(text).unwrap();
    let data = msg["realtimeInput"]["audio"]["data"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert_eq!(bytes.len(), 5 * 160 * 4, "100 ms of 16 kHz PCM16");
}

#[test]
fn every_phone_frame_goes_up_at_once() {
    let mut m = live();
    m.handle_phone_text(&media(&[0x7F; 160]), Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["audio-up"]);
}

#[test]
fn model_audio_becomes_frames_and_a_mark_ends_the_turn() {
    let mut m = live();
    // 250 ms at 24 kHz: 12 whole frames and a partial one.
    m.handle_gemini_frame(&model_audio(6_000), Instant::now());
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["play"; 12]);
    assert!(m.agent_speaking());
    m.handle_gemini_frame(
        br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"totalTokenCount":5}}"#,
        Instant::now(),
    );
    let out = drain(&mut m);
    let k = kinds(&out);
    assert_eq!(k.last(), Some(&"mark"));
    assert!(
        k[..k.len() - 1].iter().all(|&x| x == "play") && k.len() >= 2,
        "{k:?}"
    );
    assert!(!m.agent_speaking());
}

#[test]
fn interruption_clears_and_drops_the_partial_frame() {
    let mut m = live();
    m.handle_gemini_frame(&model_audio(6_000), Instant::now());
    drain(&mut m);
    m.handle_gemini_frame(br#"{"serverContent":{"interrupted":true}}"#, Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["clear"]);
    m.handle_gemini_frame(
        br#"{"serverContent":{"turnComplete":true}}"#,
        Instant::now(),
    );
    assert!(
        drain(&mut m).is_empty(),
        "no stale audio and no mark after a barge-in"
    );
    m.handle_gemini_frame(&model_audio(480), Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["play"], "the next answer plays");
}

#[test]
fn several_fields_in_one_message_are_all_handled() {
    let mut m = live();
    let mut msg: Value = serde_json::from_slice(&model_audio(480)).unwrap();
    msg["serverContent"]["outputTranscription"] = json!({"text": "Hello!"});
    msg["serverContent"]["turnComplete"] = json!(true);
    msg["sessionResumptionUpdate"] = json!({"newHandle": "h9", "resumable": true});
    m.handle_gemini_frame(msg.to_string().as_bytes(), Instant::now());
    let out = drain(&mut m);
    assert!(out.contains(&said(Speaker::Agent, "Hello!")), "{out:?}");
    assert!(kinds(&out).contains(&"play") && kinds(&out).contains(&"mark"));
    m.handle_gemini_closed(1011, "Internal error encountered.".into(), Instant::now());
    let out = drain(&mut m);
    let Some(Output::ConnectGemini(setup)) =
        out.iter().find(|o| matches!(o, Output::ConnectGemini(_)))
    else {
        panic!("no resumption: {out:?}");
    };
    assert!(setup.contains("\"handle\":\"h9\""));
}

#[test]
fn transcripts_are_whole_lines_per_turn() {
    let mut m = live();
    m.handle_gemini_frame(
        br#"{"serverContent":{"inputTranscription":{"text":"what's the "}}}"#,
        Instant::now(),
    );
    m.handle_gemini_frame(
        br#"{"serverContent":{"inputTranscription":{"text":"weather"}}}"#,
        Instant::now(),
    );
    assert!(drain(&mut m).is_empty());
    m.handle_gemini_frame(&model_audio(480), Instant::now());
    let out = drain(&mut m);
    assert_eq!(out[0], said(Speaker::Caller, "what's the weather"));
    m.handle_gemini_frame(
        br#"{"serverContent":{"outputTranscription":{"text":" Sunny"}}}"#,
        Instant::now(),
    );
    m.handle_gemini_frame(
        br#"{"serverContent":{"outputTranscription":{"text":" today."}}}"#,
        Instant::now(),
    );
    m.handle_gemini_frame(
        br#"{"serverContent":{"turnComplete":true}}"#,
        Instant::now(),
    );
    let out = drain(&mut m);
    assert!(out.contains(&said(Speaker::Agent, "Sunny today.")));
}

#[test]
fn go_away_waits_for_the_end_of_the_turn() {
    let mut m = live();
    m.handle_gemini_frame(
        br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
        Instant::now(),
    );
    m.handle_gemini_frame(&model_audio(4_800), Instant::now());
    drain(&mut m);
    m.handle_gemini_frame(br#"{"goAway":{"timeLeft":"50s"}}"#, Instant::now());
    assert!(
        drain(&mut m).is_empty(),
        "must not cut the agent off mid-sentence"
    );
    assert!(
        m.poll_timeout().is_some(),
        "a deadline guards against a turn that never ends"
    );
    m.handle_gemini_frame(
        br#"{"serverContent":{"turnComplete":true}}"#,
        Instant::now(),
    );
    let out = drain(&mut m);
    let k = kinds(&out);
    assert_eq!(&k[k.len() - 2..], ["close-gemini", "connect"]);
    // While the new session opens, caller audio waits; then it flows again.
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    assert!(drain(&mut m).is_empty());
    m.handle_gemini_ready(Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["audio-up"], "no second greeting");
}

#[test]
fn go_away_deadline_forces_the_resumption() {
    let mut m = live();
    m.handle_gemini_frame(&model_audio(4_800), Instant::now());
    m.handle_gemini_frame(br#"{"goAway":{"timeLeft":"6s"}}"#, Instant::now());
    drain(&mut m);
    let deadline = m.poll_timeout().expect("deadline");
    m.handle_timeout(deadline);
    let k = kinds(&drain(&mut m));
    assert!(k.ends_with(&["close-gemini", "connect"]), "{k:?}");
}

#[test]
fn failed_resumptions_end_the_call_after_a_few_tries() {
    let mut m = live();
    m.handle_gemini_frame(
        br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
        Instant::now(),
    );
    m.handle_gemini_closed(
        1011,
        "Deadline expired before operation could complete.".into(),
        Instant::now(),
    );
    drain(&mut m);
    let mut now = Instant::now();
    for _ in 1..MAX_RECONNECT_ATTEMPTS {
        m.handle_gemini_failed("refused".into(), now);
        assert!(drain(&mut m).is_empty(), "the next try waits its backoff");
        now += Duration::from_secs(1);
        m.handle_timeout(now);
        assert_eq!(kinds(&drain(&mut m)), ["connect"]);
    }
    m.handle_gemini_failed("refused".into(), Instant::now());
    let out = drain(&mut m);
    assert!(
        matches!(
            out.last(),
            Some(Output::End(EndReason::GeminiUnavailable(_)))
        ),
        "{out:?}"
    );
    assert!(m.is_ended());
}

#[test]
fn fatal_closes_end_the_call_with_the_reason() {
    let mut m = live();
    m.handle_gemini_frame(
        br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
        Instant::now(),
    );
    m.handle_gemini_closed(
        1007,
        "API key not valid. Please pass a valid API key.".into(),
        Instant::now(),
    );
    let out = drain(&mut m);
    assert_eq!(
        out,
        [Output::End(EndReason::GeminiClosed {
            code: 1007,
            reason: "API key not valid. Please pass a valid API key.".into()
        })]
    );
    m.handle_phone_text(&media(&[0; 160]), Instant::now());
    m.handle_gemini_frame(&model_audio(480), Instant::now());
    assert!(drain(&mut m).is_empty(), "nothing happens after the end");
}

#[test]
fn no_start_ends_the_call() {
    let now = Instant::now();
    let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), now);
    m.handle_phone_text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        Instant::now(),
    );
    m.handle_timeout(now + START_TIMEOUT - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(now + START_TIMEOUT);
    assert_eq!(drain(&mut m), [Output::End(EndReason::NoStart)]);
}

#[test]
fn the_call_ends_at_its_deadline() {
    let mut m = live();
    let deadline = Instant::now() + Duration::from_secs(1800);
    m.set_call_deadline(deadline);
    // The caller keeps talking, so only the call deadline can end the call.
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    drain(&mut m);
    m.handle_timeout(deadline - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(deadline));
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    drain(&mut m);
    m.handle_timeout(deadline);
    assert_eq!(drain(&mut m), [Output::End(EndReason::MaxDuration)]);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_hang_up_waits_for_the_goodbye_to_play() {
    let mut m = live();
    let now = Instant::now();
    m.handle_gemini_frame(&model_audio(4_800), Instant::now());
    drain(&mut m);
    m.handle_after_playout(AfterPlayout::HangUp, now);
    assert!(drain(&mut m).is_empty(), "the goodbye is still being said");
    m.handle_gemini_frame(&model_audio(2_400), Instant::now());
    m.handle_gemini_frame(
        br#"{"serverContent":{"turnComplete":true}}"#,
        Instant::now(),
    );
    let out = drain(&mut m);
    let Some(Output::Phone(last)) = out.last() else {
        panic!("{out:?}")
    };
    assert!(
        last.contains("\"mark\"") && last.contains("playout"),
        "{last}"
    );
    assert!(
        kinds(&out)[..out.len() - 2].iter().all(|&k| k == "play"),
        "{:?}",
        kinds(&out)
    );
    m.handle_phone_text(
        r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"turn-1"}}"#,
        Instant::now(),
    );
    assert!(drain(&mut m).is_empty(), "other marks do not count");
    m.handle_phone_text(
        r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"playout"}}"#,
        Instant::now(),
    );
    assert_eq!(drain(&mut m), [Output::PlayedOut(AfterPlayout::HangUp)]);
    m.finish(EndReason::AgentHungUp);
    assert_eq!(drain(&mut m), [Output::End(EndReason::AgentHungUp)]);
}

#[test]
fn a_hang_up_goes_ahead_when_the_mark_never_comes_back() {
    let mut m = live();
    let now = Instant::now();
    m.handle_after_playout(AfterPlayout::HangUp, now);
    assert_eq!(
        kinds(&drain(&mut m)),
        ["mark"],
        "silent agent: mark at once"
    );
    m.handle_timeout(now + PLAYOUT_TIMEOUT - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty(), "still waiting for the mark");
    m.handle_timeout(now + PLAYOUT_TIMEOUT);
    assert_eq!(drain(&mut m), [Output::PlayedOut(AfterPlayout::HangUp)]);
}

#[test]
fn a_phone_stream_that_goes_quiet_is_ended() {
    let opened = Instant::now();
    let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), opened);
    m.handle_phone_text(START, Instant::now());
    drain(&mut m);
    m.set_stall_timeout(Duration::from_secs(3_600));
    let first = opened + PHONE_SILENCE_TIMEOUT;
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    m.handle_timeout(first);
    assert!(drain(&mut m).is_empty(), "audio arrived in time");
    m.handle_timeout(first + PHONE_SILENCE_TIMEOUT - Duration::from_millis(1));
    assert!(
        drain(&mut m).is_empty(),
        "the next check is a whole period later"
    );
    m.handle_timeout(first + PHONE_SILENCE_TIMEOUT);
    assert_eq!(drain(&mut m), [Output::End(EndReason::PhoneSilent)]);
}

#[test]
fn audio_is_held_while_a_blocking_model_waits_for_a_tool() {
    let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
    m.handle_phone_text(START, Instant::now());
    let mut old_model = setup();
    old_model.model = "models/gemini-2.5-flash-native-audio-latest".into();
    m.handle_session_setup(old_model);
    m.handle_gemini_ready(Instant::now());
    drain(&mut m);
    m.handle_gemini_frame(
        br#"{"toolCall":{"functionCalls":[{"id":"a","name":"f"},{"id":"b","name":"g"}]}}"#,
        Instant::now(),
    );
    drain(&mut m);
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    assert!(
        drain(&mut m).is_empty(),
        "audio during a blocking call risks a 1008 close"
    );
    m.handle_tool_result("a", "f", &json!({"ok": true}), None, Instant::now());
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    assert_eq!(
        kinds(&drain(&mut m)),
        ["gemini"],
        "the response goes out; audio waits: one call is still pending"
    );
    m.handle_gemini_frame(br#"{"toolCallCancellation":{"ids":["b"]}}"#, Instant::now());
    let out = drain(&mut m);
    assert_eq!(
        kinds(&out),
        ["audio-up", "cancel"],
        "held audio flows once nothing is pending"
    );
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["audio-up"]);
}

#[test]
fn audio_keeps_flowing_while_a_non_blocking_model_runs_tools() {
    let mut m = live();
    m.handle_gemini_frame(
        br#"{"toolCall":{"functionCalls":[{"id":"a","name":"f"}]}}"#,
        Instant::now(),
    );
    drain(&mut m);
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    assert_eq!(kinds(&drain(&mut m)), ["audio-up"]);
}

#[test]
fn stop_ends_the_call() {
    let mut m = live();
    m.handle_phone_text(r#"{"event":"stop","sequenceNumber":"9","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#, Instant::now());
    assert_eq!(drain(&mut m), [Output::End(EndReason::CallerHungUp)]);
}

#[test]
fn echo_mode_reframes_the_callers_audio() {
    let mut m = CallMachine::new(Mode::Echo, Twilio.media_stream(), Instant::now());
    m.handle_phone_text(START, Instant::now());
    drain(&mut m);
    m.handle_phone_text(&media(&[1; 100]), Instant::now());
    assert!(drain(&mut m).is_empty(), "a partial frame waits");
    m.handle_phone_text(&media(&[2; 100]), Instant::now());
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["play"]);
}

#[test]
fn tool_calls_and_cancellations_are_passed_on() {
    let mut m = live();
    m.handle_gemini_frame(br#"{"toolCall":{"functionCalls":[{"id":"a","name":"f","args":{"x":1}},{"id":"b","name":"g"}]}}"#, Instant::now());
    let out = drain(&mut m);
    let [Output::ToolCalls(calls)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].args, json!({"x": 1}));
    m.handle_gemini_frame(br#"{"toolCallCancellation":{"ids":["a"]}}"#, Instant::now());
    assert_eq!(drain(&mut m), [Output::CancelToolCalls(vec!["a".into()])]);
}

#[test]
fn garbage_from_either_side_changes_nothing() {
    let mut m = live();
    for junk in [
        "",
        "{",
        "null",
        "[]",
        r#"{"event":7}"#,
        r#"{"event":"media","media":{"payload":"*"}}"#,
    ] {
        m.handle_phone_text(junk, Instant::now());
    }
    m.handle_phone_binary();
    for junk in [
        &b""[..],
        b"\xff\xfe",
        b"{}",
        br#"{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"@@"}}]}}}"#,
    ] {
        m.handle_gemini_frame(junk, Instant::now());
    }
    assert!(drain(&mut m).is_empty());
    assert!(!m.is_ended());
}

/// Watchdogs, resumption, input bounds, shutdown and the spoken fallback.
mod resilience;

/// Paced playout: the provider is fed at real time plus the lead.
mod pacing;
