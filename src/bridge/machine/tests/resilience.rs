//! The machine under failure: a Gemini that goes quiet or drops, a stream that floods,
//! shutdown, and the spoken fallback.

use super::*;

/// A live machine whose stall watchdog fires after `stall`, holding resumption handle `h1`.
fn live_with_handle(stall: Duration) -> CallMachine {
    let mut m = live();
    m.set_stall_timeout(stall);
    m.handle_gemini_frame(
        br#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#,
        Instant::now(),
    );
    m
}

#[test]
fn a_model_that_goes_quiet_is_resumed_once_then_the_call_ends() {
    let stall = Duration::from_secs(8);
    let mut m = live_with_handle(stall);
    let t0 = Instant::now();
    m.handle_gemini_frame(
        br#"{"serverContent":{"inputTranscription":{"text":"hello?"}}}"#,
        t0,
    );
    m.handle_timeout(t0 + stall - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty(), "the model still has time");
    m.handle_timeout(t0 + stall);
    let out = drain(&mut m);
    let k = kinds(&out);
    assert_eq!(k, ["close-gemini", "connect"]);
    let Some(Output::ConnectGemini(setup)) = out.last() else {
        panic!("{out:?}")
    };
    assert!(
        setup.contains("\"handle\":\"h1\""),
        "resumed with the handle"
    );
    // The resumed session opens, and the model still says nothing.
    let t1 = t0 + stall + Duration::from_millis(300);
    m.handle_gemini_ready(t1);
    drain(&mut m);
    m.handle_timeout(t1 + stall);
    assert_eq!(
        drain(&mut m),
        [
            said(Speaker::Caller, "hello?"),
            Output::End(EndReason::GeminiStalled)
        ]
    );
}

#[test]
fn a_model_that_answers_is_never_treated_as_stalled() {
    let stall = Duration::from_secs(8);
    let mut m = live_with_handle(stall);
    let t0 = Instant::now();
    m.handle_gemini_frame(
        br#"{"serverContent":{"inputTranscription":{"text":"hi"}}}"#,
        t0,
    );
    m.handle_gemini_frame(&model_audio(480), t0 + Duration::from_secs(1));
    m.handle_gemini_frame(br#"{"serverContent":{"turnComplete":true}}"#, t0);
    drain(&mut m);
    // A long silence with nobody owing anybody an answer is a quiet line, not a stall.
    m.handle_timeout(t0 + Duration::from_secs(60));
    assert!(!kinds(&drain(&mut m)).contains(&"connect"));
    assert!(!m.is_ended());
}

#[test]
fn abnormal_closes_resume_with_backoff_while_a_handle_is_held() {
    for code in [1006, 1001, 1011] {
        let mut m = live_with_handle(Duration::from_secs(3_600));
        m.handle_gemini_closed(code, "connection reset".into(), Instant::now());
        let k = kinds(&drain(&mut m));
        assert_eq!(k, ["close-gemini", "connect"], "code {code}");
        let now = Instant::now();
        m.handle_gemini_failed("refused".into(), now);
        assert!(drain(&mut m).is_empty(), "the second try waits");
        m.handle_timeout(now + Duration::from_millis(499));
        assert!(drain(&mut m).is_empty(), "backoff not over");
        m.handle_timeout(now + Duration::from_millis(500));
        assert_eq!(kinds(&drain(&mut m)), ["connect"]);
        // Caller audio meanwhile is held, then flows when the session is back.
        m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
        assert!(drain(&mut m).is_empty());
        m.handle_gemini_ready(now);
        assert_eq!(kinds(&drain(&mut m)), ["audio-up"], "code {code}");
    }
}

#[test]
fn a_close_without_a_handle_or_a_refusal_ends_the_call() {
    let mut m = live();
    m.handle_gemini_closed(1006, "reset".into(), Instant::now());
    assert!(matches!(
        drain(&mut m).last(),
        Some(Output::End(EndReason::GeminiClosed { code: 1006, .. }))
    ));
    let mut m = live_with_handle(Duration::from_secs(3_600));
    m.handle_gemini_closed(1011, "Quota exceeded".into(), Instant::now());
    assert!(m.is_ended(), "quota is final");
}

#[test]
fn oversized_and_faster_than_real_time_audio_is_dropped_and_a_flood_ends_the_call() {
    let opened = Instant::now();
    let mut m = live();
    m.handle_phone_text(&media(&[0xFF; MAX_FRAME_BYTES + 1]), Instant::now());
    assert!(drain(&mut m).is_empty(), "an oversized payload is dropped");
    assert_eq!(m.dropped_caller_frames(), 1);
    let mut now = opened;
    let mut sent_up = 0;
    let mut ended = None;
    // Ten times real time, window after window.
    for _ in 0..10 {
        for _ in 0..1_000 {
            m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
        }
        sent_up += kinds(&drain(&mut m))
            .iter()
            .filter(|k| **k == "audio-up")
            .count();
        now += INPUT_WINDOW;
        m.handle_timeout(now);
        if let Some(Output::End(reason)) = drain(&mut m).pop() {
            ended = Some(reason);
            break;
        }
    }
    assert_eq!(ended, Some(EndReason::AudioFlood));
    assert!(
        sent_up <= 3 * 150,
        "at most 1.5x real time reached Gemini, got {sent_up} frames"
    );
}

#[test]
fn real_time_audio_is_never_dropped() {
    let mut m = live();
    let mut now = Instant::now();
    for _ in 0..30 {
        for _ in 0..100 {
            m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
        }
        assert_eq!(kinds(&drain(&mut m)), ["audio-up"; 100]);
        now += INPUT_WINDOW;
        m.handle_timeout(now);
        drain(&mut m);
    }
    assert_eq!(m.dropped_caller_frames(), 0);
    assert!(!m.is_ended());
}

#[test]
fn shutdown_ends_the_call_with_its_reason_and_the_last_words_on_record() {
    let mut m = live();
    m.handle_gemini_frame(
        br#"{"serverContent":{"outputTranscription":{"text":"One moment"}}}"#,
        Instant::now(),
    );
    m.handle_shutdown(Instant::now());
    assert_eq!(
        drain(&mut m),
        [
            said(Speaker::Agent, "One moment"),
            Output::End(EndReason::ServerShutdown)
        ]
    );
    assert_eq!(m.poll_timeout(), None, "no timer outlives the call");
    assert_eq!(EndReason::ServerShutdown.to_string(), "server shutdown");
}

#[test]
fn a_tool_result_is_sent_and_the_model_then_owes_an_answer() {
    let stall = Duration::from_secs(8);
    let mut m = live_with_handle(stall);
    let now = Instant::now();
    m.handle_tool_result("a", "lookup", &json!({"status": "shipped"}), None, now);
    let out = drain(&mut m);
    let [Output::Gemini(text)] = out.as_slice() else {
        panic!("{out:?}")
    };
    let message: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        message["toolResponse"]["functionResponses"][0]["response"]["status"],
        "shipped"
    );
    m.handle_timeout(now + stall);
    assert!(kinds(&drain(&mut m)).ends_with(&["close-gemini", "connect"]));
}

/// A live machine with a 0.5 s fallback clip.
fn live_with_fallback() -> CallMachine {
    let mut m = live();
    m.set_fallback_clip(std::sync::Arc::from(vec![0x10u8; 4_000]));
    m
}

#[test]
fn a_lost_session_plays_the_fallback_then_asks_for_the_next_step() {
    let mut m = live_with_fallback();
    m.handle_gemini_frame(&model_audio(4_800), Instant::now());
    drain(&mut m);
    let now = Instant::now();
    m.handle_gemini_closed(1008, "Policy violation".into(), now);
    let out = drain(&mut m);
    let k = kinds(&out);
    assert_eq!(
        k[..2],
        ["close-gemini", "clear"],
        "the agent's words stop at the provider, and the session closes: {k:?}"
    );
    assert_eq!(
        k.iter().filter(|x| **x == "play").count(),
        25,
        "0.5 s of clip: {k:?}"
    );
    assert_eq!(k.last(), Some(&"mark"), "{k:?}");
    assert!(!m.is_ended(), "the caller is still listening");
    // Caller audio and Gemini frames change nothing meanwhile.
    m.handle_phone_text(&media(&[0xFF; 160]), Instant::now());
    m.handle_gemini_frame(&model_audio(480), now);
    assert!(drain(&mut m).is_empty());
    m.handle_phone_text(
        r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"playout"}}"#,
        Instant::now(),
    );
    assert_eq!(
        drain(&mut m),
        [Output::PlayedOut(AfterPlayout::Fallback {
            cause: EndReason::GeminiClosed {
                code: 1008,
                reason: "Policy violation".into()
            }
        })]
    );
}

#[test]
fn without_a_clip_a_lost_session_ends_the_call_at_once() {
    let mut m = live();
    m.handle_gemini_closed(1008, "Policy violation".into(), Instant::now());
    assert!(matches!(
        drain(&mut m).last(),
        Some(Output::End(EndReason::GeminiClosed { code: 1008, .. }))
    ));
}

#[test]
fn a_session_refused_at_the_start_falls_back_and_a_lost_mark_does_not_strand_the_call() {
    let mut m = CallMachine::new(Mode::Gemini, Twilio.media_stream(), Instant::now());
    m.set_fallback_clip(std::sync::Arc::from(vec![0x10u8; 8_000]));
    m.handle_phone_text(START, Instant::now());
    m.handle_session_setup(setup());
    drain(&mut m);
    let now = Instant::now();
    m.handle_gemini_failed("HTTP 403".into(), now);
    let k = kinds(&drain(&mut m));
    assert_eq!(k.iter().filter(|x| **x == "play").count(), 50);
    // The provider never acknowledges the mark: the wait ends after the clip plus a margin.
    m.handle_timeout(now + Duration::from_secs(1) + PLAYOUT_TIMEOUT);
    assert!(matches!(
        drain(&mut m).as_slice(),
        [Output::PlayedOut(AfterPlayout::Fallback {
            cause: EndReason::GeminiUnavailable(_)
        })]
    ));
}

#[test]
fn a_pending_hang_up_gives_way_to_the_fallback_and_a_caller_hang_up_ends_it() {
    let mut m = live_with_fallback();
    let now = Instant::now();
    m.handle_after_playout(AfterPlayout::HangUp, now);
    drain(&mut m);
    m.handle_gemini_closed(1006, "reset".into(), now);
    let out = drain(&mut m);
    assert!(kinds(&out).contains(&"play"), "{out:?}");
    m.handle_after_playout(AfterPlayout::HangUp, now);
    assert!(
        drain(&mut m).is_empty(),
        "no new actions while falling back"
    );
    m.handle_phone_text(r#"{"event":"stop","sequenceNumber":"9","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#, Instant::now());
    assert_eq!(drain(&mut m), [Output::End(EndReason::CallerHungUp)]);
}

#[test]
fn shutdown_says_goodbye_with_the_fallback_message_when_there_is_one() {
    let mut m = live_with_fallback();
    let now = Instant::now();
    m.handle_shutdown(now);
    let k = kinds(&drain(&mut m));
    assert_eq!(k.iter().filter(|x| **x == "play").count(), 25, "{k:?}");
    assert_eq!(k.last(), Some(&"mark"));
    // The drain deadline is near: the wait for the mark is short.
    m.handle_timeout(now + Duration::from_millis(500) + Duration::from_secs(2));
    assert_eq!(
        drain(&mut m),
        [Output::PlayedOut(AfterPlayout::Fallback {
            cause: EndReason::ServerShutdown
        })]
    );
}

#[test]
fn resumptions_are_counted_by_cause_and_only_when_they_happen() {
    let mut m = live_with_handle(Duration::from_secs(8));
    let t0 = Instant::now();
    assert!(!m.agent_has_spoken());
    // A stall resumes once.
    m.handle_gemini_frame(
        br#"{"serverContent":{"inputTranscription":{"text":"hello?"}}}"#,
        t0,
    );
    m.handle_timeout(t0 + Duration::from_secs(8));
    m.handle_gemini_ready(t0 + Duration::from_secs(9));
    // The model answers; then a lost connection resumes, then a goAway does.
    m.handle_gemini_frame(&model_audio(480), t0 + Duration::from_secs(10));
    assert!(m.agent_has_spoken());
    m.handle_gemini_frame(br#"{"serverContent":{"turnComplete":true}}"#, t0);
    m.handle_gemini_closed(1006, "reset".into(), t0 + Duration::from_secs(11));
    m.handle_gemini_ready(t0 + Duration::from_secs(12));
    m.handle_gemini_frame(br#"{"goAway":{"timeLeft":"6s"}}"#, t0);
    // Not live while reconnecting: a second close is not a second resumption.
    m.handle_gemini_closed(1006, "reset".into(), t0 + Duration::from_secs(13));
    drain(&mut m);
    assert_eq!(
        m.resumptions(),
        Resumptions {
            go_away: 1,
            connection_lost: 1,
            stalled: 1
        }
    );
}
