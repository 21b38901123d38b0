//! Conversation behaviour on a phone line, end to end against the fake Gemini and fake
//! phones of both providers: turn-detection and expressive options in the session setup,
//! keypad digits in and out, and the silent-line nudge and hang-up.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, GeminiSession, schema};
use support::phone::Provider;
use support::world::World;
use support::{Caller, PROVIDERS};

const WAIT: Duration = Duration::from_secs(5);

impl World {
    async fn start(extra: &[(&str, &str)]) -> World {
        World::with(Behaviour::Normal, extra).await
    }

    async fn start_with_url(extra: &[(&str, &str)], url: impl Fn(&FakeGemini) -> String) -> World {
        World::with_url(Behaviour::Normal, extra, url).await
    }

    /// An inbound call on `provider`, its Gemini session, and the greeting cue read.
    async fn call(&mut self, provider: Provider, id: &str) -> (Caller, GeminiSession) {
        let (caller, session, _) = self.recorded_call(provider, id).await;
        (caller, session)
    }

    /// Like [`World::call`], with the id of the call's record.
    async fn recorded_call(
        &mut self,
        provider: Provider,
        id: &str,
    ) -> (Caller, GeminiSession, String) {
        let (from, to) = match provider {
            Provider::Twilio => ("+15550001111", "+15550009999"),
            Provider::Plivo => ("15550001111", "15550008888"),
        };
        let params = self
            .server
            .answer(provider, id, &[("From", from), ("To", to)])
            .await;
        let record = support::record_param(&params);
        let caller = Caller::start_with(&self.server, provider, id, &params).await;
        let mut session = self.gemini.next_session(WAIT).await;
        let greeting = next_message(&mut session).await;
        assert!(is_text_turn(&greeting), "greeting cue first: {greeting}");
        (caller, session, record)
    }

    /// The call record, once `done` holds for it (or as it is after [`WAIT`]).
    async fn record_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let record: Value = self.server.record(id).await;
            if done(&record) || tokio::time::Instant::now() >= deadline {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The record's transcript as (who, text) pairs.
fn lines(record: &Value) -> Vec<(&str, &str)> {
    record["transcript"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            (
                line["who"].as_str().unwrap_or_default(),
                line["text"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// Presses `keys` on the caller's phone, as the provider reports them.
async fn press(caller: &mut Caller, keys: &str) {
    for key in keys.chars() {
        let sent = match caller {
            Caller::Twilio(c) => c.send_dtmf(key).await,
            Caller::Plivo(c) => c.send_dtmf(key).await,
        };
        assert!(sent, "keypress {key} sent");
    }
}

/// The next typed turn from the bridge, skipping audio.
async fn next_text_turn(session: &mut GeminiSession, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = session.recv(left).await?;
        if let Some(text) = turn_text(&msg) {
            return Some(text.to_owned());
        }
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

// ----- keypad in ------------------------------------------------------------------------------

#[tokio::test]
async fn keypad_digits_reach_the_model_as_text_on_both_providers() {
    let mut world = World::start(&[]).await;
    for provider in PROVIDERS {
        let (mut caller, mut session, record) = world
            .recorded_call(provider, &format!("keys-{provider:?}"))
            .await;
        press(&mut caller, "42#").await;
        assert_eq!(
            next_text_turn(&mut session, WAIT).await.as_deref(),
            Some("The caller pressed 4 2 #"),
            "{provider:?}: `#` ends the group at once"
        );
        // Without `#`, the group ends after a pause of about 1.5 s.
        let pressed = tokio::time::Instant::now();
        press(&mut caller, "7*").await;
        assert_eq!(
            next_text_turn(&mut session, WAIT).await.as_deref(),
            Some("The caller pressed 7 *")
        );
        let waited = pressed.elapsed();
        assert!(
            waited >= Duration::from_millis(1_400) && waited < Duration::from_millis(2_500),
            "{provider:?}: the pause-ended group came after {waited:?}"
        );
        caller.hang_up().await;
        let record = world
            .record_until(&record, |r| {
                r["transcript"].as_array().is_some_and(|t| t.len() == 2)
            })
            .await;
        assert_eq!(
            lines(&record),
            [("caller", "[pressed 4 2 #]"), ("caller", "[pressed 7 *]")],
            "{provider:?}: each group is a caller line"
        );
    }
}

#[tokio::test]
async fn a_2_5_model_gets_the_digits_as_client_content() {
    let mut world = World::start(&[("GEMINI_MODEL", "gemini-2.5-flash-native-audio-latest")]).await;
    let (mut caller, mut session) = world.call(Provider::Plivo, "old-model").await;
    press(&mut caller, "9#").await;
    let msg = next_message(&mut session).await;
    assert_eq!(
        msg,
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "The caller pressed 9 #"}]}], "turnComplete": true}})
    );
}

#[tokio::test]
async fn dtmf_off_keeps_digits_from_the_model() {
    let mut world = World::start(&[("DTMF", "off")]).await;
    let (mut caller, mut session) = world.call(Provider::Twilio, "CAoff").await;
    press(&mut caller, "1#").await;
    assert_eq!(
        next_text_turn(&mut session, Duration::from_millis(2_000)).await,
        None
    );
}

// ----- silence --------------------------------------------------------------------------------

/// Short limits so the whole sequence takes a few seconds.
const IDLE: [(&str, &str); 2] = [("IDLE_NUDGE_SECONDS", "1"), ("IDLE_HANGUP_SECONDS", "2")];

#[tokio::test]
async fn a_silent_caller_is_nudged_then_said_goodbye_to_and_hung_up_on_both_providers() {
    let mut world = World::start(&IDLE).await;
    for (n, provider) in PROVIDERS.into_iter().enumerate() {
        // The REST hang-up checks the id's shape, as the providers do.
        let call_id = match provider {
            Provider::Twilio => support::rest::fake_call_sid(n as u32),
            Provider::Plivo => support::rest::fake_uuid(n as u32),
        };
        let (mut caller, mut session, record) = world.recorded_call(provider, &call_id).await;
        let live = tokio::time::Instant::now();
        let earlier_requests = world.rest.requests().len();

        let nudge = next_text_turn(&mut session, WAIT).await.expect("a nudge");
        let nudged_after = live.elapsed();
        assert!(nudge.contains("still there"), "{nudge}");
        assert!(
            nudged_after >= Duration::from_millis(900)
                && nudged_after < Duration::from_millis(1_500),
            "{provider:?}: nudged after {nudged_after:?}, IDLE_NUDGE_SECONDS=1"
        );
        // The model asks; the caller still says nothing.
        session.send_audio(&support::phone::pcm_tone_24k(440.0, 300, 8_000));
        session.send_turn_complete();

        let goodbye = next_text_turn(&mut session, WAIT)
            .await
            .expect("a goodbye request");
        let asked_after = live.elapsed();
        assert!(goodbye.contains("goodbye"), "{goodbye}");
        assert!(
            asked_after >= Duration::from_millis(1_900)
                && asked_after < Duration::from_millis(2_500),
            "{provider:?}: goodbye asked after {asked_after:?}, IDLE_HANGUP_SECONDS=2 (the nudge's answer does not postpone it)"
        );
        assert_eq!(
            world.rest.requests().len(),
            earlier_requests,
            "no hang-up before the goodbye"
        );
        session.send_audio(&support::phone::pcm_tone_24k(440.0, 300, 8_000));
        session.send_turn_complete();
        caller
            .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
            .await
            .expect("the goodbye is followed by the playout mark");
        assert!(caller.ack_mark("playout").await);

        let requests = world.rest.wait_requests(earlier_requests + 1, WAIT).await;
        let hang_up = &requests[earlier_requests..];
        assert_eq!(hang_up.len(), 1, "{provider:?}: one REST hang-up");
        assert!(hang_up[0].path.contains(&call_id), "{:?}", hang_up[0].path);
        let record = world
            .record_until(&record, |r| r["end_reason"].is_string())
            .await;
        assert!(
            record["end_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("idle")),
            "{record}"
        );
    }
}

#[tokio::test]
async fn a_caller_who_speaks_is_not_nudged() {
    let mut world = World::start(&IDLE).await;
    let (mut caller, mut session) = world.call(Provider::Twilio, "CAtalker").await;
    // 1.6 s of speech in real time: longer than IDLE_NUDGE_SECONDS.
    let speech = support::phone::mulaw_tone(300.0, 1_600);
    let started = tokio::time::Instant::now();
    if let Caller::Twilio(c) = &mut caller {
        assert!(c.send_media_realtime(&speech).await);
    }
    let nudge = next_text_turn(&mut session, WAIT)
        .await
        .expect("a nudge once quiet");
    let quiet_for = started
        .elapsed()
        .saturating_sub(Duration::from_millis(1_600));
    assert!(
        quiet_for >= Duration::from_millis(800),
        "nudged only {quiet_for:?} after the caller stopped talking"
    );
    assert!(nudge.contains("still there"));
}

// ----- keypad out -----------------------------------------------------------------------------

/// Q.23 row and column frequencies and the keypad they span.
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLUMNS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Goertzel power of `freq` in 8 kHz `pcm`.
fn goertzel(pcm: &[i16], freq: f64) -> f64 {
    let coeff = 2.0 * (std::f64::consts::TAU * freq / 8_000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The key sounding in one 20 ms frame, if any: one row and one column tone clearly above
/// the others of their group (by 10 dB) and above the noise floor.
fn frame_key(pcm: &[i16]) -> Option<char> {
    let strongest = |freqs: &[f64; 4]| {
        let mut powers: Vec<(usize, f64)> = freqs
            .iter()
            .map(|&f| goertzel(pcm, f))
            .enumerate()
            .collect();
        powers.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (index, best) = powers[0];
        (best > 1e11 && best > 10.0 * powers[1].1).then_some(index)
    };
    Some(KEYPAD[strongest(&ROWS)?][strongest(&COLUMNS)?])
}

/// Keys decoded from μ-law the phone received, with each tone's and each gap's length in
/// 20 ms frames.
fn decode_keys(mulaw: &[u8]) -> (String, Vec<usize>, Vec<usize>) {
    let pcm = support::phone::mulaw_decode(mulaw);
    let frames: Vec<Option<char>> = pcm.chunks_exact(160).map(frame_key).collect();
    let (mut keys, mut tones, mut gaps) = (String::new(), Vec::new(), Vec::new());
    let mut run: Option<(Option<char>, usize)> = None;
    for frame in frames.into_iter().chain([None, Some('!')]) {
        match &mut run {
            Some((key, len)) if *key == frame => *len += 1,
            _ => {
                if let Some((key, len)) = run.take() {
                    match key {
                        Some(k) => {
                            keys.push(k);
                            tones.push(len);
                        }
                        None if !keys.is_empty() => gaps.push(len),
                        None => {}
                    }
                }
                run = Some((frame, 1));
            }
        }
    }
    (keys, tones, gaps)
}

#[tokio::test]
async fn send_dtmf_plays_keypad_tones_a_receiver_decodes_on_both_providers() {
    let mut world = World::start(&[("BUILTIN_TOOLS", "end_call,send_dtmf")]).await;
    for provider in PROVIDERS {
        let (mut caller, mut session) = world.call(provider, &format!("menu-{provider:?}")).await;
        let declared = session.setup()["setup"]["tools"][0]["functionDeclarations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "send_dtmf");
        assert!(declared, "send_dtmf is declared (and the fake accepted it)");

        session.send_tool_call("fc-1", "send_dtmf", json!({"digits": "1 2#9*0D"}));
        let response = next_message(&mut session).await;
        let answer = &response["toolResponse"]["functionResponses"][0];
        assert_eq!(answer["id"], "fc-1");
        assert!(answer["response"]["result"].as_str().is_some(), "{answer}");
        // 7 keys of 100 ms tone and 100 ms silence: 70 frames.
        let heard = caller.recv_audio(70, WAIT).await;
        let (keys, tones, gaps) = decode_keys(&heard.audio());
        assert_eq!(keys, "12#9*0D", "{provider:?}: {}", heard.summary());
        assert!(
            tones.iter().all(|&n| n >= 4),
            "tones of at least 70 ms: {tones:?}"
        );
        assert!(
            gaps.iter().all(|&n| n >= 4),
            "gaps of at least 70 ms: {gaps:?}"
        );

        session.send_tool_call("fc-2", "send_dtmf", json!({"digits": "12x"}));
        let response = next_message(&mut session).await;
        let error = response["toolResponse"]["functionResponses"][0]["response"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains("`x` is not a keypad key"), "{error}");
        let after = caller.collect_for(Duration::from_millis(300)).await;
        assert_eq!(after.media_count(), 0, "refused keys play nothing");
    }
}
